package dbsync

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSlotCallsContextEndedNamed: Status, ConfirmedFlushLSN and SkipBacklog whose
// context ends while their statement waits (here for a lock another session holds on
// pg_replication_slots) return an error wrapping the context's error and naming the
// call, through lib/pq too, whose cancelled statement comes back as the server's
// 57014 "canceling statement due to user request". They returned that bare 57014:
// errors.Is(err, context.DeadlineExceeded) did not hold, and the message named no
// call.
func TestSlotCallsContextEndedNamed(t *testing.T) {
	calls := []struct {
		name string
		call func(ctx context.Context, s *Syncer) error
	}{
		{"Status", func(ctx context.Context, s *Syncer) error { _, err := s.Status(ctx); return err }},
		{"ConfirmedFlushLSN", func(ctx context.Context, s *Syncer) error { _, err := s.ConfirmedFlushLSN(ctx); return err }},
		{"SkipBacklog", func(ctx context.Context, s *Syncer) error { _, err := s.SkipBacklog(ctx); return err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			// A Syncer of its own, whose pool connected during setup: while the lock
			// below is held, a new session's startup waits too, and lib/pq reads the
			// startup's answers without heeding the context.
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`)
			s := newTestSyncer(t, d, WithPGConnStr(d.DSN()), ForTables("t"))
			ctx := context.Background()
			lock, err := d.DB.BeginTx(ctx, nil)
			require.NoError(t, err)
			_, err = lock.Exec(`LOCK TABLE pg_catalog.pg_replication_slots IN ACCESS EXCLUSIVE MODE`)
			require.NoError(t, err)
			// Released after a while whatever happens, so a call that does not
			// honour its context shows as slow rather than hanging the test.
			release := time.AfterFunc(15*time.Second, func() { lock.Rollback() })
			defer func() { release.Stop(); lock.Rollback() }()
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err = c.call(cctx, s)
			took := time.Since(start)
			require.Error(t, err)
			require.True(t, errors.Is(err, context.DeadlineExceeded), "%s: %v", c.name, err)
			require.ErrorContains(t, err, c.name)
			require.NotErrorIs(t, err, ErrStatementCancelled)
			require.Less(t, took, 10*time.Second, "%s returned %s after its call", c.name, took)
		})
	}
}
