package dbsync

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// binaryMovedKeyCases are tables for TestSnapshotRereadsMovedRowsBinaryKeys, laid out
// as movedKeyCases: key types whose binary values pgtype cannot print as the text
// the key's input function reads (an array, a range with an infinite bound, a "char"
// byte >= 0x80, which pgtype would hand back as that raw byte: invalid UTF-8).
var binaryMovedKeyCases = []movedKeyCase{
	{
		name: "int_array", ddl: `CREATE TABLE moved (id int[] PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT ARRAY[i, i], i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = ARRAY[0, 0] WHERE id = ARRAY[5, 5]`,
	},
	{
		name: "daterange_infinity", ddl: `CREATE TABLE moved (id daterange PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT daterange(DATE '2020-01-01' + i, 'infinity'), i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = daterange('2019-01-01', 'infinity') WHERE n = 5`,
	},
	{
		name: "char_high", ddl: `CREATE TABLE moved (id "char" PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT CAST(-128 + 10 * i AS "char"), i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = CAST(-127 AS "char") WHERE n = 5`,
	},
	{
		name: "char_backslash", ddl: `CREATE TABLE moved (id "char" PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT CAST(-128 + 10 * i AS "char"), i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = '\' WHERE n = 5`,
	},
	{
		name: "array_lower_bound", ddl: `CREATE TABLE moved (id float8[] PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT ARRAY[i::float8, 'NaN'], i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = '[0:2]={-Infinity,-0,NaN}' WHERE n = 5`,
	},
	{
		name: "date_infinity", ddl: `CREATE TABLE moved (id date PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT DATE '2020-01-01' + i, i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = '-infinity' WHERE n = 5`,
	},
	{
		name: "tstzrange_unbounded", ddl: `CREATE TABLE moved (id tstzrange PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT tstzrange('2020-01-01 00:00+00'::timestamptz + i * interval '1 day', NULL, '(]'), i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = tstzrange(NULL, '2020-01-01 00:00:00.5+05', '()') WHERE n = 5`,
	},
	{
		name: "int4multirange", ddl: `CREATE TABLE moved (id int4multirange PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT int4multirange(int4range(i, i + 1)), i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = '{[-5,-3),[0,1)}' WHERE n = 5`,
	},
	{
		name: "enum_domain_bytea", ddl: `CREATE TYPE color AS ENUM ('red', 'green');
			CREATE DOMAIN code AS text[] CHECK (VALUE <> '{}');
			CREATE TABLE moved (c color, d code, b bytea, n int, body text, PRIMARY KEY (c, d, b))`,
		seed: `INSERT INTO moved SELECT 'green', ARRAY['d' || i], '\xff00'::bytea, i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET c = 'red', d = ARRAY['{"x"}', E'\\\\'], b = '\x80' WHERE n = 5`,
	},
	{
		name: "char_array", ddl: `CREATE TABLE moved (id "char"[] PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT ARRAY[CAST(i AS "char")], i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = ARRAY[CAST(0 AS "char"), CAST(-56 AS "char"), '\', '"'] WHERE n = 5`,
	},
	{
		name: "composite_text_array", ddl: `CREATE TABLE moved (a text, b text[], n int, body text, PRIMARY KEY (a, b))`,
		seed: `INSERT INTO moved SELECT 'k' || i, ARRAY['x,' || i, NULL, 'y"'], i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET a = 'a' WHERE n = 5`,
	},
}

// TestSnapshotRereadsMovedRowsBinaryKeys: TestSnapshotRereadsMovedRows in binary mode
// with keys whose text pgtype cannot print from the decoded value. The moved row
// (its body unchanged, so the update carries no body) must be read again after the
// last chunk: the cache ends equal to the table, body included. Before, the re-read
// was skipped with a warning and Snapshot returned nil with the body lost.
func TestSnapshotRereadsMovedRowsBinaryKeys(t *testing.T) {
	for _, c := range binaryMovedKeyCases {
		c.driver, c.binary = "postgres", true
		t.Run(c.name, func(t *testing.T) {
			d, h, s := movedRowSnapshot(t, c)
			var chunks []SnapshotProgress
			s.SnapshotProgress = func(p SnapshotProgress) { chunks = append(chunks, p) }
			require.NoError(t, s.Snapshot(context.Background(), "moved"))
			catchUp(t, s)
			rows := h.tableRows("public.moved")
			require.Empty(t, mismatches(rows, dbRows(t, d.DB, "moved")))
			require.Len(t, rows, 6)
			for id, r := range rows {
				require.Equal(t, strings.Repeat("b", 3000)+fmt.Sprint(r["n"]), r["body"], id)
			}
			require.Len(t, chunks, 3)
			require.Equal(t, 1, chunks[2].Reread)
			requireSnapshotFinished(t, d, true)
		})
	}
}

