package dbsync

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestJSONValueArrayLowerBound: an array whose lower bound is not 1 (pgtype.Array[any])
// renders as PostgreSQL's text of the array. It was encoded by pgx alone, which cannot
// encode the Go values dbsync decodes some element types to (ranges, UnknownValue):
// JSONValue failed with ErrDecodeValue, where docs/VALUES.md promises values
// encoding/json encodes without error, and JSONLinesWriter with it.
func TestJSONValueArrayLowerBound(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TYPE pair AS (n int, s text)`,
		`CREATE TABLE ab (id int PRIMARY KEY, r int4range[], c pair[], i int4[])`,
		`INSERT INTO ab VALUES (1, '[0:1]={"[1,2)",empty}', '[0:1]={"(1,\"a b\")",NULL}', '[0:1]={7,8}')`)
	var oid uint32
	require.NoError(t, d.DB.QueryRow(`SELECT 'ab'::regclass::oid`).Scan(&oid))
	info, err := newTableCache(d.DB).describeOID(context.Background(), oid)
	require.NoError(t, err)
	for _, col := range []string{"r", "c", "i"} {
		text := queryStrings(t, d.DB, `SELECT `+col+`::text FROM ab`)[0]
		c := info.ColInfo[col]
		v, err := c.DecodeText([]byte(text))
		require.NoError(t, err, col)
		j, err := c.JSONValue(v)
		require.NoError(t, err, col)
		require.Equal(t, text, j, col)
	}
}
