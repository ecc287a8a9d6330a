package dbsync

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dbsync/dbsync/internal/pgtest"
)

// TestStatementTimeoutCurrentFlushLSNNamed: CurrentFlushLSN whose statement outlasts
// the statement_timeout of dbsync's role failed with the server's bare 57014 ("read
// pg_current_wal_flush_lsn(): pq: canceling statement due to statement timeout"),
// where every other public call says ErrStatementCancelled and what to do. It is now
// ErrStatementCancelled naming the call, the 57014 still in the chain. A call whose
// own context ended is not that error: through lib/pq it was the bare 57014
// "canceling statement due to user request", without the context's error; it now
// wraps it and names the call (withCtxErr).
func TestStatementTimeoutCurrentFlushLSNNamed(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			s := newTestSyncer(t, d, ForTables("items"))
			require.NoError(t, s.Close())
			ts := timedSyncer(t, d, s, driver, "200ms")
			// A statement that outlasts the role's statement_timeout (the real one
			// takes microseconds).
			ts.currentFlushLSNSQL = `SELECT pg_catalog.pg_current_wal_flush_lsn() FROM pg_catalog.pg_sleep(2)`
			_, err := ts.CurrentFlushLSN(context.Background())
			require.ErrorIs(t, err, ErrStatementCancelled, "%v", err)
			code, _, ok := serverError(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, "57014", code, "%v", err)
			require.Contains(t, err.Error(), "raise statement_timeout for dbsync's role (ALTER ROLE ... SET statement_timeout", "%v", err)
			require.Contains(t, err.Error(), "call CurrentFlushLSN again", "%v", err)

			// The caller's own deadline is not the server's cancellation.
			ts.currentFlushLSNSQL = `SELECT pg_catalog.pg_current_wal_flush_lsn() FROM pg_catalog.pg_sleep(0.15)`
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			_, err = ts.CurrentFlushLSN(ctx)
			require.ErrorIs(t, err, context.DeadlineExceeded, "%v", err)
			require.NotErrorIs(t, err, ErrStatementCancelled, "%v", err)
			require.True(t, strings.HasPrefix(err.Error(), "CurrentFlushLSN: context deadline exceeded"), "%v", err)

			ts.currentFlushLSNSQL = ""
			lsn, err := ts.CurrentFlushLSN(context.Background())
			require.NoError(t, err)
			require.NotZero(t, lsn)
		})
	}
}

// TestCallEndedAfterItsCauseKeepsCause: a call that failed for a reason of its own
// (the slot dropped: ErrSlotMissing; a Syncer running on the slot: ErrSlotInUse)
// and whose context ended before it returned (the hook cancels it there) returned
// "context canceled: dbsync: replication slot does not exist: ...": the context's
// error led, as if the caller's cancellation had ended the call. The first cause
// now leads the message; the context's error stays in the chain (errors.Is holds for
// both), once, and the message names the call.
func TestCallEndedAfterItsCauseKeepsCause(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(h))
	execAll(t, d.DB, `INSERT INTO items VALUES (1)`)

	check := func(call string, named error, lead string, fn func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s.callEnding = func(c string) {
			require.Equal(t, call, c)
			cancel()
		}
		defer func() { s.callEnding = nil }()
		err := fn(ctx)
		t.Logf("%s: %v", call, err)
		require.ErrorIs(t, err, named, call)
		require.ErrorIs(t, err, context.Canceled, call)
		require.True(t, strings.HasPrefix(err.Error(), lead), "%s: %v", call, err)
		require.Equal(t, 1, strings.Count(err.Error(), "context canceled"), "%s: %v", call, err)
		require.Contains(t, err.Error(), "("+call+"'s context ended too: context canceled)", call)
	}

	// Teardown of the slot a running Syncer holds: refused, nothing dropped.
	r := runInBackground(s)
	r.waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 1 }, "1 insert, have %v", h.eventList())
	other, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(s.ReplicationSlot()), WithPublication(s.Publication()), WithSetup(false))
	require.NoError(t, err)
	t.Cleanup(func() { other.Close() })
	for _, c := range []struct {
		call string
		fn   func(ctx context.Context) error
	}{
		{"Teardown", func(ctx context.Context) error { return other.Teardown(ctx) }},
		{"TeardownWithResult", func(ctx context.Context) error { _, err := other.TeardownWithResult(ctx); return err }},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		other.callEnding = func(string) { cancel() }
		err := c.fn(ctx)
		cancel()
		t.Logf("%s: %v", c.call, err)
		require.ErrorIs(t, err, ErrSlotInUse, c.call)
		require.ErrorIs(t, err, context.Canceled, c.call)
		require.True(t, strings.HasPrefix(err.Error(), "dbsync: replication slot is active in another process"), "%s: %v", c.call, err)
		require.Equal(t, 1, strings.Count(err.Error(), "context canceled"), "%s: %v", c.call, err)
		require.Contains(t, err.Error(), "("+c.call+"'s context ended too: context canceled)", c.call)
	}
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{s.ReplicationSlot()}, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()))

	// GetMessages and Forward on a slot dropped since the last peek.
	execAll(t, d.DB, `INSERT INTO items VALUES (2)`)
	msgs, err := s.GetMessagesContext(context.Background(), 0, false, nil)
	require.NoError(t, err)
	require.NotEmpty(t, msgs)
	execAll(t, d.DB, `SELECT pg_drop_replication_slot('`+s.ReplicationSlot()+`')`)
	check("Forward", ErrSlotMissing, "dbsync: replication slot does not exist", func(ctx context.Context) error {
		return s.ForwardContext(ctx, len(msgs))
	})
	check("GetMessages", ErrSlotMissing, "dbsync: replication slot does not exist", func(ctx context.Context) error {
		_, err := s.GetMessagesContext(ctx, 0, false, nil)
		return err
	})
}

