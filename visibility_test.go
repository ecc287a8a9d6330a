package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRefreshVisibilityRace reproduces the race in shared/reference/dblog.md: a
// writer's commit record is flushed (and decoded, before the low watermark) while the
// writer still waits for a synchronous standby, so the transaction is still in the
// proc array and invisible to the refresh SELECT. Plain DBLog then emits the stale
// selected row at the high watermark, after the newer change: the cache ends wrong.
// With the fix (drop keys of transactions in progress in the SELECT's snapshot) it is
// exact. DBSYNC_TEST_DISABLE_VISIBILITY_FIX=1 turns the fix off in the "fix" arm too,
// to show that arm fails without it.
func TestRefreshVisibilityRace(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{})
	require.NoError(t, err)
	defer srv.Stop()
	// Every session but the writer commits with synchronous_commit = local, so only
	// the writer waits for the (nonexistent) synchronous standby.
	localDSN := srv.DSN("postgres") + " synchronous_commit=local"
	admin, err := sql.Open("postgres", localDSN)
	require.NoError(t, err)
	defer admin.Close()
	defer admin.Exec(`ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf()`)

	disable := os.Getenv("DBSYNC_TEST_DISABLE_VISIBILITY_FIX") == "1"
	t.Run("plain DBLog emits a stale row", func(t *testing.T) {
		events, bad := runVisibilityRace(t, srv, admin, localDSN, "race_plain", false, false)
		require.Equal(t, []string{`update public.race_plain ["1"]`, `refresh public.race_plain ["1"]`, `refresh public.race_plain ["2"]`}, events)
		require.Equal(t, []string{`["1"]: cache map[id:1 v:old], table map[id:1 v:new]`}, bad)
	})
	// The table was refreshed before, so its keys are tracked: the held transaction's
	// key is dropped from the selection and the other row is emitted.
	t.Run("with the visibility fix, tracked table", func(t *testing.T) {
		events, bad := runVisibilityRace(t, srv, admin, localDSN, "race_fixed", !disable, true)
		require.Equal(t, []string{`refresh public.race_fixed ["1"]`, `refresh public.race_fixed ["2"]`,
			`update public.race_fixed ["1"]`, `refresh public.race_fixed ["2"]`}, events)
		require.Empty(t, bad)
	})
	// First refresh of the table: the held transaction was delivered before the
	// selection existed, when only "it touched this table" was recorded. The selection
	// runs again (after the writer is released here, between the first SELECT and its
	// high watermark) and the second run sees the new value.
	t.Run("with the visibility fix, first refresh", func(t *testing.T) {
		events, bad := runVisibilityRace(t, srv, admin, localDSN, "race_first", !disable, false)
		require.Equal(t, []string{`update public.race_first ["1"]`, `refresh public.race_first ["1"]`, `refresh public.race_first ["2"]`}, events)
		require.Empty(t, bad)
	})
}

func runVisibilityRace(t *testing.T, srv *pgtest.Server, admin *sql.DB, localDSN, table string, fix, tracked bool) (events, mismatched []string) {
	ctx := context.Background()
	_, err := admin.Exec(fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, v text); INSERT INTO %[1]s VALUES (1, 'old'), (2, 'old')`, table))
	require.NoError(t, err)
	h := newCacheHandler()
	s, stop := startSyncer(t, localDSN, table+"_slot", h, ForTables(table))
	s.win.setIgnoreSnapshot(!fix)

	_, err = admin.Exec(`CREATE TABLE IF NOT EXISTS sync_probe (n int)`) // for the probe below
	require.NoError(t, err)
	before := 0
	if tracked {
		// A refresh before the race makes the table tracked (keys of its changes kept).
		_, err := s.RefreshContext(ctx, fmt.Sprintf(`SELECT * FROM %s ORDER BY id`, table))
		require.NoError(t, err)
		before = len(h.eventList())
	}
	// Hold commits of synchronous_commit = on sessions after their WAL flush.
	_, err = admin.Exec(`ALTER SYSTEM SET synchronous_standby_names = 'nobody'`)
	require.NoError(t, err)
	_, err = admin.Exec(`SELECT pg_reload_conf()`)
	require.NoError(t, err)
	released := false
	release := func() {
		if !released {
			released = true
			_, err := admin.Exec(`ALTER SYSTEM RESET synchronous_standby_names`)
			require.NoError(t, err)
			_, err = admin.Exec(`SELECT pg_reload_conf()`)
			require.NoError(t, err)
		}
	}
	defer release()

	writerDB, err := sql.Open("postgres", srv.DSN("postgres")+" synchronous_commit=on")
	require.NoError(t, err)
	defer writerDB.Close()
	writer, err := writerDB.Conn(ctx)
	require.NoError(t, err)
	defer writer.Close()
	// The setting reaches the session before the checkpointer applies it to commit
	// waits, so probe until a commit of the writer session is seen waiting for the
	// standby (wait_event SyncRep), then cancel that wait (the probe row stays
	// committed locally, with a warning).
	var writerPID int
	require.NoError(t, writer.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&writerPID))
	waitFor(t, 20*time.Second, func() bool {
		done := make(chan error, 1)
		go func() {
			_, err := writer.ExecContext(ctx, `INSERT INTO sync_probe VALUES (1)`)
			done <- err
		}()
		for {
			select {
			case err := <-done:
				require.NoError(t, err)
				return false // committed without waiting: not in force yet
			default:
			}
			var ev sql.NullString
			require.NoError(t, admin.QueryRow(`SELECT wait_event FROM pg_stat_activity WHERE pid = $1`, writerPID).Scan(&ev))
			if ev.String == "SyncRep" {
				_, err := admin.Exec(`SELECT pg_cancel_backend($1)`, writerPID)
				require.NoError(t, err)
				require.NoError(t, <-done)
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
	}, "commits of the writer session to wait for the synchronous standby")

	writeDone := make(chan error, 1)
	go func() {
		_, err := writer.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET v = 'new' WHERE id = 1`, table))
		writeDone <- err
	}()
	// The poller decodes the flushed commit while the writer still waits...
	waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == before+1 }, "the held update to be delivered")
	// ...and the change is not visible yet.
	var v string
	require.NoError(t, admin.QueryRow(fmt.Sprintf(`SELECT v FROM %s WHERE id = 1`, table)).Scan(&v))
	require.Equal(t, "old", v)
	select {
	case err := <-writeDone:
		t.Fatalf("the writer's commit returned before release: %v", err)
	default:
	}

	if fix && !tracked {
		s.win.afterSelect = release // release the writer after the first SELECT
	}
	stats, err := s.RefreshContext(ctx, fmt.Sprintf(`SELECT * FROM %s ORDER BY id`, table))
	require.NoError(t, err)
	require.Equal(t, 2, stats.Selected)

	release()
	select {
	case err := <-writeDone:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("writer not released")
	}
	require.NoError(t, admin.QueryRow(fmt.Sprintf(`SELECT v FROM %s WHERE id = 1`, table)).Scan(&v))
	require.Equal(t, "new", v)
	// Let the syncer catch up with anything after the high watermark (nothing else
	// touches the table), then compare.
	catchUp(t, s)
	require.NoError(t, stop())
	events = nil
	for _, e := range h.eventList() {
		events = append(events, e)
	}
	return events, mismatches(h.tableRows("public."+table), dbRows(t, admin, table))
}
