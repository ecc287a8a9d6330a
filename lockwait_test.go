package dbsync

import (
	"context"
	"database/sql"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// lockInSession opens a session of its own on db that runs stmts in a transaction it
// leaves open (idle in transaction), and returns its PID and a function that commits
// it (run at cleanup too, if the test did not).
func lockInSession(t *testing.T, db *sql.DB, stmts ...string) (pid int, commit func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = conn.ExecContext(ctx, `BEGIN`)
	require.NoError(t, err)
	for _, q := range stmts {
		_, err = conn.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	done := false
	commit = func() {
		if done {
			return
		}
		done = true
		_, err := conn.ExecContext(ctx, `COMMIT`)
		require.NoError(t, err)
		require.NoError(t, conn.Close())
	}
	t.Cleanup(commit)
	return pid, commit
}

// lockWaiters counts the sessions of the database waiting for a lock.
func lockWaiters(t *testing.T, db *sql.DB) int {
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n))
	return n
}

// TestSelectionLockWaitNamesHolder: a Refresh whose table (or the watermark table) is
// locked by another transaction waits, bounded by its context; when the wait lasts
// more than lockWaitWarnAfter it is logged once, naming the lock and who holds it,
// and the error that ends it (ErrRefreshAbandoned with the context's error) names
// them too: a session (its PID, lock mode and state: idle in transaction) or a
// prepared transaction (its gid and database). Meanwhile Run delivers other
// changes; Close during the wait returns promptly.
func TestSelectionLockWaitNamesHolder(t *testing.T) {
	srv := twoPhaseServer(t)
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) { testSelectionLockWaitNamesHolder(t, srv, driver) })
	}
}

func testSelectionLockWaitNamesHolder(t *testing.T, srv *pgtest.Server, driver string) {
	d := srv.NewDatabase(t)
	db, err := sql.Open(driver, d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	execAll(t, d.DB, `CREATE TABLE lw (id int PRIMARY KEY, v text)`, `INSERT INTO lw VALUES (1, 'a'), (2, 'b')`,
		`CREATE TABLE lw_other (id int PRIMARY KEY)`)
	h := newCacheHandler()
	var logs pgtest.Buffer
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("lw", "lw_other"), WithDB(db),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	catchUp(t, s)
	refresh := func(timeout time.Duration, q string) (RefreshStats, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return s.RefreshContext(ctx, q)
	}

	// A session idle in transaction after LOCK TABLE: the Refresh query's planning
	// waits. Run goes on delivering other tables' changes meanwhile.
	pid, commit := lockInSession(t, d.DB, `LOCK TABLE lw`)
	done := make(chan error, 1)
	go func() { _, err := refresh(4*time.Second, `SELECT * FROM lw WHERE id = 1`); done <- err }()
	waitFor(t, 10*time.Second, func() bool { return lockWaiters(t, d.DB) == 1 }, "the Refresh to wait for the lock")
	execAll(t, d.DB, `INSERT INTO lw_other VALUES (7)`)
	waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 1 }, "the insert to be delivered while the Refresh waits")
	err = <-done
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	held := "waiting for a lock on public.lw held by PID " + strconv.Itoa(pid) + " (AccessExclusiveLock, idle in transaction, in a transaction since "
	require.Contains(t, err.Error(), held)
	out := logs.String()
	require.Contains(t, out, "planning a Refresh query has been waiting for a lock on a table")
	require.Contains(t, out, "table=public.lw ")
	require.Contains(t, out, `held_by="PID `+strconv.Itoa(pid)+" (AccessExclusiveLock, idle in transaction, in a transaction since ")
	commit()

	// A prepared transaction that locked the table: named by its gid.
	mark := len(logs.String())
	prepare(t, d.DB, "lw_prep", `LOCK TABLE lw IN ACCESS EXCLUSIVE MODE`)
	_, err = refresh(4*time.Second, `SELECT * FROM lw WHERE id = 2`)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "waiting for a lock on public.lw held by prepared transaction 'lw_prep' (AccessExclusiveLock, database "+d.Name+", prepared at ")
	require.Contains(t, logs.String()[mark:], `held_by="prepared transaction 'lw_prep' (AccessExclusiveLock, database `+d.Name+", prepared at ")
	execAll(t, d.DB, `ROLLBACK PREPARED 'lw_prep'`)

	// The watermark table locked (SHARE conflicts with the INSERT's ROW EXCLUSIVE):
	// the low watermark's INSERT waits.
	mark = len(logs.String())
	wm := pq.QuoteIdentifier(s.CtrlNamespace()) + "." + pq.QuoteIdentifier(s.WMTable())
	pid, commit = lockInSession(t, d.DB, `LOCK TABLE `+wm+` IN SHARE MODE`)
	start := time.Now()
	_, err = refresh(4*time.Second, `SELECT * FROM lw WHERE id = 1`)
	// The call does not wait on the locked table much longer after its context
	// ended: lib/pq's INSERT was refused by the server, so there is nothing to
	// delete; pgx's closed its session, and the deletion is bounded by 1 s (before,
	// each took 14 s: the deletion waited for the lock up to 10 s).
	require.Less(t, time.Since(start), 6*time.Second)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "waiting for a lock on "+s.CtrlNamespace()+"."+s.WMTable()+" held by PID "+strconv.Itoa(pid)+" (ShareLock, idle in transaction, ")
	require.Contains(t, logs.String()[mark:], "writing the low watermark of selection ")
	commit()

	// Close while a Refresh waits returns promptly, and the Refresh fails with
	// ErrClosed.
	_, commit = lockInSession(t, d.DB, `LOCK TABLE lw`)
	go func() { _, err := refresh(time.Minute, `SELECT * FROM lw WHERE id = 1`); done <- err }()
	waitFor(t, 10*time.Second, func() bool { return lockWaiters(t, d.DB) == 1 }, "the Refresh to wait for the lock")
	start = time.Now()
	require.NoError(t, s.Close())
	require.Less(t, time.Since(start), 5*time.Second)
	err = <-done
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, ErrClosed)
	commit()
	stop()
	require.Equal(t, []string{`insert public.lw_other ["7"]`}, h.eventList())
}

