package dbsync

import (
	"context"
	"database/sql"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestSelectionStatementTimeout: a selection's SELECT that the server cancels under
// a statement_timeout of the database (as a role's or the connection string's would)
// after its low watermark was written is no fault of the query: it is abandoned
// (ErrRefreshAbandoned, the server's 57014 in the chain), not ErrConfig, which told
// the caller to fix a query that is fine and may succeed when run again. Nothing of it
// is delivered and no watermark row is left; the Syncer goes on.
func TestSelectionStatementTimeout(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`,
				`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 3) g`,
				`ALTER DATABASE `+pq.QuoteIdentifier(d.Name)+` SET statement_timeout = '1s'`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("items"))
			// The sleep runs when the SELECT fetches its first row: not while the query
			// is planned (EXPLAIN) or described (LIMIT 0), only in the selection itself.
			_, err = s.RefreshContext(context.Background(), `SELECT id, v FROM items WHERE id > (SELECT 0 FROM pg_sleep(3))`)
			require.Error(t, err)
			require.ErrorIs(t, err, ErrRefreshAbandoned, "%v", err)
			require.NotErrorIs(t, err, ErrConfig, "%v", err)
			code, _, ok := serverError(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, "57014", code, "%v", err)
			require.Contains(t, err.Error(), "statement_timeout")
			require.Empty(t, h.eventList())
			var wm int
			require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM dbsync_ctrl.dbsync_wmtable`).Scan(&wm))
			require.Zero(t, wm, "watermark rows left behind")

			// A selection within the timeout still works.
			stats, err := s.RefreshContext(context.Background(), `SELECT id, v FROM items`)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 3, Emitted: 3}, stats)
			require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))
		})
	}
}

// TestRefreshPlanningCutShort: a Refresh whose query cannot even be planned in time
// (EXPLAIN waits for a lock a long ALTER TABLE holds, and the database's
// statement_timeout cancels it) is no query error either: ErrRefreshAbandoned with
// the server's 57014, not ErrConfig ("bad query"); nothing is written, and the same
// call succeeds once the lock is gone.
func TestRefreshPlanningCutShort(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`, `INSERT INTO items VALUES (1, 'a')`,
		`ALTER DATABASE `+pq.QuoteIdentifier(d.Name)+` SET statement_timeout = '1s'`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"))
	lock, err := d.DB.Begin()
	require.NoError(t, err)
	_, err = lock.Exec(`LOCK TABLE items IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	_, err = s.RefreshContext(context.Background(), `SELECT id, v FROM items`)
	require.NoError(t, lock.Rollback())
	require.ErrorIs(t, err, ErrRefreshAbandoned, "%v", err)
	require.NotErrorIs(t, err, ErrConfig, "%v", err)
	code, _, ok := serverError(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, "57014", code, "%v", err)
	require.Empty(t, h.eventList())
	require.Equal(t, []string{"0"}, queryStrings(t, d.DB, `SELECT count(*)::text FROM dbsync_ctrl.dbsync_wmtable`))

	stats, err := s.RefreshContext(context.Background(), `SELECT id, v FROM items`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
}

// TestSnapshotChunkLockCutShort: a Snapshot chunk whose selection waits for a lock on
// the table (an ALTER TABLE holds it) until the database's statement_timeout cancels
// the wait is abandoned like a SELECT cut short: ErrRefreshAbandoned with the
// server's 57014, and the next Snapshot resumes after the last delivered chunk.
func TestSnapshotChunkLockCutShort(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`,
		`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 4) g`,
		`ALTER DATABASE `+pq.QuoteIdentifier(d.Name)+` SET statement_timeout = '1s'`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"),
		WithSnapshotChunkSize(2), WithSnapshotParallel(1), WithSnapshotChunksInFlight(1))
	var lock *sql.Tx
	s.win.afterSelect = func() {
		if lock == nil { // after chunk 1's SELECT: chunk 2's selection waits for this lock
			var err error
			lock, err = d.DB.Begin()
			require.NoError(t, err)
			_, err = lock.Exec(`LOCK TABLE items IN ACCESS EXCLUSIVE MODE`)
			require.NoError(t, err)
		}
	}
	err := s.Snapshot(context.Background(), "items")
	require.NoError(t, lock.Rollback())
	require.ErrorIs(t, err, ErrRefreshAbandoned, "%v", err)
	require.NotErrorIs(t, err, ErrConfig, "%v", err)
	code, _, ok := serverError(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, "57014", code, "%v", err)

	require.NoError(t, s.Snapshot(context.Background(), "items"))
	catchUp(t, s)
	require.Equal(t, []string{`refresh public.items ["1"]`, `refresh public.items ["2"]`,
		`refresh public.items ["3"]`, `refresh public.items ["4"]`}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))
}
