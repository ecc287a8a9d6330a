package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRefreshQueryOneStatement: a Refresh query is one SELECT. A string of several
// statements is refused before any of them runs: EXPLAIN of it went through lib/pq's
// simple query protocol, which runs every statement of the string, so
// `SELECT * FROM t; DROP TABLE victim` dropped the table (and then failed).
//
// Through pgx's driver too, and a query with placeholders is refused saying so.
func TestRefreshQueryOneStatement(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) { testRefreshQueryOneStatement(t, driver) })
	}
}

func testRefreshQueryOneStatement(t *testing.T, driver string) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, name text)`, `INSERT INTO t VALUES (1, 'a')`,
		`CREATE TABLE victim (id int PRIMARY KEY)`, `INSERT INTO victim VALUES (1)`)
	h := newCacheHandler()
	db, err := sql.Open(driver, d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("t"), WithDB(db))
	ctx := context.Background()
	for _, q := range []string{
		`SELECT * FROM t; DROP TABLE victim`,
		`SELECT 1 AS id; DELETE FROM victim`,
		`SELECT * FROM t; INSERT INTO victim VALUES (2)`,
	} {
		_, qerr := s.RefreshContext(ctx, q)
		var ids []int
		rows, err := d.DB.Query(`SELECT id FROM victim ORDER BY id`)
		require.NoError(t, err, "after %q", q)
		for rows.Next() {
			var id int
			require.NoError(t, rows.Scan(&id))
			ids = append(ids, id)
		}
		require.NoError(t, rows.Err())
		rows.Close()
		require.Equal(t, []int{1}, ids, "after %q", q)
		require.ErrorIs(t, qerr, ErrConfig, q)
		require.Contains(t, qerr.Error(), "one SELECT statement", q)
	}
	require.Empty(t, h.eventList())
	_, err = s.RefreshContext(ctx, `SELECT * FROM t WHERE id = $1`)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "takes no parameters")
	stats, err := s.RefreshContext(ctx, `SELECT * FROM t`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
}

// TestRefreshQueryKeyFromAnotherColumn: the record IDs of a Refresh's rows are the
// values of the result columns named like the table's key columns. A query that
// returns another column of the table under a key column's name (`other AS id`, or a
// view that renames) delivered each row under another row's record ID (or one that
// no row has): a cache fed by the Syncer then held rows the table does not. It is
// refused when the plan shows a plain column of the table there; the key itself,
// cast or not, in any order, is accepted and delivers the table's rows.
func TestRefreshQueryKeyFromAnotherColumn(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, name text, other int)`,
		`INSERT INTO t SELECT g, 'n' || g, 100 + g FROM generate_series(1, 3) g`,
		`CREATE VIEW renamed AS SELECT other AS id, name FROM t`,
		`CREATE TABLE "Odd T" ("Id" int, "K2" text, v int, "Big ""V""" int, PRIMARY KEY ("Id", "K2"))`,
		`INSERT INTO "Odd T" VALUES (1, 'a', 7, 8)`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("t", `"Odd T"`))
	ctx := context.Background()
	for _, c := range []struct{ query, col, key string }{
		{`SELECT other AS id, name FROM t`, "other", "id"},
		{`SELECT id AS other, other AS id FROM t AS x ORDER BY 1`, "other", "id"},
		{`SELECT * FROM renamed`, "other", "id"},
		{`SELECT * FROM (SELECT name AS id FROM t WHERE id > 1) s`, "name", "id"},
		{`SELECT "Id", v::text AS "K2" FROM "Odd T"`, "v", "K2"},
		{`SELECT "Big ""V"""::bigint::int AS "Id", "K2" FROM "Odd T"`, `Big "V"`, "Id"},
	} {
		_, err := s.RefreshContext(ctx, c.query)
		require.ErrorIs(t, err, ErrConfig, c.query)
		require.Contains(t, err.Error(), fmt.Sprintf("returns column %q of", c.col), c.query)
		require.Contains(t, err.Error(), fmt.Sprintf("key column %q", c.key), c.query)
	}
	require.Empty(t, h.eventList())

	for _, q := range []string{
		`SELECT name, id FROM t AS x ORDER BY other`,
		`SELECT id::text AS id, name FROM t`,
		`SELECT t.id, t.name FROM t WHERE t.other > 101`,
	} {
		h.mu.Lock()
		h.rows = map[string]StringMap{}
		h.mu.Unlock()
		_, err := s.RefreshContext(ctx, q)
		require.NoError(t, err, q)
		got := h.tableRows("public.t")
		require.NotEmpty(t, got, q)
		want := dbRows(t, d.DB, "t")
		for k, row := range got {
			require.Contains(t, want, k, q)
			require.Equal(t, want[k]["name"], row["name"], q)
		}
	}
	_, err := s.RefreshContext(ctx, `SELECT v, "Big ""V""", "K2", "Id"::bigint::int AS "Id" FROM "Odd T"`)
	require.NoError(t, err)
	require.Equal(t, dbRows(t, d.DB, `"Odd T"`), h.tableRows(`public.Odd T`))
}