// TestSnapshotLockWaitNamesHolder: a Snapshot whose table another transaction locked
// waits, before its first chunk (for the table's writers: a LOCK TABLE is one) and
// before a later chunk (its LOCK TABLE ... IN ACCESS SHARE MODE), bounded by its
// context. The error (ErrRefreshAbandoned with the context's error) names the lock
// and who holds it, whether the context ended before lockWaitWarnAfter (no warning
// logged: the holder is looked up when the wait ends) or after it (the wait is
// logged once, naming the holder); a Snapshot run again resumes at the chunk.
func TestSnapshotLockWaitNamesHolder(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE slw (id int PRIMARY KEY, v text)`, `INSERT INTO slw VALUES (1, 'a'), (2, 'b'), (3, 'c')`)
	h := newCacheHandler()
	var logs pgtest.Buffer
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("slw"), WithSnapshotChunkSize(1),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	catchUp(t, s)
	snapshot := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return s.Snapshot(ctx, "slw")
	}

	// First chunk: the Snapshot waits for the session that locked the table, past
	// lockWaitWarnAfter.
	pid, commit := lockInSession(t, d.DB, `LOCK TABLE slw`)
	err := snapshot(4 * time.Second)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	held := "waiting for a lock on public.slw held by PID " + strconv.Itoa(pid) + " (AccessExclusiveLock, idle in transaction, in a transaction since "
	require.Contains(t, err.Error(), held)
	require.Contains(t, logs.String(), "a snapshot of public.slw (waiting for the transactions writing it) has been waiting for a lock")
	require.Contains(t, logs.String(), `held_by="PID `+strconv.Itoa(pid)+" (AccessExclusiveLock, idle in transaction, ")
	commit()
	require.Empty(t, h.eventList())
	require.NoError(t, snapshot(30*time.Second))
	catchUp(t, s)
	require.NoError(t, stop())
	require.Equal(t, []string{`refresh public.slw ["1"]`, `refresh public.slw ["2"]`, `refresh public.slw ["3"]`}, h.eventList())
}
