package handlers

import (
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCacheDeferredKeyMovesPostgres: under a DEFERRABLE primary key (which PostgreSQL
// will not use as replica identity, so the table runs under REPLICA IDENTITY FULL) two
// rows can hold one key inside a transaction. The Cache applied each change by key, so
// a row leaving a key deleted whatever the transaction had just put there: a swap
// (SET id = 3 - id) ended with only ["1"] (the row moved first was lost); a row moved
// onto a held key and on again deleted the row that kept it; deleting the holder
// deleted the row moved (or inserted) onto its key. Each case has its own table, which
// the Cache must equal (SELECT *) after the case's transaction.
func TestCacheDeferredKeyMovesPostgres(t *testing.T) {
	cases := []struct {
		name, sql string            // sql on table t (seeded with the rows 1 a, 2 b, 3 c, 5 e)
		want      map[string]string // id -> v
	}{
		{"swap", `UPDATE t SET id = 3 - id WHERE id IN (1, 2)`,
			map[string]string{"1": "b", "2": "a", "3": "c", "5": "e"}},
		{"move onto a held key and on", `BEGIN; UPDATE t SET id = 5 WHERE id = 3; UPDATE t SET id = 6 WHERE id = 5 AND v = 'c'; COMMIT`,
			map[string]string{"1": "a", "2": "b", "5": "e", "6": "c"}},
		{"delete the holder of a key moved onto", `BEGIN; UPDATE t SET id = 5 WHERE id = 3; DELETE FROM t WHERE id = 5 AND v = 'e'; COMMIT`,
			map[string]string{"1": "a", "2": "b", "5": "c"}},
		{"insert onto a held key, delete the holder", `BEGIN; INSERT INTO t VALUES (5, 'x'); DELETE FROM t WHERE id = 5 AND v = 'e'; COMMIT`,
			map[string]string{"1": "a", "2": "b", "3": "c", "5": "x"}},
		{"inserted and deleted, updated, swapped", `BEGIN; INSERT INTO t VALUES (9, 'i'); DELETE FROM t WHERE id = 9; UPDATE t SET v = 'b2' WHERE id = 2; UPDATE t SET id = 3 - id WHERE id IN (1, 2); COMMIT`,
			map[string]string{"1": "b2", "2": "a", "3": "c", "5": "e"}},
		{"update the holder of a key another row moved onto", `BEGIN; UPDATE t SET id = 5 WHERE id = 3; UPDATE t SET v = 'z' WHERE id = 5 AND v = 'e'; UPDATE t SET id = 3 WHERE v = 'c'; COMMIT`,
			map[string]string{"1": "a", "2": "b", "3": "c", "5": "z"}},
		{"a RELATION message between the moves", `BEGIN; UPDATE t SET id = 5 WHERE id = 3; GRANT SELECT ON t TO PUBLIC; UPDATE t SET id = 6 WHERE id = 5 AND v = 'c'; COMMIT`,
			map[string]string{"1": "a", "2": "b", "5": "e", "6": "c"}},
		{"a three-way rotation", `UPDATE t SET id = CASE id WHEN 1 THEN 2 WHEN 2 THEN 5 WHEN 5 THEN 1 END WHERE id IN (1, 2, 5)`,
			map[string]string{"1": "e", "2": "a", "3": "c", "5": "b"}},
		{"a move away and back", `BEGIN; UPDATE t SET id = 1 WHERE id = 3; UPDATE t SET id = 3 WHERE id = 1 AND v = 'c'; COMMIT`,
			map[string]string{"1": "a", "2": "b", "3": "c", "5": "e"}},
	}
	d := pgtest.NewDatabase(t)
	var tables []string
	for i := range cases {
		name := fmt.Sprintf("sw%d", i)
		tables = append(tables, name)
		q := pq.QuoteIdentifier(name)
		_, err := d.DB.Exec(`CREATE TABLE ` + q + ` (id int, v text);
			ALTER TABLE ` + q + ` ADD PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED;
			ALTER TABLE ` + q + ` REPLICA IDENTITY FULL;
			INSERT INTO ` + q + ` VALUES (1, 'a'), (2, 'b'), (3, 'c'), (5, 'e')`)
		require.NoError(t, err)
	}
	c := NewCache()
	s := newTestSyncer(t, d, c, tables...)
	runErr, cancel := runInBackground(s)
	defer cancel()
	require.NoError(t, s.Snapshot(t.Context(), tables...))

	selectAll := func(table string) map[string]dbsync.StringMap {
		t.Helper()
		rows, err := d.DB.Query(`SELECT id, v FROM ` + pq.QuoteIdentifier(table))
		require.NoError(t, err)
		defer rows.Close()
		out := map[string]dbsync.StringMap{}
		for rows.Next() {
			var id int32
			var v string
			require.NoError(t, rows.Scan(&id, &v))
			key, err := c.TableInfo("public." + table).GetRecordID(dbsync.StringMap{"id": id})
			require.NoError(t, err)
			out[key] = dbsync.StringMap{"id": id, "v": v}
		}
		require.NoError(t, rows.Err())
		return out
	}
	for i, tc := range cases {
		_, err := d.DB.Exec(strings.ReplaceAll(tc.sql, " t ", " "+tables[i]+" "))
		require.NoError(t, err, tc.name)
		waitCaughtUp(t, d, pgtest.Ident(t, "slot"), runErr)
		want := map[string]dbsync.StringMap{}
		for id, v := range tc.want {
			n, err := strconv.ParseInt(id, 10, 32)
			require.NoError(t, err)
			want[`["`+id+`"]`] = dbsync.StringMap{"id": int32(n), "v": v}
		}
		require.Equal(t, want, selectAll(tables[i]), "%s: the table", tc.name)
		got := c.Snapshot()["public."+tables[i]]
		assert.Equal(t, want, got, "%s: the Cache", tc.name)
	}
	cancel()
	require.NoError(t, <-runErr)
}

// TestCacheDeferredKeyMoveNaNArrayPostgres: the row moved onto a held key and on again
// holds an array with a NaN. Told apart from the holder by comparing it with the old
// row PostgreSQL sent, it must equal itself (PostgreSQL's NaN = NaN): with NaN unequal
// inside arrays, the move on took the holder away instead, and the Cache ended with the
// moved row at both keys.
func TestCacheDeferredKeyMoveNaNArrayPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE na (id int, v text, a float8[]);
		ALTER TABLE na ADD PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED;
		ALTER TABLE na REPLICA IDENTITY FULL;
		INSERT INTO na VALUES (3, 'c', '{NaN,1}'), (5, 'e', '{2}')`)
	require.NoError(t, err)
	c := NewCache()
	s := newTestSyncer(t, d, c, "na")
	runErr, cancel := runInBackground(s)
	defer cancel()
	require.NoError(t, s.Snapshot(t.Context(), "na"))
	_, err = d.DB.Exec(`BEGIN; UPDATE na SET id = 5 WHERE id = 3; UPDATE na SET id = 6 WHERE id = 5 AND v = 'c'; COMMIT`)
	require.NoError(t, err)
	waitCaughtUp(t, d, pgtest.Ident(t, "slot"), runErr)
	table := tableLines(t, d.DB, `SELECT id || ' ' || v || ' ' || a::text FROM na ORDER BY id`)
	require.Equal(t, []string{"5 e {2}", "6 c {NaN,1}"}, table)
	// fmt prints maps sorted by key, and NaN as NaN.
	require.Equal(t, `map[["5"]:map[a:[2] id:5 v:e] ["6"]:map[a:[NaN 1] id:6 v:c]]`, fmt.Sprint(c.Snapshot()["public.na"]))
	cancel()
	require.NoError(t, <-runErr)
}

// TestJSONLinesWriterDeferredSwapPostgres pins what the package documentation says a
// consumer applying change lines one by one must expect under a DEFERRABLE key: a swap
// writes an update onto key 2 from 1, then one from 2 (whose "old" is the whole other
// row) onto 1, so deleting old_key 2 at the second line would remove the first row.
func TestJSONLinesWriterDeferredSwapPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE t (id int, v text);
		ALTER TABLE t ADD PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED;
		ALTER TABLE t REPLICA IDENTITY FULL;
		INSERT INTO t VALUES (1, 'a'), (2, 'b')`)
	require.NoError(t, err)
	var out pgtest.Buffer
	s := newTestSyncer(t, d, NewJSONLinesWriter(&out), "t")
	runErr, cancel := runInBackground(s)
	defer cancel()
	waitCaughtUp(t, d, pgtest.Ident(t, "slot"), runErr)
	_, err = d.DB.Exec(`UPDATE t SET id = 3 - id WHERE id IN (1, 2)`)
	require.NoError(t, err)
	waitCaughtUp(t, d, pgtest.Ident(t, "slot"), runErr)
	cancel()
	require.NoError(t, <-runErr)
	lines := strings.Split(strings.TrimSuffix(jsonStampRE.ReplaceAllString(out.String(), "T"), "\n"), "\n")
	require.Equal(t, []string{
		`{"type":"change",T,"op":"update","schema":"public","table":"t","key":{"id":2},"old_key":{"id":1},"new":{"id":2,"v":"a"},"old":{"id":1,"v":"a"}}`,
		`{"type":"change",T,"op":"update","schema":"public","table":"t","key":{"id":1},"old_key":{"id":2},"new":{"id":1,"v":"b"},"old":{"id":2,"v":"b"}}`,
	}, lines)
}

