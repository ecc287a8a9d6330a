package dbsync

import (
	"database/sql"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// typedDest returns a pointer to a new variable of v's Go type when ScanTuple has a
// typed path for it (nil otherwise: the column is then only checked through *any).
func typedDest(v any) any {
	switch v.(type) {
	case string:
		return new(string)
	case int64:
		return new(int64)
	case int32:
		return new(int32)
	case int16:
		return new(int16)
	case bool:
		return new(bool)
	case float64:
		return new(float64)
	case float32:
		return new(float32)
	case time.Time:
		return new(time.Time)
	case pgtype.Numeric:
		return new(pgtype.Numeric)
	case json.RawMessage:
		return new(json.RawMessage)
	case []byte:
		return new([]byte)
	case []any:
		return new([]any)
	}
	return nil
}

// requireScanTupleMatches scans a recorded tuple twice — every column into *any, and
// every non-NULL column with a typed path into a variable of its MessageToMap type —
// and requires both to give exactly MessageToMap's values (want).
func requireScanTupleMatches(t *testing.T, info *PGTableInfo, rt recordedTuple, want StringMap, msg string) {
	t.Helper()
	n := len(rt.reln.Columns)
	anys := make([]any, n)
	dest := make([]any, n)
	for i := range dest {
		dest[i] = &anys[i]
	}
	require.NoError(t, info.ScanTuple(rt.reln, rt.tuple, dest...), msg)
	got := StringMap{}
	for i, c := range rt.reln.Columns {
		got[c.Name] = anys[i]
	}
	requireSameRow(t, want, got, msg, " (ScanTuple into *any vs MessageToMap)")

	typed := make([]any, n)
	for i, c := range rt.reln.Columns {
		if v := want[c.Name]; v != nil {
			typed[i] = typedDest(v)
		}
	}
	require.NoError(t, info.ScanTuple(rt.reln, rt.tuple, typed...), msg)
	for i, c := range rt.reln.Columns {
		if typed[i] == nil {
			continue
		}
		g := nanSafe(reflect.ValueOf(typed[i]).Elem().Interface())
		w := nanSafe(want[c.Name])
		if !reflect.DeepEqual(w, g) {
			t.Fatalf("%s: column %s: ScanTuple into %T gave %#v, MessageToMap %#v", msg, c.Name, typed[i], g, w)
		}
	}
}

// TestScanTuple checks what ScanTuple promises beyond "the same values as
// MessageToMap" (TestAllTypesRoundTrip checks that for every type): destinations
// pgtype scans into, NULL handling, skipped columns, unchanged TOAST values and the
// errors.
func TestScanTuple(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE st (id int8 PRIMARY KEY, u uuid, n int4, big text, ts timestamptz, j jsonb)`,
		`ALTER TABLE st ALTER COLUMN big SET STORAGE EXTERNAL`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("st"), WithMessageHandler(rec))
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB,
		`INSERT INTO st VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL, repeat('x', 5000), '2024-03-01 12:34:56.5+02', '{"a": [1, 2]}')`,
		`UPDATE st SET n = 7 WHERE id = 1`) // big is TOASTed and unchanged: not sent
	rec.waitChanges(t, 2)
	ins, upd := rec.tuple(0), rec.tuple(1)
	_, info, err := s.dec.relation(ins.reln.RelationID)
	require.NoError(t, err)

	var id int64
	var u string
	var n *int64
	var big string
	var ts time.Time
	var j json.RawMessage
	require.NoError(t, info.ScanTuple(ins.reln, ins.tuple, &id, &u, &n, &big, &ts, &j))
	require.Equal(t, int64(1), id)
	require.Equal(t, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", u, "uuid into *string through pgtype")
	require.Nil(t, n, "NULL into **int64")
	require.Len(t, big, 5000)
	require.Equal(t, time.Date(2024, 3, 1, 10, 34, 56, 500000000, time.UTC), ts)
	require.Equal(t, json.RawMessage(`{"a": [1, 2]}`), j)

	var nn sql.NullInt64
	require.NoError(t, info.ScanTuple(ins.reln, ins.tuple, nil, nil, &nn, nil, nil, nil), "nil skips columns")
	require.False(t, nn.Valid)
	var plain int64
	err = info.ScanTuple(ins.reln, ins.tuple, nil, nil, &plain, nil, nil, nil)
	require.True(t, errors.Is(err, ErrDecodeValue), "NULL into *int64: %v", err)
	var small int16
	err = info.ScanTuple(ins.reln, ins.tuple, &small, nil, nil, nil, nil, nil)
	require.NoError(t, err, "int8 1 fits an int16 (pgtype's range check)")
	require.Equal(t, int16(1), small)
	err = info.ScanTuple(ins.reln, ins.tuple, &id, &u)
	require.True(t, errors.Is(err, ErrConfig), "%v", err)

	// The update did not send big: its destination keeps what it held, the others
	// are scanned, and the error says so.
	big = "previous"
	err = info.ScanTuple(upd.reln, upd.tuple, &id, &u, &n, &big, &ts, &j)
	require.True(t, errors.Is(err, ErrUnchangedTOAST), "%v", err)
	require.Contains(t, err.Error(), "[big]")
	require.Equal(t, "previous", big)
	require.NotNil(t, n)
	require.Equal(t, int64(7), *n)
	require.Equal(t, pglogrepl.TupleDataTypeToast, upd.tuple.Columns[3].DataType)
	require.NoError(t, info.ScanTuple(upd.reln, upd.tuple, &id, &u, &n, nil, &ts, &j), "no error when the unsent column is skipped")
}