// TestSnapshotByteaKeyLibPQ: a Snapshot through lib/pq of a table keyed by bytea.
// Chunk bounds and re-read keys are bound as text parameters and cast to the key
// columns' types; lib/pq sends a string parameter the server describes as bytea as
// that string's bytes (its own bytea encoding), so the bound '\xff02' compared as
// the six bytes 5c 78 66 66 30 32: every chunk after the first started before the
// table's first row, and the Snapshot read the same two rows forever (or, with the
// bytea column after others, read each chunk's last row again).
func TestSnapshotByteaKeyLibPQ(t *testing.T) {
	for _, binary := range []bool{false, true} {
		c := movedKeyCase{name: "bytea", ddl: `CREATE TABLE moved (id bytea PRIMARY KEY, n int, body text)`,
			seed:   `INSERT INTO moved SELECT decode('ff0' || i, 'hex'), i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
			move:   `UPDATE moved SET id = '\x80' WHERE n = 5`,
			driver: "postgres", binary: binary,
			ids:     []string{`["\\xff01"]`, `["\\xff02"]`, `["\\xff03"]`, `["\\xff04"]`, `["\\xff05"]`, `["\\xff06"]`},
			movedTo: `["\\x80"]`,
		}
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			d, h, s := movedRowSnapshot(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, s.Snapshot(ctx, "moved"))
			catchUp(t, s)
			require.Equal(t, movedRowEvents(c), h.eventList())
			requireMovedRowsExact(t, d, h, c)
			requireSnapshotFinished(t, d, true)
		})
	}
}

// TestBinaryRecordIDsMatchRefresh: in binary mode the record ID of a row's change
// equals its refresh row's (read as text), for each key type Refresh and Snapshot
// accept, with edge values: handlers.Cache keys rows on it.
func TestBinaryRecordIDsMatchRefresh(t *testing.T) {
	d := pgtest.NewDatabase(t)
	cases := []struct{ typ, vals string }{
		{"int2", `-32768, 0, 32767`},
		{"int8", `-9223372036854775808, 9223372036854775807`},
		{"numeric", `1.50, -0.000, 'NaN', 1e20, 'Infinity', '-Infinity', 0.000000001`},
		{"text", `'', 'a"b\\', E'\\x', 'é,[]'`},
		{"varchar(5)", `'ab '`},
		{"char(4)", `'ab'`},
		{"uuid", `'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'`},
		{"timestamptz", `'infinity', '-infinity', '2020-01-01 00:00:00.123456+05', '0044-03-15 12:00 BC'`},
		{"timestamp", `'infinity', '2020-01-01 00:00:00.000001'`},
		{"date", `'infinity', '-infinity', '2020-02-29', '4713-01-01 BC'`},
		{"time", `'24:00', '00:00:00.000001'`},
		{"interval", `'1 mon -2 days 00:00:00.5', '-178000000 years'`},
		{"bytea", `'', '\x00ff80', '\x5c78'`},
		{"bool", `true, false`},
		{"float4", `'-0', 'NaN', 'Infinity', 1e-38, 0.1`},
		{"float8", `'-0', 'NaN', '-Infinity', 1e-300, 0.1`},
		{"color2", `'x', 'y z'`},
		{"dom", `7`},
		{"int[]", `'{}', '{1,NULL}', '{{1,2},{3,4}}', '[0:1]={5,6}'`},
		{"text[]", `'{"a,b","\\\\",NULL,"NULL"}'`},
		{"int4range", `'empty', '[1,2)', '(,5)'`},
		{"daterange", `'[2020-01-01,infinity)', '(-infinity,)'`},
		{"tstzrange", `'[2020-01-01 00:00+05,)'`},
		{"numrange", `'[1.50,2.5]'`},
		{"int4multirange", `'{}', '{[1,2),[5,7)}'`},
		{"\"char\"", `'a', '\\', CAST(-128 AS "char"), CAST(-1 AS "char")`},
		{"inet", `'10.0.0.1', '10.0.0.0/8', '::1'`},
		{"macaddr", `'08:00:2b:01:02:03'`},
		{"oid", `4294967295`},
		{"jsonb", `'{"a": [1,2.50]}'`},
	}
	execAll(t, d.DB, `CREATE TYPE color2 AS ENUM ('x', 'y z')`, `CREATE DOMAIN dom AS int CHECK (VALUE > 0)`)
	var tables []string
	for i, c := range cases {
		name := fmt.Sprintf("k%d", i)
		tables = append(tables, name)
		execAll(t, d.DB, `CREATE TABLE `+name+` (v `+c.typ+` PRIMARY KEY, n int)`)
	}
	tables = append(tables, "kc")
	execAll(t, d.DB, `CREATE TABLE kc (a numeric, b timestamptz, c bytea, e int[], f "char", n int, PRIMARY KEY (a, b, c, e, f))`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables(tables...), WithBinary(true))
	want := 0
	for i, c := range cases {
		vals := strings.Split(c.vals, ", ")
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO k%d VALUES (%s, 1)`, i, strings.Join(vals, ", 1), (")))
		want += len(vals)
	}
	execAll(t, d.DB, `INSERT INTO kc VALUES (1.50, '2020-01-01 00:00+05', '\x80', '{1,NULL}', CAST(-2 AS "char"), 1), ('NaN', 'infinity', '', '{}', '\', 1)`)
	want += 2
	waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == want }, "the inserts")
	inserted := map[string]bool{}
	for _, e := range h.eventList() {
		inserted[strings.TrimPrefix(e, "insert ")] = true
	}
	for _, table := range tables {
		_, err := s.RefreshContext(context.Background(), `SELECT * FROM `+table)
		require.NoError(t, err, table)
	}
	var refreshed []string
	for _, e := range h.eventList()[want:] {
		refreshed = append(refreshed, strings.TrimPrefix(e, "refresh "))
	}
	require.Len(t, refreshed, want)
	require.Len(t, inserted, want, "each change its own ID")
	var missing []string
	for _, r := range refreshed {
		if !inserted[r] {
			missing = append(missing, r)
		}
		delete(inserted, r)
	}
	require.Empty(t, missing, "refresh rows whose ID no change had")
	require.Empty(t, inserted, "changes whose ID no refresh row had")
}

