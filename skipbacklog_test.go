package dbsync

import (
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSkipBacklog: SkipBacklog forwards the slot past every change not yet confirmed
// (the next Run delivers only later ones) and returns the slot's new position; it
// refuses to run beside this Syncer's Run (ErrAlreadyRunning) and another Syncer's
// (ErrSlotInUse, the slot not moved), and after Close (ErrClosed).
func TestSkipBacklog(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t1 (id int PRIMARY KEY)`)
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("t1"), WithMessageHandler(h))
	execAll(t, d.DB, `INSERT INTO t1 VALUES (1)`, `INSERT INTO t1 VALUES (2)`)
	ctx := context.Background()
	lsn, err := s.SkipBacklog(ctx)
	require.NoError(t, err)
	confirmed, err := s.ConfirmedFlushLSN(ctx)
	require.NoError(t, err)
	require.Equal(t, lsn, confirmed)
	require.NotZero(t, lsn)

	r := runInBackground(s)
	r.waitFor(t, 10*time.Second, func() bool { return s.IsRunning() }, "Run")
	_, err = s.SkipBacklog(ctx)
	require.ErrorIs(t, err, ErrAlreadyRunning)
	// Another Syncer of the slot, while this one runs: refused, nothing moved.
	other := newTestSyncer(t, d, ForTables("t1"), WithMessageHandler(newCacheHandler()), WithSetup(false))
	execAll(t, d.DB, `INSERT INTO t1 VALUES (3)`)
	r.waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 1 }, "row 3")
	before, err := s.ConfirmedFlushLSN(ctx)
	require.NoError(t, err)
	_, err = other.SkipBacklog(ctx)
	require.ErrorIs(t, err, ErrSlotInUse)
	after, err := s.ConfirmedFlushLSN(ctx)
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{`insert public.t1 ["3"]`}, h.eventList(), "rows 1 and 2 were skipped")

	require.NoError(t, s.Close())
	_, err = s.SkipBacklog(ctx)
	require.ErrorIs(t, err, ErrClosed)
}
