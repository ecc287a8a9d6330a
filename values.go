package dbsync

import (
	"encoding/json"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// NOTE(skeleton): text-only decoding; typed decoding with pgx's pgtype is issue 4.

// DecodeText decodes a value in PostgreSQL's text output format for this column.
func (c *PGColumnInfo) DecodeText(data []byte) (any, error) { return string(data), nil }

// DecodeBytes decodes a value in PostgreSQL's binary format for this column.
func (c *PGColumnInfo) DecodeBytes(data []byte) (any, error) {
	return append([]byte(nil), data...), nil
}

// MessageToMap decodes a tuple of a change into column values, by the column layout
// of reln (the RELATION message in force for the change). Unchanged TOASTed columns
// ('u') are not in values; their names are returned in unchanged.
func (t *PGTableInfo) MessageToMap(reln *pglogrepl.RelationMessage, tuple *pglogrepl.TupleData) (values StringMap, unchanged []string, err error) {
	if tuple == nil {
		return nil, nil, nil
	}
	if len(tuple.Columns) != len(reln.Columns) {
		return nil, nil, fmt.Errorf("%w: tuple has %d columns, relation %s.%s has %d", ErrMalformedMessage, len(tuple.Columns), reln.Namespace, reln.RelationName, len(reln.Columns))
	}
	values = make(StringMap, len(tuple.Columns))
	for i, col := range tuple.Columns {
		name := reln.Columns[i].Name
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			values[name] = nil
		case pglogrepl.TupleDataTypeToast:
			unchanged = append(unchanged, name)
		default:
			values[name] = string(col.Data)
		}
	}
	return values, unchanged, nil
}

// GetRecordID returns a stable ID for the row's primary key values.
func (t *PGTableInfo) GetRecordID(values StringMap) (string, error) {
	key := make([]any, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		v, ok := values[k]
		if !ok {
			return "", fmt.Errorf("dbsync: key column %q missing", k)
		}
		key[i] = v
	}
	b, err := json.Marshal(key)
	return string(b), err
}