// TestSnapshotPlannedChunksBinaryKeys: with WithSnapshotParallel(2) a snapshot plans
// its key ranges ahead (chunkBound prints each bound with ::text, keyCompare casts it
// back). For the key types of binaryMovedKeyCases and a bytea key, through lib/pq, in
// binary mode, every row arrives exactly once and the cache ends equal to the table.
func TestSnapshotPlannedChunksBinaryKeys(t *testing.T) {
	cases := append([]movedKeyCase{{name: "bytea", ddl: `CREATE TABLE moved (id bytea PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT decode('ff0' || i, 'hex'), i, repeat('b', 3000) || i FROM generate_series(1, 6) i`}},
		binaryMovedKeyCases...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, c.ddl, c.seed)
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("moved"), WithBinary(true),
				WithSnapshotChunkSize(2), WithSnapshotParallel(2))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, s.Snapshot(ctx, "moved"))
			catchUp(t, s)
			ev := h.eventList()
			require.Len(t, ev, 6, "each row once: %v", ev)
			require.Empty(t, mismatches(h.tableRows("public.moved"), dbRows(t, d.DB, "moved")))
			require.Greater(t, s.chunkBounds.Load(), uint64(1), "ranges planned with chunkBound")
		})
	}
}

// TestScanTupleStringTextVsBinary: ScanTuple into *string goes through pgtype's scan
// of the tuple's format (docs/VALUES.md): the same text in both modes for uuid,
// numeric and float8; ErrDecodeValue in binary mode for types pgtype scans into no
// string from their binary form; "char" 0xc8 as \310 in text mode, its raw byte in
// binary mode.
func TestScanTupleStringTextVsBinary(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE st (id int PRIMARY KEY, u uuid, num numeric, f float8, c "char", ts timestamptz, dt date, iv interval, b bool, ip inet, by bytea, arr int[], r int4range)`)
	got := map[bool]map[string]string{}
	failed := map[bool][]string{}
	for i, binary := range []bool{false, true} {
		rec := &changeRecorder{}
		s := newTestSyncer(t, d, ForTables("st"), WithMessageHandler(rec), WithBinary(binary), WithReplicationSlot(fmt.Sprintf("scan%d", i)))
		r := runInBackground(s)
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO st VALUES (%d, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1.50, 0.1, CAST(-56 AS "char"), '2024-03-01 12:34:56.5+02', 'infinity', '1 mon', true, '10.0.0.1', '\x00ff', '{1,NULL}', '[1,5)')`, i))
		rec.waitChanges(t, 1)
		ins := rec.tuple(0)
		_, info, err := s.dec.relation(ins.reln.RelationID)
		require.NoError(t, err)
		got[binary] = map[string]string{}
		for j, col := range ins.reln.Columns[1:] {
			dest := make([]any, len(ins.reln.Columns))
			var sv string
			dest[j+1] = &sv
			if err := info.ScanTuple(ins.reln, ins.tuple, dest...); err != nil {
				require.ErrorIs(t, err, ErrDecodeValue)
				failed[binary] = append(failed[binary], col.Name)
				continue
			}
			got[binary][col.Name] = sv
		}
		r.stop(t)
	}
	require.Empty(t, failed[false])
	require.Equal(t, []string{"ts", "dt", "iv", "b", "ip", "by", "arr", "r"}, failed[true])
	for _, c := range []string{"u", "num", "f"} {
		require.Equal(t, got[false][c], got[true][c], c)
	}
	require.Equal(t, `\310`, got[false]["c"])
	require.Equal(t, "\xc8", got[true]["c"])
}
