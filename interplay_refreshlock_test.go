package dbsync

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRefreshCancelledInLockWait: a Refresh whose context ends while its query waits
// for a lock on the table returns at once (lib/pq's cancel, the server answering)
// with ErrRefreshAbandoned wrapping the context's error; Run goes on, a change and
// the next Refresh are delivered once, in order.
func TestRefreshCancelledInLockWait(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rl (id int PRIMARY KEY)`, `INSERT INTO rl VALUES (1)`)
	h := newCacheHandler()
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("rl"))
	lock, err := d.DB.Begin()
	require.NoError(t, err)
	_, err = lock.Exec(`LOCK TABLE rl IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = s.RefreshContext(ctx, `SELECT * FROM rl`)
	took := time.Since(start)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
	require.Less(t, took, 5*time.Second)
	require.NoError(t, lock.Rollback())
	execAll(t, d.DB, `INSERT INTO rl VALUES (2)`)
	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM rl`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
	catchUp(t, s)
	require.True(t, s.IsRunning())
	require.NoError(t, stop())
	require.Equal(t, []string{`insert public.rl ["2"]`, `refresh public.rl ["1"]`, `refresh public.rl ["2"]`}, h.eventList())
}
