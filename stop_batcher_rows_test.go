package dbsync

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// cancelAtFirstCommit is a MessageHandler that ends Run's context at the first COMMIT
// it takes.
type cancelAtFirstCommit struct {
	DefaultMessageHandler
	cancel  atomic.Pointer[context.CancelFunc]
	commits atomic.Int64
}

func (h *cancelAtFirstCommit) HandleCommitMessage(int, *pglogrepl.CommitMessage) error {
	if h.commits.Add(1) == 1 {
		if c := h.cancel.Load(); c != nil {
			(*c)()
		}
	}
	return nil
}

// TestStopMidPollBatcherExactlyTaken: Run's context ends at the first transaction's
// COMMIT while the second one's rows are queued in the same poll. The Batcher gets the
// first transaction (its COMMIT was taken), the slot moves past it and no further,
// and the next run hands the second one over whole: nothing skipped, nothing twice.
func TestStopMidPollBatcherExactlyTaken(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t1 (id int PRIMARY KEY, v text)`)
	h := &cancelAtFirstCommit{}
	s := newTestSyncer(t, d, ForTables("t1"), WithMessageHandler(h))
	b := &recBatcher{}
	s.Batcher = b
	execAll(t, d.DB, `INSERT INTO t1 VALUES (1, 'a')`, `INSERT INTO t1 SELECT g, 'b' FROM generate_series(2, 5) g`)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel.Store(&cancel)
	require.NoError(t, s.Run(ctx))
	require.Equal(t, int64(1), h.commits.Load(), "no row handed over after the stop")
	require.Equal(t, []string{`upsert public.t1 ["1"] map[id:1 v:a]`}, b.opList())

	h.cancel.Store(nil)
	r := runInBackground(s)
	r.waitFor(t, 30*time.Second, func() bool { return len(b.opList()) == 5 }, "the second transaction")
	catchUp(t, s)
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{`upsert public.t1 ["1"] map[id:1 v:a]`,
		`upsert public.t1 ["2"] map[id:2 v:b]`, `upsert public.t1 ["3"] map[id:3 v:b]`,
		`upsert public.t1 ["4"] map[id:4 v:b]`, `upsert public.t1 ["5"] map[id:5 v:b]`}, b.opList())
	require.Equal(t, int64(2), h.commits.Load())
}
