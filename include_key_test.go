package dbsync

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// includeKeyTables: tables keyed by an index with INCLUDE columns (covering indexes),
// which are stored in the index but are not part of its key (pg_index.indnkeyatts
// counts the key columns, pg_index.indkey lists them first, then the included ones).
// inc: a primary key (id) INCLUDE (n), n nullable. incri: REPLICA IDENTITY USING
// INDEX of a unique index (code, id) INCLUDE (n), whose key order is not attnum order.
// incdup: a primary key that also INCLUDEs its own key column (indkey "1 1 2").
// incfull: a primary key (id) INCLUDE (n) under REPLICA IDENTITY FULL.
const includeKeyTables = `
CREATE TABLE inc (id int, n int, v text, PRIMARY KEY (id) INCLUDE (n));
CREATE TABLE incri (id int PRIMARY KEY, n int, code text NOT NULL, v text);
CREATE UNIQUE INDEX incri_key ON incri (code, id) INCLUDE (n);
ALTER TABLE incri REPLICA IDENTITY USING INDEX incri_key;
CREATE TABLE incdup (id int, v text, PRIMARY KEY (id) INCLUDE (id, v));
CREATE TABLE incfull (id int, n int, v text, PRIMARY KEY (id) INCLUDE (n));
ALTER TABLE incfull REPLICA IDENTITY FULL`

// TestIncludeColumnsAreNotKey: a key index's INCLUDE columns are not key columns: the
// key is the index's first indnkeyatts columns, in key order, as pgoutput flags them.
func TestIncludeColumnsAreNotKey(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, includeKeyTables)
	require.Equal(t, []string{"inc 1 2 1", "incdup 1 1 2 1", "incfull 1 2 1", "incri 3 1 2 2"},
		pgtest.Strings(t, d.DB, `SELECT c.relname || ' ' || i.indkey::text || ' ' || i.indnkeyatts
			FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
			WHERE c.relname IN ('inc', 'incri', 'incdup', 'incfull') AND (i.indisprimary AND c.relreplident IN ('d', 'f') OR i.indisreplident)
			ORDER BY 1`), "the fixture's indexes")
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithSetup(false))
	require.NoError(t, err)
	defer s.Close()
	ctx := context.Background()

	for _, c := range []struct {
		table string
		key   []string
		pos   map[string]int
	}{
		{"inc", []string{"id"}, map[string]int{"id": 1, "n": 0, "v": 0}},
		{"incri", []string{"code", "id"}, map[string]int{"id": 2, "n": 0, "code": 1, "v": 0}},
		{"incdup", []string{"id"}, map[string]int{"id": 1, "v": 0}},
		{"incfull", []string{"id"}, map[string]int{"id": 1, "n": 0, "v": 0}},
	} {
		info, err := s.TableInfo(ctx, c.table)
		require.NoError(t, err, c.table)
		require.Equal(t, c.key, info.PrimaryKey, c.table)
		pos := map[string]int{}
		for _, col := range info.Columns {
			pos[col.ColumnName] = col.KeyPosition
			require.Equal(t, col.KeyPosition > 0 || c.table == "incfull", col.ReplicaIdentity, "%s.%s", c.table, col.ColumnName)
		}
		require.Equal(t, c.pos, pos, c.table)
	}
}

