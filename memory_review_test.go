package dbsync

import (
	"database/sql"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// heapPeak samples the Go heap (bytes of heap objects, live and not yet collected, as
// the benchmark measures it) every millisecond until stop, which returns the largest.
func heapPeak() (stop func() uint64) {
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak }
}

// slowInserts takes delay over each insert, as a handler writing to a slow store
// would, and counts the inserts and their bytes of column data.
type slowInserts struct {
	DefaultMessageHandler
	delay    time.Duration
	n, bytes atomic.Int64
}

func (h *slowInserts) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, _ *pglogrepl.RelationMessage, _ *PGTableInfo) error {
	time.Sleep(h.delay)
	for _, c := range m.Tuple.Columns {
		h.bytes.Add(int64(len(c.Data)))
	}
	h.n.Add(1)
	return nil
}

// TestBacklogOfLargeRowsHeapBounded: a backlog of 3,000 rows of 100 KB (300 MB of row
// data; the value compresses, so its WAL is small) drained by a handler that takes
// 2 ms a row, through lib/pq and pgx, in one peek or split in two. The poller parses
// far faster than the handler takes rows; what it holds meanwhile must be bounded in
// bytes. Before, the peak heap was 250-370 MiB (the same with 6,000 rows): the
// reader's queue was bounded only in rows (up to 6 batches of 256 rows: 150 MB of
// these), and the parser's slabs kept the data of every row parsed from them alive
// while one of them was referenced (256 rows of this two-column table: 25 MB).
func TestBacklogOfLargeRowsHeapBounded(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		for _, split := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/split=%v", driver, split), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE TABLE wide (id int PRIMARY KEY, body text)`)
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				h := &slowInserts{delay: 2 * time.Millisecond}
				s := newTestSyncer(t, d, WithDB(db), ForTables("wide"), WithMessageHandler(h))
				if split {
					s.splitMinWAL = 1
				}
				const rows, size = 3000, 102400
				execAll(t, d.DB, fmt.Sprintf(`INSERT INTO wide SELECT i, repeat(md5(i::text), %d) FROM generate_series(1, %d) i`, size/32, rows))
				runtime.GC()
				stop := heapPeak()
				r := runInBackground(s)
				defer r.stop(t)
				waitFor(t, 2*time.Minute, func() bool { return h.n.Load() == rows }, "%d inserts", rows)
				peak := stop()
				t.Logf("peak heap %.1f MiB for %d rows of %d bytes", float64(peak)/(1<<20), rows, size)
				want := int64(0)
				for i := 1; i <= rows; i++ {
					want += int64(size + len(fmt.Sprint(i)))
				}
				require.Equal(t, want, h.bytes.Load(), "every row delivered whole")
				require.Equal(t, split, s.splitPeeks.Load() > 0, "split peeks")
				require.Less(t, peak, uint64(48<<20), "peak heap %d MiB", peak>>20)
			})
		}
	}
}
