package handlers

import (
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestCacheRefreshAfterColumnDroppedInWindowPostgres: a Refresh reads its rows, then,
// before its high watermark, ALTER TABLE t DROP COLUMN c commits and another row of t
// is updated. The stream then carries t's RELATION message without c (and the
// update) before the refresh rows, which carry c: they were read before the DROP
// (docs/SNAPSHOTS.md: a DDL inside an open window waits for nothing). The Cache had
// already removed c from its rows at that RELATION message; the refresh row put it
// back, a column SELECT * no longer shows, kept until that row changes. The high
// watermark is held back deterministically by a trigger on the watermark table that
// waits for an advisory lock the test holds.
func TestCacheRefreshAfterColumnDroppedInWindowPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE t (id int PRIMARY KEY, c text, v text)`)
	require.NoError(t, err)
	c := NewCache()
	s := newTestSyncer(t, d, c, "t")
	slot := pgtest.Ident(t, "slot")
	runErr, cancel := runInBackground(s)
	defer cancel()
	_, err = d.DB.Exec(`INSERT INTO t VALUES (1, 'c1', 'v1'), (2, 'c2', 'v2')`)
	require.NoError(t, err)
	waitCaughtUp(t, d, slot, runErr)

	st, err := refreshWithDDLInWindow(t, d, s, `SELECT * FROM t`, `ALTER TABLE t DROP COLUMN c`, `UPDATE t SET v = 'v2b' WHERE id = 2`)
	require.NoError(t, err)
	require.Equal(t, 1, st.Emitted, "row 2 changed inside the window: only row 1 is refreshed")
	waitCaughtUp(t, d, slot, runErr)
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.t": {
		`["1"]`: {"id": int32(1), "v": "v1"},
		`["2"]`: {"id": int32(2), "v": "v2b"},
	}}, c.Snapshot(), "the Cache equals SELECT * FROM t")
	cancel()
	require.NoError(t, <-runErr)
}

// refreshWithDDLInWindow runs s.RefreshContext(query) and, once its rows were read and
// before its high watermark is written, runs stmts. The high watermark is held back
// by a trigger on the watermark table that waits for an advisory lock the test holds.
func refreshWithDDLInWindow(t *testing.T, d *pgtest.Database, s *dbsync.Syncer, query string, stmts ...string) (dbsync.RefreshStats, error) {
	t.Helper()
	const lockID = 7311
	wm := pq.QuoteIdentifier(s.CtrlNamespace()) + "." + pq.QuoteIdentifier(s.WMTable())
	for _, q := range []string{
		`CREATE OR REPLACE FUNCTION hold_high_wm() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.wm_type = 'high' THEN PERFORM pg_advisory_xact_lock(7311); END IF; RETURN NEW; END $$`,
		`CREATE TRIGGER hold_high_wm BEFORE INSERT ON ` + wm + ` FOR EACH ROW EXECUTE FUNCTION hold_high_wm()`,
	} {
		_, err := d.DB.Exec(q)
		require.NoError(t, err, q)
	}
	defer func() {
		_, err := d.DB.Exec(`DROP TRIGGER hold_high_wm ON ` + wm)
		require.NoError(t, err)
	}()
	ctx := context.Background()
	holder, err := d.DB.Conn(ctx)
	require.NoError(t, err)
	defer holder.Close()
	_, err = holder.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, lockID)
	require.NoError(t, err)

	type result struct {
		st  dbsync.RefreshStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := s.RefreshContext(ctx, query)
		done <- result{st, err}
	}()
	// The high watermark's INSERT waits in the trigger: the rows were read.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var waiting bool
		require.NoError(t, d.DB.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted)`, lockID).Scan(&waiting))
		if waiting {
			break
		}
		require.True(t, time.Now().Before(deadline), "the high watermark never waited for the lock")
		time.Sleep(10 * time.Millisecond)
	}
	for _, q := range stmts {
		_, err := d.DB.Exec(q)
		require.NoError(t, err, q)
	}
	_, err = holder.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, lockID)
	require.NoError(t, err)
	r := <-done
	return r.st, r.err
}