// TestIncludeColumnsChanges: changes of tables keyed by an index with INCLUDE columns
// come through a running Syncer with record IDs of the key columns only, in key
// order: an INSERT, an UPDATE of the INCLUDE column (PostgreSQL logs no old key for
// it), key-changing UPDATEs (their old-key tuple carries the key columns only) and a
// DELETE (likewise).
func TestIncludeColumnsChanges(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, includeKeyTables)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("inc", "incri", "incdup", "incfull"), WithMessageHandler(rec))
	r := runInBackground(s)
	defer r.stop(t)

	execAll(t, d.DB, `INSERT INTO inc VALUES (1, 10, 'a')`,
		`UPDATE inc SET n = 11 WHERE id = 1`,
		`UPDATE inc SET id = 2 WHERE id = 1`,
		`DELETE FROM inc WHERE id = 2`,
		`INSERT INTO incri VALUES (1, 10, 'a', 'x')`,
		`UPDATE incri SET n = 11 WHERE id = 1`,
		`UPDATE incri SET code = 'b' WHERE id = 1`,
		`UPDATE incri SET id = 2 WHERE id = 1`,
		`DELETE FROM incri WHERE id = 2`,
		`INSERT INTO incdup VALUES (1, 'a')`,
		`UPDATE incdup SET id = 2 WHERE id = 1`,
		`DELETE FROM incdup WHERE id = 2`,
		`INSERT INTO incfull VALUES (1, NULL, 'a')`,
		`UPDATE incfull SET n = 11 WHERE id = 1`,
		`UPDATE incfull SET id = 2 WHERE id = 1`,
		`DELETE FROM incfull WHERE id = 2`)
	waitForChanges(t, rec, r, 16)
	ch, events := rec.snapshot()
	type got struct {
		Op          Op
		Table       string
		Key, OldKey string
		Old         StringMap
	}
	var gots []got
	for _, c := range ch {
		gots = append(gots, got{c.Op, c.Table.TableName, c.Key, c.OldKey, c.Old})
	}
	require.Equal(t, []got{
		{OpInsert, "inc", `["1"]`, "", nil},
		{OpUpdate, "inc", `["1"]`, "", nil},
		{OpUpdate, "inc", `["2"]`, `["1"]`, StringMap{"id": int32(1)}},
		{OpDelete, "inc", `["2"]`, "", StringMap{"id": int32(2)}},
		{OpInsert, "incri", `["a","1"]`, "", nil},
		{OpUpdate, "incri", `["a","1"]`, "", nil},
		{OpUpdate, "incri", `["b","1"]`, `["a","1"]`, StringMap{"code": "a", "id": int32(1)}},
		{OpUpdate, "incri", `["b","2"]`, `["b","1"]`, StringMap{"code": "b", "id": int32(1)}},
		{OpDelete, "incri", `["b","2"]`, "", StringMap{"code": "b", "id": int32(2)}},
		{OpInsert, "incdup", `["1"]`, "", nil},
		{OpUpdate, "incdup", `["2"]`, `["1"]`, StringMap{"id": int32(1)}},
		{OpDelete, "incdup", `["2"]`, "", StringMap{"id": int32(2)}},
		// REPLICA IDENTITY FULL: old tuples are whole rows, keyed by id alone.
		{OpInsert, "incfull", `["1"]`, "", nil},
		{OpUpdate, "incfull", `["1"]`, "", StringMap{"id": int32(1), "n": nil, "v": "a"}},
		{OpUpdate, "incfull", `["2"]`, `["1"]`, StringMap{"id": int32(1), "n": int32(11), "v": "a"}},
		{OpDelete, "incfull", `["2"]`, "", StringMap{"id": int32(2), "n": int32(11), "v": "a"}},
	}, gots)
	// Each poll sends a table's RELATION message again before its first change there:
	// how often depends on how the changes fall into polls, so each shape counts once.
	var relations, rest []string
	for _, e := range events {
		if !strings.HasPrefix(e, "RELATION ") {
			rest = append(rest, e)
		} else if !slices.Contains(relations, e) {
			relations = append(relations, e)
		}
	}
	require.Equal(t, []string{
		`RELATION public.inc (id:integer,n:integer,v:text) key=[id]`,
		`RELATION public.incri (id:integer,n:integer,code:text,v:text) key=[code id]`,
		`RELATION public.incdup (id:integer,v:text) key=[id]`,
		`RELATION public.incfull (id:integer,n:integer,v:text) key=[id]`,
	}, relations)
	require.Equal(t, []string{
		`INSERT inc ["1"]`, `UPDATE inc ["1"]`, `UPDATE inc ["2"]`, `DELETE inc ["2"]`,
		`INSERT incri ["a","1"]`, `UPDATE incri ["a","1"]`, `UPDATE incri ["b","1"]`, `UPDATE incri ["b","2"]`, `DELETE incri ["b","2"]`,
		`INSERT incdup ["1"]`, `UPDATE incdup ["2"]`, `DELETE incdup ["2"]`,
		`INSERT incfull ["1"]`, `UPDATE incfull ["1"]`, `UPDATE incfull ["2"]`, `DELETE incfull ["2"]`,
	}, rest)
	// The description changes are decoded with agrees with the catalog's.
	for _, c := range []*Change{ch[0], ch[4], ch[9], ch[12]} {
		info, err := s.TableInfo(context.Background(), c.Table.TableName)
		require.NoError(t, err)
		require.Equal(t, c.Table.PrimaryKey, info.PrimaryKey, c.Table.TableName)
	}
}

