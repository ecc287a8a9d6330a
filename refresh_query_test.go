package dbsync

import (
	"context"
	"database/sql"
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
