package dbsync

import (
	"context"
	"database/sql"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSnapshotLaterChunkLockWaitNamesHolder: a Snapshot whose table is locked by
// another session after its first chunk's SELECT waits before the next chunk's
// (LOCK TABLE ... IN ACCESS SHARE MODE); the context ends that wait before
// lockWaitWarnAfter (nothing is logged), and the error names the chunk, the lock and
// who holds it (looked up when the wait ended), and wraps the context's error
// (before, a LOCK TABLE cancelled by the context was explained as a statement_timeout
// and the chunk's error was dropped for a bare "context deadline exceeded").
func TestSnapshotLaterChunkLockWaitNamesHolder(t *testing.T) {
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
	var pid int
	var commit func()
	var locked bool
	s.win.afterSelect = func() {
		if !locked {
			locked = true
			pid, commit = lockInSession(t, d.DB, `LOCK TABLE slw IN ACCESS EXCLUSIVE MODE`)
		}
	}
	err := snapshot(time.Second)
	s.win.afterSelect = nil
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "waiting for a lock on public.slw held by PID "+strconv.Itoa(pid)+" (AccessExclusiveLock, idle in transaction, ")
	require.Contains(t, err.Error(), "snapshot of public.slw, chunk 2: ")
	require.NotContains(t, logs.String(), "has been waiting for a lock")
	commit()
	require.NoError(t, snapshot(30*time.Second))
	catchUp(t, s)
	require.NoError(t, stop())
	// Chunk 1's rows were delivered, but its progress was not recorded: with
	// parallel 1 chunk 2 is opened before chunk 1 is settled, and the Snapshot
	// ended while chunk 2 opened. Run again, it starts at chunk 1 (at least once).
	require.Equal(t, []string{`refresh public.slw ["1"]`, `refresh public.slw ["1"]`, `refresh public.slw ["2"]`, `refresh public.slw ["3"]`}, h.eventList())
}

// TestSnapshotLockWaitPreparedAndRunDelivers: a Snapshot whose table a prepared
// transaction locked waits for it (a writer of the table) before its first chunk,
// and the error that ends the wait names it by its gid. A Snapshot whose next chunk
// waits for a session's lock (after its low watermark was written) does not hold up
// Run: another table's change is delivered meanwhile; the wait is logged once it
// lasted lockWaitWarnAfter, and the Snapshot finishes once the lock is released.
func TestSnapshotLockWaitPreparedAndRunDelivers(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE slp (id int PRIMARY KEY, v text)`, `INSERT INTO slp VALUES (1, 'a'), (2, 'b'), (3, 'c')`,
		`CREATE TABLE slp_other (id int PRIMARY KEY)`)
	h := newCacheHandler()
	var logs pgtest.Buffer
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("slp", "slp_other"), WithSnapshotChunkSize(1),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	catchUp(t, s)

	prepare(t, d.DB, "slp_prep", `LOCK TABLE slp IN ACCESS EXCLUSIVE MODE`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err := s.Snapshot(ctx, "slp")
	cancel()
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "waiting for a lock on public.slp held by prepared transaction 'slp_prep' (AccessExclusiveLock, database "+d.Name+", prepared at ")
	execAll(t, d.DB, `ROLLBACK PREPARED 'slp_prep'`)

	var pid int
	var commit func()
	var locked bool
	s.win.afterSelect = func() {
		if !locked {
			locked = true
			pid, commit = lockInSession(t, d.DB, `LOCK TABLE slp`)
		}
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done <- s.Snapshot(ctx, "slp")
	}()
	waitFor(t, 10*time.Second, func() bool { return lockWaiters(t, d.DB) == 1 }, "chunk 2 to wait for the lock")
	execAll(t, d.DB, `INSERT INTO slp_other VALUES (7)`)
	waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 2 }, "the insert to be delivered while chunk 2 waits")
	waitFor(t, 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "a selection on public.slp has been waiting for a lock on a table")
	}, "the wait to be logged")
	require.Contains(t, logs.String(), `held_by="PID `+strconv.Itoa(pid)+" (AccessExclusiveLock, idle in transaction, ")
	require.Equal(t, 1, strings.Count(logs.String(), "has been waiting for a lock"))
	commit()
	require.NoError(t, <-done)
	s.win.afterSelect = nil
	catchUp(t, s)
	require.NoError(t, stop())
	require.Equal(t, []string{`refresh public.slp ["1"]`, `insert public.slp_other ["7"]`, `refresh public.slp ["2"]`, `refresh public.slp ["3"]`}, h.eventList())
}

// TestSnapshotParallelBoundLockWaitNamesHolder: with chunks planned ahead
// (WithSnapshotParallel), the query finding the next chunk's key range (chunkBound)
// waits for a lock on the table like a chunk's SELECT: ctx ending that wait is
// ErrRefreshAbandoned with ctx's error, and the error names the lock and its holder.
func TestSnapshotParallelBoundLockWaitNamesHolder(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE spb (id int PRIMARY KEY)`, `INSERT INTO spb SELECT generate_series(1, 6)`)
	h := newCacheHandler()
	var pid int
	var commit func()
	var db *sql.DB = d.DB
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("spb"), WithSnapshotChunkSize(1),
		WithSnapshotParallel(2), WithSnapshotChunksInFlight(2),
		WithSnapshotProgress(func(p SnapshotProgress) {
			if p.Chunks == 1 {
				pid, commit = lockInSession(t, db, `LOCK TABLE spb`)
			}
		}))
	catchUp(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err := s.Snapshot(ctx, "spb")
	cancel()
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "snapshot of public.spb, chunk 3: ")
	require.Contains(t, err.Error(), "waiting for a lock on public.spb held by PID "+strconv.Itoa(pid)+" (AccessExclusiveLock, idle in transaction, ")
	commit()
	require.NoError(t, stop())
}
