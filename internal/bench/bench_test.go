package bench

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestRunCatchupTiny runs the catch-up workload at a tiny scale: every contender must
// drain the same rows (Run fails on any disagreement) and appear in the table.
func TestRunCatchupTiny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := Run(ctx, &out, Config{Scale: 0.005, Workloads: []string{WorkloadCatchup}, Repeat: 1})
	require.NoError(t, err, out.String())
	table := out.String()
	for _, c := range []string{"limit (lib/pq)", "limit (pgx)", "naive (lib/pq)", "streaming (pg_recvlogical)", "streaming (pglogrepl)", "dbsync (lib/pq)", "dbsync (pgx)",
		"decode path, one core (DecodeChange handler)", "decode path, one core (ScanTuple handler)"} {
		require.Equal(t, 2, strings.Count(table, "| "+c), "%s: once per catch-up variant in\n%s", c, table)
	}
	require.Contains(t, table, "| a catch-up 10x1000 +noise")
	// Every dbsync row says how far this machine's cores allow it to go at its CPU
	// cost per row.
	for _, line := range strings.Split(table, "\n") {
		if strings.Contains(line, "| dbsync (") {
			require.Regexp(t, `ceiling on \d+ cores at this CPU per row \d+\.\d\dx`, line)
		}
	}
}

// TestRunBigTxTiny runs the big-transaction workload at a tiny scale: both sizes, every
// contender, and the contenders through a pool with a larger logical_decoding_work_mem
// reported for comparison only (no target verdict on them; the others keep theirs).
func TestRunBigTxTiny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := Run(ctx, &out, Config{Scale: 0.01, Workloads: []string{WorkloadBigTx}, Repeat: 1, NaiveTimeout: time.Second})
	require.NoError(t, err, out.String())
	table := out.String()
	tuned := "logical_decoding_work_mem " + tunedDecodingWorkMem
	var rows, tunedRows int
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| c one tx of ") {
			continue
		}
		cells := strings.Split(line, "|")
		require.Len(t, cells, 10, line)
		contender, extra, target := strings.TrimSpace(cells[2]), cells[7], strings.TrimSpace(cells[8])
		rows++
		switch {
		case strings.Contains(contender, tuned):
			tunedRows++
			require.Contains(t, extra, "not the default, for comparison", line)
			require.Empty(t, target, line)
			require.Regexp(t, `\d\.\d\dx`, cells[6], "a tuned row's ratio is against the default limit: %s", line)
		case strings.HasPrefix(contender, "dbsync ("):
			require.Equal(t, "peak heap < 64 MiB: met", target, line)
		}
	}
	// Per size: 3 limits, naive, 2 streaming, 5 dbsync.
	require.Equal(t, 2*11, rows, table)
	require.Equal(t, 2*2, tunedRows, table)
}

func TestCeiling(t *testing.T) {
	n := runtime.NumCPU()
	// n cores, 2 µs + 3 µs of CPU per row: at most n/5 M rows/s; against 0.4n M rows/s,
	// half of it.
	require.Equal(t, fmt.Sprintf("ceiling on %d cores at this CPU per row 0.50x", n),
		ceiling(2*time.Second, 3*time.Second, 1000000, 0.4e6*float64(n)))
	require.Equal(t, "", ceiling(0, 0, 1000000, 1e6))
	require.Equal(t, "", ceiling(time.Second, 0, 0, 1e6))
	require.Equal(t, "", ceiling(time.Second, 0, 10, 0))
}

// TestServerCPUAcrossEndedBackends reads serverCPU without pause while backends that
// each used ~0.2 s of CPU end, three at a time: the reading must never fall by more
// than the ticks' rounding of the ended ones (~10 ms each). Before the fix, a backend
// reaped during a scan of /proc was lost from that reading (drops of 0.2 s and more,
// one impossible figure in runs 18 and 22).
func TestServerCPUAcrossEndedBackends(t *testing.T) {
	srv := pgtest.Shared(t)
	pm, err := postmasterPID(srv.DataDir())
	require.NoError(t, err)
	done := make(chan struct{})
	drops := make(chan time.Duration, 1)
	go func() {
		var most time.Duration
		prev := serverCPU(pm)
		for {
			select {
			case <-done:
				drops <- most
				return
			default:
			}
			cur := serverCPU(pm)
			most = max(most, prev-cur)
			prev = cur
		}
	}()
	for round := 0; round < 10; round++ {
		db, err := sql.Open("postgres", srv.DSN("postgres"))
		require.NoError(t, err)
		var wg sync.WaitGroup
		for j := 0; j < 3; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var n int64
				assert.NoError(t, db.QueryRow(`SELECT count(*) FROM generate_series(1, 2000000)`).Scan(&n))
			}()
		}
		wg.Wait()
		require.NoError(t, db.Close())
	}
	close(done)
	most := <-drops
	t.Logf("largest fall between two readings: %v", most)
	require.Less(t, most, 50*time.Millisecond)
}

func TestPercentile(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3}
	sortDurations(d)
	require.Equal(t, time.Duration(3), percentile(d, 50))
	require.Equal(t, time.Duration(5), percentile(d, 99))
	require.Equal(t, time.Duration(1), percentile(d, 0))
	require.Equal(t, time.Duration(0), percentile(nil, 50))
}