// waitForChanges waits for n changes, failing at once if the handler or Run fails.
func waitForChanges(t *testing.T, rec *changeRecorder, r *running, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec.mu.Lock()
		got, err := len(rec.changes), rec.err
		rec.mu.Unlock()
		require.NoError(t, err)
		if got >= n {
			return
		}
		select {
		case err := <-r.done:
			r.done <- err // for r.stop
			t.Fatalf("Run returned after %d of %d changes: %v", got, n, err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %d of %d changes", got, n)
		}
	}
}

// TestIncludeColumnsRefreshSnapshot: Snapshot (chunks of 2, keyset by the key
// columns) and Refresh of tables keyed by an index with INCLUDE columns, some NULL,
// deliver every row once, keyed as their changes are, so a change after the snapshot
// updates or removes the very row the snapshot delivered.
func TestIncludeColumnsRefreshSnapshot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, includeKeyTables,
		`INSERT INTO inc VALUES (1, 10, 'a'), (2, NULL, 'b'), (3, 30, 'c'), (4, NULL, 'd'), (5, 50, 'e')`,
		`INSERT INTO incri VALUES (1, 10, 'e', 'x'), (2, NULL, 'd', 'y'), (3, 30, 'c', 'z'), (4, NULL, 'b', 'w'), (5, 50, 'a', 'v')`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("inc", "incri"),
		WithSnapshotChunkSize(2), WithSnapshotChunksInFlight(4), WithSnapshotParallel(1))
	ctx := context.Background()

	require.NoError(t, s.Snapshot(ctx, "inc", "incri"))
	require.Equal(t, []string{
		`refresh public.inc ["1"]`, `refresh public.inc ["2"]`, `refresh public.inc ["3"]`, `refresh public.inc ["4"]`, `refresh public.inc ["5"]`,
		`refresh public.incri ["a","5"]`, `refresh public.incri ["b","4"]`, `refresh public.incri ["c","3"]`, `refresh public.incri ["d","2"]`, `refresh public.incri ["e","1"]`,
	}, h.eventList())
	require.Equal(t, map[string]StringMap{
		`["1"]`: {"id": int32(1), "n": int32(10), "v": "a"},
		`["2"]`: {"id": int32(2), "n": nil, "v": "b"},
		`["3"]`: {"id": int32(3), "n": int32(30), "v": "c"},
		`["4"]`: {"id": int32(4), "n": nil, "v": "d"},
		`["5"]`: {"id": int32(5), "n": int32(50), "v": "e"},
	}, h.tableRows("public.inc"))
	require.Equal(t, map[string]StringMap{
		`["a","5"]`: {"id": int32(5), "n": int32(50), "code": "a", "v": "v"},
		`["b","4"]`: {"id": int32(4), "n": nil, "code": "b", "v": "w"},
		`["c","3"]`: {"id": int32(3), "n": int32(30), "code": "c", "v": "z"},
		`["d","2"]`: {"id": int32(2), "n": nil, "code": "d", "v": "y"},
		`["e","1"]`: {"id": int32(1), "n": int32(10), "code": "e", "v": "x"},
	}, h.tableRows("public.incri"))

	// Changes land on the rows the snapshot delivered.
	execAll(t, d.DB, `UPDATE inc SET n = 20 WHERE id = 2`, `DELETE FROM inc WHERE id = 4`,
		`UPDATE incri SET n = 20 WHERE id = 2`, `UPDATE incri SET code = 'f' WHERE id = 1`, `DELETE FROM incri WHERE id = 4`)
	catchUp(t, s)
	require.Equal(t, []string{`update public.inc ["2"]`, `delete public.inc ["4"]`,
		`update public.incri ["d","2"]`, `update public.incri ["f","1"]`, `delete public.incri ["b","4"]`}, h.eventList()[10:])
	require.Equal(t, map[string]StringMap{
		`["1"]`: {"id": int32(1), "n": int32(10), "v": "a"},
		`["2"]`: {"id": int32(2), "n": int32(20), "v": "b"},
		`["3"]`: {"id": int32(3), "n": int32(30), "v": "c"},
		`["5"]`: {"id": int32(5), "n": int32(50), "v": "e"},
	}, h.tableRows("public.inc"))
	require.Equal(t, map[string]StringMap{
		`["a","5"]`: {"id": int32(5), "n": int32(50), "code": "a", "v": "v"},
		`["c","3"]`: {"id": int32(3), "n": int32(30), "code": "c", "v": "z"},
		`["d","2"]`: {"id": int32(2), "n": int32(20), "code": "d", "v": "y"},
		`["f","1"]`: {"id": int32(1), "n": int32(10), "code": "f", "v": "x"},
	}, h.tableRows("public.incri"))

	// Refresh: every selected row, in the query's order, keyed the same way.
	stats, err := s.RefreshContext(ctx, `SELECT * FROM inc ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 4, Emitted: 4}, stats)
	stats, err = s.RefreshContext(ctx, `SELECT * FROM incri ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 4, Emitted: 4}, stats)
	require.Equal(t, []string{
		`refresh public.inc ["1"]`, `refresh public.inc ["2"]`, `refresh public.inc ["3"]`, `refresh public.inc ["5"]`,
		`refresh public.incri ["f","1"]`, `refresh public.incri ["d","2"]`, `refresh public.incri ["c","3"]`, `refresh public.incri ["a","5"]`,
	}, h.eventList()[15:])
	require.Len(t, h.tableRows("public.inc"), 4)
	require.Len(t, h.tableRows("public.incri"), 4)
	require.Empty(t, mismatches(h.tableRows("public.inc"), dbRows(t, d.DB, "inc")))
	require.Empty(t, mismatches(h.tableRows("public.incri"), dbRows(t, d.DB, "incri")))
}