// TestLowLevelCallsCancelledNamed: GetMessages and Forward whose own context had
// ended returned a bare "context canceled" (or "read pg_current_wal_flush_lsn():
// context canceled"), not saying which call, where the other calls name
// themselves. Both now say "GetMessages: context canceled" / "Forward: context
// canceled", wrapping the context's error, and move nothing.
func TestLowLevelCallsCancelledNamed(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("items"))
	execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
	before := queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot())
	msgs, err := s.GetMessagesContext(context.Background(), 0, false, nil)
	require.NoError(t, err)
	require.NotEmpty(t, msgs)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// lockPeek's select picks the ended context or the free semaphore at random:
	// either way the call is named.
	for i := 0; i < 20; i++ {
		_, err := s.GetMessagesContext(ctx, 0, true, nil)
		require.ErrorIs(t, err, context.Canceled)
		require.True(t, strings.HasPrefix(err.Error(), "GetMessages: context canceled"), "%v", err)
		require.Equal(t, 1, strings.Count(err.Error(), "context canceled"), "%v", err)
		err = s.ForwardContext(ctx, len(msgs))
		require.ErrorIs(t, err, context.Canceled)
		require.True(t, strings.HasPrefix(err.Error(), "Forward: context canceled"), "%v", err)
		require.Equal(t, 1, strings.Count(err.Error(), "context canceled"), "%v", err)
	}
	require.Equal(t, before, queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()))
}

// TestSnapshotProgressResetBounded: a Snapshot whose table was altered between two
// chunks resets the table's progress (so the next Snapshot starts over) in a
// statement that ran with context.WithoutCancel and no bound: with the progress row
// locked by another session (or a server that does not answer) the Snapshot hung
// for good, whatever its context. The reset now gives up after cleanupTimeout and
// Snapshot returns the table change (ErrRefreshAbandoned) joined with
// ErrSnapshotProgress saying the reset was not recorded and what the next Snapshot
// does then.
func TestSnapshotProgressResetBounded(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("t"), WithSnapshotChunkSize(2), WithSnapshotChunksInFlight(1))
	n := 0
	s.win.afterSelect = func() {
		if n++; n == 1 {
			execAll(t, d.DB, `ALTER TABLE t ADD COLUMN extra int DEFAULT 7`)
		}
	}
	// Once the first chunk is recorded, another session holds its progress row.
	locked := make(chan *sql.Tx, 1)
	s.SnapshotProgress = func(p SnapshotProgress) {
		if p.Chunks != 1 {
			return
		}
		lock, err := d.DB.Begin()
		if err != nil {
			t.Errorf("begin: %v", err)
			return
		}
		locked <- lock
		var chunks int
		if err := lock.QueryRow(`SELECT chunks_done FROM dbsync_ctrl.snapshot_progress WHERE slot_name = $1 AND table_name = 'public.t' FOR UPDATE`, s.ReplicationSlot()).Scan(&chunks); err != nil || chunks != 1 {
			t.Errorf("lock the progress row: %d, %v", chunks, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Snapshot(ctx, "t") }()
	lock := <-locked
	locktime := time.Now()
	var err error
	select {
	case err = <-done:
	case <-time.After(cleanupTimeout + 20*time.Second):
		lock.Rollback()
		t.Fatalf("Snapshot did not return within %s while its progress reset waited for a lock", cleanupTimeout+20*time.Second)
	}
	took := time.Since(locktime)
	require.NoError(t, lock.Rollback())
	t.Logf("after %s: %v", took, err)
	require.GreaterOrEqual(t, took, cleanupTimeout, "the reset waited its bound")
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, ErrSnapshotProgress)
	var changed *tableChangedError
	require.ErrorAs(t, err, &changed)
	require.ErrorContains(t, err, "snapshot of public.t, chunk 2: dbsync: refresh selection abandoned: public.t was altered since the snapshot or refresh described it")
	require.ErrorContains(t, err, "dbsync: snapshot progress not recorded: reset snapshot progress of public.t: no answer within 5s (the server does not answer, or another session holds the table's row of \"dbsync_ctrl\".snapshot_progress locked): the next Snapshot of it may resume after the chunks recorded instead of reading it from the start; to make it start over, delete its row (DELETE FROM \"dbsync_ctrl\".snapshot_progress WHERE slot_name = '"+s.ReplicationSlot()+"' AND table_name = 'public.t')")
	catchUp(t, s)
	require.Equal(t, []string{`refresh public.t ["1"]`, `refresh public.t ["2"]`}, h.eventList(), "the first chunk, read before the DDL")
	// The progress was not reset: the row still says chunk 1.
	require.Equal(t, []string{"1"}, queryStrings(t, d.DB, `SELECT chunks_done::text FROM dbsync_ctrl.snapshot_progress WHERE slot_name = $1 AND table_name = 'public.t'`, s.ReplicationSlot()))
}
