package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pglogrepl"
)

// PGColumnInfo describes one column of a published table, read from pg_attribute.
type PGColumnInfo struct {
	// ColumnName is the column's name (pg_attribute.attname).
	ColumnName string
	// OrdinalPosition is attnum (1-based; dropped columns leave gaps).
	OrdinalPosition int
	// TypeOID is the column type's OID (atttypid).
	TypeOID uint32
	// ColumnType is the SQL type name with modifier, as format_type() gives it
	// (e.g. "numeric(10,2)", "timestamp with time zone").
	ColumnType string
	// TypeModifier is atttypmod (-1 when none).
	TypeModifier int32
	// NotNull is attnotnull.
	NotNull bool
	// KeyPosition is the column's 1-based position in the primary key, 0 if not a key column.
	KeyPosition int
}

// PGTableInfo describes a published table: its schema, columns, primary key and
// replica identity, read from the catalog (pg_class, pg_attribute, pg_index) by
// relation OID, and refreshed whenever a RELATION message shows the table changed.
type PGTableInfo struct {
	// RelationID is the table's OID (pgoutput's relation ID).
	RelationID uint32
	// Namespace and TableName name the table (unquoted).
	Namespace string
	TableName string
	// Columns in attnum order.
	Columns []*PGColumnInfo
	// ColInfo maps column names to Columns entries.
	ColInfo map[string]*PGColumnInfo
	// PrimaryKey lists the primary key's columns in key order (empty: no primary key).
	PrimaryKey []string
	// ReplicaIdentity is pg_class.relreplident: 'd' default, 'n' nothing, 'f' full,
	// 'i' index.
	ReplicaIdentity byte
}

// QualifiedName returns "schema.table" (unquoted), the doctype of Batcher calls.
func (t *PGTableInfo) QualifiedName() string { return t.Namespace + "." + t.TableName }

// tableCache caches PGTableInfo per relation ID. RELATION messages arrive before the
// first change of each table in every poll; the catalog is read only when a relation is
// new or its RELATION message differs from the last one seen.
type tableCache struct {
	db   *sql.DB
	mu   sync.Mutex
	byID map[uint32]*tableEntry
}

type tableEntry struct {
	reln *pglogrepl.RelationMessage
	info *PGTableInfo
}

func newTableCache(db *sql.DB) *tableCache {
	return &tableCache{db: db, byID: map[uint32]*tableEntry{}}
}

// forRelation returns the table info for a RELATION message, reading the catalog when
// the relation is new or changed.
func (c *tableCache) forRelation(ctx context.Context, reln *pglogrepl.RelationMessage) (*PGTableInfo, error) {
	c.mu.Lock()
	e := c.byID[reln.RelationID]
	c.mu.Unlock()
	if e != nil && sameRelation(e.reln, reln) {
		return e.info, nil
	}
	info, err := loadTableInfo(ctx, c.db, reln.RelationID)
	if errors.Is(err, ErrUnknownRelation) {
		// Dropped since the change was written: describe it from the RELATION message.
		info = tableInfoFromRelation(reln)
	} else if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.byID[reln.RelationID] = &tableEntry{reln: reln, info: info}
	c.mu.Unlock()
	return info, nil
}

// get returns the cached info for a relation ID (nil if none).
func (c *tableCache) get(relID uint32) *PGTableInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byID[relID]; e != nil {
		return e.info
	}
	return nil
}

func sameRelation(a, b *pglogrepl.RelationMessage) bool {
	if a.Namespace != b.Namespace || a.RelationName != b.RelationName || a.ReplicaIdentity != b.ReplicaIdentity || len(a.Columns) != len(b.Columns) {
		return false
	}
	for i := range a.Columns {
		x, y := a.Columns[i], b.Columns[i]
		if x.Name != y.Name || x.DataType != y.DataType || x.TypeModifier != y.TypeModifier || x.Flags != y.Flags {
			return false
		}
	}
	return true
}

// loadTableInfo reads a relation's description from the catalog by OID.
func loadTableInfo(ctx context.Context, db *sql.DB, relID uint32) (*PGTableInfo, error) {
	rows, err := db.QueryContext(ctx, sqlText("table_columns.sql"), relID)
	if err != nil {
		return nil, classify(err, fmt.Sprintf("read catalog for relation %d", relID))
	}
	defer rows.Close()
	info := &PGTableInfo{RelationID: relID, ColInfo: map[string]*PGColumnInfo{}}
	var keys []*PGColumnInfo
	for rows.Next() {
		col := &PGColumnInfo{}
		var ident string
		if err := rows.Scan(&info.Namespace, &info.TableName, &ident, &col.ColumnName, &col.OrdinalPosition,
			&col.TypeOID, &col.ColumnType, &col.TypeModifier, &col.NotNull, &col.KeyPosition); err != nil {
			return nil, err
		}
		if ident != "" {
			info.ReplicaIdentity = ident[0]
		}
		info.Columns = append(info.Columns, col)
		info.ColInfo[col.ColumnName] = col
		if col.KeyPosition > 0 {
			keys = append(keys, col)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(info.Columns) == 0 {
		return nil, fmt.Errorf("%w: relation %d not found in the catalog (dropped?)", ErrUnknownRelation, relID)
	}
	info.PrimaryKey = make([]string, len(keys))
	for _, k := range keys {
		info.PrimaryKey[k.KeyPosition-1] = k.ColumnName
	}
	return info, nil
}

// tableInfoFromRelation describes a table from its RELATION message alone (used when the
// table no longer exists in the catalog): the key is the replica identity columns.
func tableInfoFromRelation(reln *pglogrepl.RelationMessage) *PGTableInfo {
	info := &PGTableInfo{RelationID: reln.RelationID, Namespace: reln.Namespace, TableName: reln.RelationName,
		ColInfo: map[string]*PGColumnInfo{}, ReplicaIdentity: reln.ReplicaIdentity}
	for i, c := range reln.Columns {
		col := &PGColumnInfo{ColumnName: c.Name, OrdinalPosition: i + 1, TypeOID: c.DataType, TypeModifier: c.TypeModifier}
		if c.Flags&1 != 0 {
			info.PrimaryKey = append(info.PrimaryKey, c.Name)
			col.KeyPosition = len(info.PrimaryKey)
		}
		info.Columns = append(info.Columns, col)
		info.ColInfo[c.Name] = col
	}
	return info
}
