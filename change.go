package dbsync

import (
	"fmt"

	"github.com/jackc/pglogrepl"
)

// Op is the kind of a row change.
type Op string

// Row change kinds.
const (
	OpInsert Op = "insert"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
)

// Change is one decoded row change: the values a handler or cache needs, typed.
type Change struct {
	Op    Op
	Table *PGTableInfo
	// New holds the new row (insert, update). A column whose value was not sent
	// (an unchanged TOASTed value, tuple kind 'u') is absent from New and listed in
	// Unchanged — unless the old row (REPLICA IDENTITY FULL) supplied it.
	New StringMap
	// Old holds what PostgreSQL sent of the old row: key columns only (kind 'K', under
	// REPLICA IDENTITY DEFAULT/INDEX: on delete, and on update when the key changed or
	// when a key column is stored out of line (TOAST), unchanged) or the whole row ('O',
	// REPLICA IDENTITY FULL). nil when not sent. A non-nil Old on an update does not mean
	// the key changed: OldKey says that.
	Old StringMap
	// Unchanged lists columns of New whose value was not sent and is not known: the
	// consumer must keep its previous value. Never deliver them as NULL.
	Unchanged []string
	// Key is the record ID (PGTableInfo.GetRecordID) of the row after the change; for a
	// delete, of the deleted row. It is "" when the table has neither a primary key nor
	// a replica identity index (a table under REPLICA IDENTITY FULL or an insert-only
	// publication): its rows have no record ID.
	Key string
	// OldKey is the record ID before the change when it differs from Key (a
	// key-changing update); "" otherwise. Under a DEFERRABLE key (the table then runs
	// under REPLICA IDENTITY FULL) two rows can hold one record ID inside a
	// transaction, as in a swap (UPDATE ... SET id = 3 - id): the row leaving OldKey
	// (or Key, for a delete) is then the one whose values equal Old, which need not be
	// the one a store keyed by record ID put there last. handlers.Cache and the Batcher
	// net effect follow rows this way.
	OldKey string
	// Filled lists columns of New that were sent as unchanged TOAST values ('u') and
	// were filled from the old row ('O' tuple, REPLICA IDENTITY FULL) or, for key
	// columns, from the old key ('K' tuple).
	Filled []string
}

// DecodeChange decodes an INSERT, UPDATE or DELETE message into a Change, using reln
// (the RELATION message in force) for the column layout and info for the key.
//
// Unchanged TOASTed values (tuple kind 'u') are never delivered as NULL: they are left
// out of New and listed in Unchanged, except that when PostgreSQL sent the whole old row
// ('O' tuple, REPLICA IDENTITY FULL) they are filled from it (the old value is the
// current one: the update did not touch the column), and unchanged key columns are
// filled from the old key ('K' tuple: PostgreSQL sends one for an UPDATE whose key is
// stored out of line), so the change has its record ID. A 'K' old tuple is reduced to the
// replica identity (key) columns: pgoutput sends the other columns as NULL placeholders,
// which are not the row's values.
//
// A table with neither a primary key nor a replica identity index (PGTableInfo.PrimaryKey
// empty) gives a Change with Key and OldKey "": its changes are decoded all the same,
// but consumers that address rows by key (handlers.Cache, a Batcher) refuse them.
//
// Errors: ErrMalformedMessage, ErrDecodeValue, ErrNoKey (the table has a key, but the
// row lacks a key column or holds NULL in one).
func DecodeChange(msg pglogrepl.Message, reln *pglogrepl.RelationMessage, info *PGTableInfo) (*Change, error) {
	c := &Change{Table: info}
	var err error
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		c.Op = OpInsert
		if c.New, c.Unchanged, err = info.MessageToMap(reln, m.Tuple); err != nil {
			return nil, err
		}
	case *pglogrepl.UpdateMessage:
		c.Op = OpUpdate
		if c.New, c.Unchanged, err = info.MessageToMap(reln, m.NewTuple); err != nil {
			return nil, err
		}
		if m.OldTuple != nil {
			if c.Old, err = oldValues(info, reln, m.OldTupleType, m.OldTuple); err != nil {
				return nil, err
			}
			// A full old row ('O') fills every unchanged TOAST column; an old key ('K')
			// the key columns among them: PostgreSQL logs the old key of an UPDATE
			// whose key is stored out of line even when the key did not change, and
			// sends that key as 'u' in the new tuple.
			c.fillUnchanged()
		}
	case *pglogrepl.DeleteMessage:
		c.Op = OpDelete
		if m.OldTuple == nil {
			return nil, fmt.Errorf("%w: DELETE on %s.%s without old tuple", ErrMalformedMessage, reln.Namespace, reln.RelationName)
		}
		if c.Old, err = oldValues(info, reln, m.OldTupleType, m.OldTuple); err != nil {
			return nil, err
		}
		if !info.hasKey() {
			return c, nil
		}
		c.Key, err = info.GetRecordID(c.Old)
		if err != nil {
			return nil, err
		}
		return c, nil
	default:
		return nil, fmt.Errorf("dbsync: DecodeChange: %T is not a row change", msg)
	}
	if !info.hasKey() {
		return c, nil
	}
	if c.Key, err = info.GetRecordID(c.New); err != nil {
		return nil, err
	}
	if c.Old != nil {
		if oldKey, err := info.GetRecordID(c.Old); err == nil && oldKey != c.Key {
			c.OldKey = oldKey
		}
	}
	return c, nil
}

// oldValues decodes an old tuple; a 'K' tuple keeps only the replica identity columns.
func oldValues(info *PGTableInfo, reln *pglogrepl.RelationMessage, kind uint8, tuple *pglogrepl.TupleData) (StringMap, error) {
	old, unchanged, err := info.MessageToMap(reln, tuple)
	if err != nil {
		return nil, err
	}
	if len(unchanged) > 0 {
		// PostgreSQL flattens TOASTed values into old tuples; 'u' here is malformed.
		return nil, fmt.Errorf("%w: old tuple of %s.%s has unchanged-TOAST columns %v", ErrMalformedMessage, reln.Namespace, reln.RelationName, unchanged)
	}
	if kind == 'K' {
		for i, rc := range reln.Columns {
			if rc.Flags&1 == 0 && i < len(tuple.Columns) && tuple.Columns[i].DataType == pglogrepl.TupleDataTypeNull {
				delete(old, rc.Name)
			}
		}
	}
	return old, nil
}

// fillUnchanged fills New's unchanged TOAST columns from a full old row.
func (c *Change) fillUnchanged() {
	if len(c.Unchanged) == 0 || c.Old == nil {
		return
	}
	var still []string
	for _, name := range c.Unchanged {
		if v, ok := c.Old[name]; ok {
			c.New[name] = v
			c.Filled = append(c.Filled, name)
		} else {
			still = append(still, name)
		}
	}
	c.Unchanged = still
}

// hasKey tells whether rows of t have a record ID: t has a primary key or a replica
// identity index (PrimaryKey).
func (t *PGTableInfo) hasKey() bool { return t != nil && len(t.PrimaryKey) > 0 }