// TestRepeatedKeyColumn: a unique index may list a column twice (PostgreSQL accepts
// (code, code, id)); as a replica identity index its key is (code, id), each column
// once, in the order of first appearance (the catalog query used to fail with 21000,
// "more than one row returned by a subquery", and would have left a gap). Changes
// through a running Syncer carry record IDs of that key.
func TestRepeatedKeyColumn(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rep (id int PRIMARY KEY, code text NOT NULL, v text)`,
		`CREATE UNIQUE INDEX rep_key ON rep (code, code, id)`,
		`ALTER TABLE rep REPLICA IDENTITY USING INDEX rep_key`)
	require.Equal(t, []string{"2 2 1"}, pgtest.Strings(t, d.DB, `SELECT indkey::text FROM pg_index WHERE indexrelid = 'rep_key'::regclass`), "the fixture's index")
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("rep"), WithMessageHandler(rec))
	info, err := s.TableInfo(context.Background(), "rep")
	require.NoError(t, err)
	require.Equal(t, []string{"code", "id"}, info.PrimaryKey)
	require.Equal(t, 1, info.ColInfo["code"].KeyPosition)
	require.Equal(t, 2, info.ColInfo["id"].KeyPosition)
	require.Equal(t, 0, info.ColInfo["v"].KeyPosition)
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB, `INSERT INTO rep VALUES (1, 'a', 'x')`, `UPDATE rep SET code = 'b' WHERE id = 1`, `DELETE FROM rep WHERE id = 1`)
	waitForChanges(t, rec, r, 3)
	ch, _ := rec.snapshot()
	var keys []string
	for _, c := range ch {
		keys = append(keys, string(c.Op)+" "+c.Key+" "+c.OldKey)
	}
	require.Equal(t, []string{`insert ["a","1"] `, `update ["b","1"] ["a","1"]`, `delete ["b","1"] `}, keys)
}
