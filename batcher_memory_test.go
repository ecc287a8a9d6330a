package dbsync

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// countBatcher counts the docs it gets and their calls, and keeps nothing.
type countBatcher struct{ docs, calls atomic.Int64 }

func (b *countBatcher) BatchUpsert(_ string, docs map[string]StringMap) (any, error) {
	b.docs.Add(int64(len(docs)))
	b.calls.Add(1)
	return nil, nil
}
func (b *countBatcher) BatchDelete(string, []string) (any, error) { return nil, nil }

// TestBatcherMemoryBoundedByMaxMessages: what the Batcher docs say about memory. A
// poll's net effect is held until the Batcher gets it, and one poll takes the whole
// backlog (60 transactions of 100 rows of 100 KB: 600 MB of values, which compress,
// so their WAL is small); WithMaxMessagesToRead(300) ends each poll at the first
// transaction's end after 300 rows, so the heap stays at a few transactions' rows.
func TestBatcherMemoryBoundedByMaxMessages(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE wide (id int PRIMARY KEY, body text)`)
	b := &countBatcher{}
	s := newTestSyncer(t, d, ForTables("wide"), WithMaxMessagesToRead(300))
	s.Batcher = b
	const txs, perTx, size = 60, 100, 102400
	for i := 0; i < txs; i++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO wide SELECT i, repeat(md5(i::text), %d) FROM generate_series(%d, %d) i`, size/32, i*perTx+1, i*perTx+perTx))
	}
	runtime.GC()
	stop := heapPeak()
	r := runInBackground(s)
	defer r.stop(t)
	waitFor(t, 2*time.Minute, func() bool { return b.docs.Load() == txs*perTx }, "%d upserts", txs*perTx)
	peak := stop()
	t.Logf("peak heap %.1f MiB, %d BatchUpsert calls", float64(peak)/(1<<20), b.calls.Load())
	// 102 rows a transaction (BEGIN, 100 inserts, COMMIT): a poll ends after the
	// third transaction, at 306 rows.
	require.Equal(t, int64(txs/3), b.calls.Load())
	require.Less(t, peak, uint64(128<<20), "peak heap %d MiB", peak>>20)
}