// TestRefreshQueryTrailingSemicolonAndComment: a query as written in psql, ending in
// a semicolon or a line comment, is one statement; it failed with a syntax error at a
// column the caller's query does not have, from the statement that wraps it
// (SELECT ... FROM (<query>) AS q). It works and delivers the table's rows.
func TestRefreshQueryTrailingSemicolonAndComment(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, name text)`,
		`INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 3) g`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("t"))
	for _, q := range []string{
		"SELECT * FROM t;",
		"SELECT * FROM t ; \n",
		"SELECT * FROM t -- every row",
		"SELECT * FROM t WHERE id > 1 -- some;",
		"/* c */ SELECT * FROM t WHERE id > 1 /* ; */ ;;",
	} {
		h.mu.Lock()
		h.rows = map[string]StringMap{}
		h.mu.Unlock()
		stats, err := s.RefreshContext(context.Background(), q)
		require.NoError(t, err, "%q", q)
		want := dbRows(t, d.DB, "t")
		if strings.Contains(q, "id > 1") {
			delete(want, `["1"]`)
		}
		require.Equal(t, len(want), stats.Emitted, "%q", q)
		require.Equal(t, want, h.tableRows("public.t"), "%q", q)
	}
	// A semicolon followed by a comment is not taken off: the query is refused,
	// saying what to write instead.
	_, err := s.RefreshContext(context.Background(), "SELECT * FROM t; -- all")
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "without a semicolon")
}

// TestRefreshQueryThatModifies: a query with a data-modifying CTE is refused before
// it runs, with a message saying a Refresh query only reads. It was refused by the
// statement that wraps the query, whose error ("WITH clause containing a
// data-modifying statement must be at the top level") told the caller to move it.
func TestRefreshQueryThatModifies(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, name text)`,
		`INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 3) g`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("t"))
	want := dbRows(t, d.DB, "t")
	for _, q := range []string{
		`WITH d AS (DELETE FROM t WHERE id = 3 RETURNING *) SELECT * FROM t`,
		`WITH u AS (UPDATE t SET name = 'x' RETURNING *) SELECT * FROM u`,
		`WITH i AS (INSERT INTO t VALUES (4, 'y') RETURNING *) SELECT * FROM t`,
	} {
		_, err := s.RefreshContext(context.Background(), q)
		require.ErrorIs(t, err, ErrConfig, q)
		require.Contains(t, err.Error(), "must only read", q)
		require.Equal(t, want, dbRows(t, d.DB, "t"), q)
	}
	require.Empty(t, h.eventList())
}

// TestRefreshQueryColumnFromAnotherColumn: as for the key, a result column named like
// one of the table's columns is delivered as that column. Another column of the table
// under its name (`other AS name`), or a column of another row of the table (a
// self-join returning one row's key with another row's columns) delivered values the
// table's row does not have, and a cache fed by the Syncer kept them. Both are
// refused; a computed value under a column's name is the caller's (documented).
func TestRefreshQueryColumnFromAnotherColumn(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, name text, other text)`,
		`INSERT INTO t SELECT g, 'n' || g, 'o' || g FROM generate_series(1, 3) g`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("t"))
	ctx := context.Background()
	for _, c := range []struct{ query, want string }{
		{`SELECT id, other AS name FROM t`, `returns column "other" of public.t under the name of its column "name"`},
		{`SELECT id, name AS other, other AS name FROM t`, `returns column "name" of public.t under the name of its column "other"`},
		{`SELECT b.id, a.name FROM t a JOIN t b ON b.id = a.id + 1`, `columns of different rows of public.t`},
	} {
		_, err := s.RefreshContext(ctx, c.query)
		require.ErrorIs(t, err, ErrConfig, c.query)
		require.Contains(t, err.Error(), c.want, c.query)
	}
	require.Empty(t, h.eventList())
	for _, q := range []string{
		`SELECT a.id, a.name FROM t a JOIN t b ON b.id = a.id + 1`,
		`SELECT id, name, other AS extra FROM t`,
	} {
		_, err := s.RefreshContext(ctx, q)
		require.NoError(t, err, q)
	}
	require.Equal(t, StringMap{"id": int32(1), "name": "n1", "extra": "o1"}, h.tableRows("public.t")[`["1"]`])
}

// TestRefreshQueryReadsNoTable: a query whose plan reads no table (a set-returning
// function, or one the planner proved empty) is refused saying so; it was refused
// as reading "0" tables with advice about inheritance and partitions.
func TestRefreshQueryReadsNoTable(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, name text)`, `INSERT INTO t VALUES (1, 'a')`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("t"))
	for _, q := range []string{
		`SELECT * FROM generate_series(1, 3) AS id`,
		`SELECT * FROM t WHERE false`,
		`VALUES (1)`,
	} {
		_, err := s.RefreshContext(context.Background(), q)
		require.ErrorIs(t, err, ErrConfig, q)
		require.Contains(t, err.Error(), "its plan reads none", q)
	}
	require.Empty(t, h.eventList())
}