// TestCacheRefreshOfTableRecreatedInWindowPostgres: a Refresh of t reads its rows;
// before its high watermark, t is dropped, created again under its name (another
// relation) and written. The refresh rows, of the dropped relation, came after the
// new table's change: they took the name back for the dropped relation, so the Cache
// showed the dropped table's rows under public.t and the new table's were out of
// sight. The Refresh now fails (ErrRefreshAbandoned) without handing them over
// (TestRefreshTableReplacedInWindow), and the Cache holds the new table's rows.
func TestCacheRefreshOfTableRecreatedInWindowPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE t (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	c := NewCache()
	s := newTestSyncer(t, d, c, "t")
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
	runErr, cancel := runInBackground(s)
	defer cancel()
	_, err = d.DB.Exec(`INSERT INTO t VALUES (1, 'old1'), (2, 'old2')`)
	require.NoError(t, err)
	waitCaughtUp(t, d, slot, runErr)

	_, err = refreshWithDDLInWindow(t, d, s, `SELECT * FROM t`,
		`DROP TABLE t`, `CREATE TABLE t (id int PRIMARY KEY, w text)`, `ALTER PUBLICATION `+pub+` ADD TABLE t`,
		`INSERT INTO t VALUES (10, 'new10')`)
	require.ErrorIs(t, err, dbsync.ErrRefreshAbandoned)
	require.ErrorContains(t, err, "public.t was dropped and created again")
	waitCaughtUp(t, d, slot, runErr)
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.t": {
		`["10"]`: {"id": int32(10), "w": "new10"},
	}}, c.Snapshot(), "the Cache equals SELECT * FROM t")
	cancel()
	require.NoError(t, <-runErr)
}

// TestCacheTablesSwapNamesPostgres: two cached tables swap names in one transaction
// (a -> tmp, b -> a, tmp -> b), and only the table now called a is written. Its
// RELATION message moves b's rows to the name a; a's rows cannot stay under a, which
// is taken, and their new name is not known before a RELATION message of theirs: they
// are out of sight (not under a, not under b) until the table now called b changes,
// and then show up under b with it.
func TestCacheTablesSwapNamesPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	for _, q := range []string{`CREATE TABLE a (id int PRIMARY KEY, v text)`, `CREATE TABLE b (id int PRIMARY KEY, w text)`} {
		_, err := d.DB.Exec(q)
		require.NoError(t, err)
	}
	c := NewCache()
	s := newTestSyncer(t, d, c, "a", "b")
	slot := pgtest.Ident(t, "slot")
	runErr, cancel := runInBackground(s)
	defer cancel()
	step := func(qs ...string) map[string]map[string]dbsync.StringMap {
		for _, q := range qs {
			_, err := d.DB.Exec(q)
			require.NoError(t, err, q)
		}
		waitCaughtUp(t, d, slot, runErr)
		return c.Snapshot()
	}
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.a": {`["1"]`: {"id": int32(1), "v": "a1"}},
		"public.b": {`["1"]`: {"id": int32(1), "w": "b1"}},
	}, step(`INSERT INTO a VALUES (1, 'a1')`, `INSERT INTO b VALUES (1, 'b1')`))
	step(`BEGIN; ALTER TABLE a RENAME TO tmp; ALTER TABLE b RENAME TO a; ALTER TABLE tmp RENAME TO b; COMMIT`)
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.a": {`["1"]`: {"id": int32(1), "w": "b1"}, `["2"]`: {"id": int32(2), "w": "a2"}},
	}, step(`INSERT INTO a VALUES (2, 'a2')`), "the old a's rows are out of sight")
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.a": {`["1"]`: {"id": int32(1), "w": "b1"}, `["2"]`: {"id": int32(2), "w": "a2"}},
		"public.b": {`["1"]`: {"id": int32(1), "v": "a1"}, `["2"]`: {"id": int32(2), "v": "b2"}},
	}, step(`INSERT INTO b VALUES (2, 'b2')`), "the cache equals SELECT * of both tables")
	cancel()
	require.NoError(t, <-runErr)
}