// TestCacheDeferredKeyChangedMidTransactionPostgres: in one transaction a row is
// deleted and two swap places on a DEFERRABLE key, the checks are forced (SET
// CONSTRAINTS ALL IMMEDIATE, without which PostgreSQL refuses the ALTER), the key moves
// to the text column v (deferred again), a row is inserted onto a held v and the holder
// deleted. The old key's ID ["1"] (id 1) is also one of the new key's (v '1'). The
// Cache must end keyed by v, equal to the table. (The Syncer describes the key from
// the catalog as it is when it reads it, so here every change of the transaction
// comes keyed by v.)
func TestCacheDeferredKeyChangedMidTransactionPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE kc (id int, v text NOT NULL);
		ALTER TABLE kc ADD CONSTRAINT kc_pk PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED;
		ALTER TABLE kc REPLICA IDENTITY FULL;
		INSERT INTO kc VALUES (1, 'x'), (2, '1'), (3, 'c')`)
	require.NoError(t, err)
	c := NewCache()
	s := newTestSyncer(t, d, c, "kc")
	runErr, cancel := runInBackground(s)
	defer cancel()
	require.NoError(t, s.Snapshot(t.Context(), "kc"))
	_, err = d.DB.Exec(`BEGIN;
		DELETE FROM kc WHERE id = 1;
		UPDATE kc SET id = 5 - id WHERE id IN (2, 3);
		SET CONSTRAINTS ALL IMMEDIATE;
		ALTER TABLE kc DROP CONSTRAINT kc_pk, ADD PRIMARY KEY (v) DEFERRABLE INITIALLY DEFERRED;
		SET CONSTRAINTS ALL DEFERRED;
		INSERT INTO kc VALUES (7, '1');
		DELETE FROM kc WHERE id = 3;
		COMMIT`)
	require.NoError(t, err)
	waitCaughtUp(t, d, pgtest.Ident(t, "slot"), runErr)
	table := tableLines(t, d.DB, `SELECT id || ' ' || v FROM kc ORDER BY v`)
	require.Equal(t, []string{"7 1", "2 c"}, table)
	require.Equal(t, map[string]dbsync.StringMap{
		`["1"]`: {"id": int32(7), "v": "1"},
		`["c"]`: {"id": int32(2), "v": "c"},
	}, c.Snapshot()["public.kc"])
	cancel()
	require.NoError(t, <-runErr)
}

// tableLines returns the one text column of query's rows, in order.
func tableLines(t *testing.T, db *sql.DB, query string) []string {
	t.Helper()
	rows, err := db.Query(query)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var r string
		require.NoError(t, rows.Scan(&r))
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}
