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
	// REPLICA IDENTITY DEFAULT/INDEX: on delete, and on update only when the key
	// changed) or the whole row ('O', REPLICA IDENTITY FULL). nil when not sent.
	Old StringMap
	// Unchanged lists columns of New whose value was not sent and is not known: the
	// consumer must keep its previous value. Never deliver them as NULL.
	Unchanged []string
	// Key is the record ID (PGTableInfo.GetRecordID) of the row after the change; for a
	// delete, of the deleted row.
	Key string
	// OldKey is the record ID before the change when it differs from Key (a
	// key-changing update); "" otherwise.
	OldKey string
}

// DecodeChange decodes an INSERT, UPDATE or DELETE message into a Change, using reln
// (the RELATION message in force) for the column layout and info for the key.
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
			if c.Old, _, err = info.MessageToMap(reln, m.OldTuple); err != nil {
				return nil, err
			}
		}
	case *pglogrepl.DeleteMessage:
		c.Op = OpDelete
		if c.Old, _, err = info.MessageToMap(reln, m.OldTuple); err != nil {
			return nil, err
		}
		c.Key, err = info.GetRecordID(c.Old)
		return c, err
	default:
		return nil, fmt.Errorf("dbsync: DecodeChange: %T is not a row change", msg)
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
