package dbsync

import (
	"context"
	"log/slog"
	"strconv"
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
