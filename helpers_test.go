package dbsync

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// newTestSyncer creates a Syncer on d with a slot and publication named after the test
// and a fast idle backoff; extra options come last and win.
func newTestSyncer(t *testing.T, d *pgtest.Database, opts ...SyncerOpt) *Syncer {
	t.Helper()
	base := []SyncerOpt{
		WithPGConnStr(d.DSN()),
		WithReplicationSlot(pgtest.Ident(t, "slot")),
		WithPublication(pgtest.Ident(t, "pub")),
		WithPollBackoff(5*time.Millisecond, 2, 50*time.Millisecond),
	}
	s, err := NewSyncer(append(base, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// running is a Syncer running in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func runInBackground(s *Syncer) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	return r
}

// stop cancels the run and returns Run's result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of cancel")
		return nil
	}
}

// waitFor is waitFor (syncer_test.go) that fails at once, with Run's result, when Run
// returns before cond holds.
func (r *running) waitFor(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	waitFor(t, timeout, func() bool {
		select {
		case err := <-r.done:
			r.done <- err // for r.stop
			t.Fatalf("Run returned: %v", err)
		default:
		}
		return cond()
	}, msg, args...)
}

// wait waits up to timeout for Run to return on its own and returns its result.
func (r *running) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(timeout):
		t.Fatalf("Run did not return on its own within %s", timeout)
		return nil
	}
}

func execAll(t *testing.T, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		_, err := db.Exec(q)
		require.NoError(t, err, q)
	}
}

// flushLSN reads pg_current_wal_flush_lsn().
func flushLSN(t *testing.T, db *sql.DB) string {
	t.Helper()
	var l string
	require.NoError(t, db.QueryRow(`SELECT pg_current_wal_flush_lsn()::text`).Scan(&l))
	return l
}

// waitCaughtUp waits until the slot's confirmed_flush_lsn reaches the flush LSN read now.
func waitCaughtUp(t *testing.T, db *sql.DB, slot string) {
	t.Helper()
	target := flushLSN(t, db)
	waitFor(t, 30*time.Second, func() bool {
		var ok bool
		require.NoError(t, db.QueryRow(`SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, slot, target).Scan(&ok))
		return ok
	}, "slot %s to reach %s", slot, target)
}

// queryStrings runs q and returns its single text column, row by row.
func queryStrings(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	return pgtest.Strings(t, db, q, args...)
}

// settings are a Syncer's exported tunables (TestRunChecksExportedFields).
type settings struct {
	delay, maxDelay, minPoll time.Duration
	factor                   float64
	maxMsgs                  int
	policy                   HandlerErrorPolicy
	chunk, inFlight, par     int
}

func (s *Syncer) settingsForTest() *settings {
	return &settings{s.DelayBetweenPeekRetries, s.MaxDelayBetweenEmptyPeeks, s.MinPollInterval,
		s.TimerDelayBackoffFactor, s.MaxMessagesToRead, s.HandlerErrorPolicy,
		s.SnapshotChunkSize, s.SnapshotChunksInFlight, s.SnapshotParallel}
}

func (s *Syncer) restoreSettingsForTest(v settings) {
	s.DelayBetweenPeekRetries, s.MaxDelayBetweenEmptyPeeks, s.MinPollInterval = v.delay, v.maxDelay, v.minPoll
	s.TimerDelayBackoffFactor, s.MaxMessagesToRead, s.HandlerErrorPolicy = v.factor, v.maxMsgs, v.policy
	s.SnapshotChunkSize, s.SnapshotChunksInFlight, s.SnapshotParallel = v.chunk, v.inFlight, v.par
}
