// Package bench is dbsync's reproducible benchmark: it starts its own PostgreSQL
// cluster (internal/pgtest), builds each workload, runs every contender on copies of
// the same logical replication slot (pg_copy_logical_replication_slot), so all of them
// decode the same WAL, and prints one table of figures and ratios.
//
// Contenders (see docs/BENCHMARKS.md):
//   - limit: one unbounded pg_logical_slot_peek_binary_changes, every row read by the
//     client, nothing decoded;
//   - naive: the original dbsync strategy, peek 8,192 rows then
//     pg_logical_slot_get_binary_changes 8,192, repeated;
//   - streaming: a replication-protocol client (pglogrepl START_REPLICATION) that
//     parses every pgoutput message;
//   - dbsync: a Syncer with default settings whose MessageHandler calls
//     dbsync.DecodeChange on every row change.
package bench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/lib/pq"
)

// Workload names accepted in Config.Workloads.
const (
	WorkloadCatchup  = "catchup"  // (a) backlog catch-up, and its variant with a noisy unpublished table
	WorkloadSteady   = "steady"   // (b) steady writer: commit-to-handler latency, idle CPU
	WorkloadBigTx    = "bigtx"    // (c) one huge transaction: rate and peak Go heap
	WorkloadSnapshot = "snapshot" // (d) chunked read of a big table under a writer vs COPY
)

// AllWorkloads lists every workload in the order Run executes them.
var AllWorkloads = []string{WorkloadCatchup, WorkloadSteady, WorkloadBigTx, WorkloadSnapshot}

// Config selects and sizes the workloads.
type Config struct {
	// Scale multiplies every size and duration (1: the sizes of docs/BENCHMARKS.md:
	// 1,000 x 1,000-row transactions, 1,000,000-row transaction and table, 20 s of
	// steady writes). Values below 1 give a quick run.
	Scale float64
	// Workloads to run (nil: all), see AllWorkloads.
	Workloads []string
	// NaiveTimeout caps the naive contender (its rate is then computed over the rows
	// it read in that time). 0: 60 s.
	NaiveTimeout time.Duration
	// Repeat is how many interleaved rounds of the limit and dbsync contenders run
	// per catch-up workload; the best round is reported. 0: 2.
	Repeat int
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// Result is one line of the table.
type Result struct {
	Workload  string
	Contender string
	Rows      int64         // pgoutput rows (or table rows for snapshot) processed
	Elapsed   time.Duration // wall-clock time to be caught up
	Rate      float64       // rows per second
	Ratio     string        // against the workload's reference (limit, COPY)
	Extra     string        // latency, heap, CPU, notes
	Target    string        // the target this line is judged against, and whether it is met
}

type runner struct {
	cfg     Config
	srv     *pgtest.Server
	log     io.Writer
	results []Result
	seq     int
}

// Run starts a throwaway PostgreSQL cluster, runs the selected workloads and writes
// the table of results to out. It returns the first error that stopped a workload.
func Run(ctx context.Context, out io.Writer, cfg Config) error {
	if cfg.Scale <= 0 {
		cfg.Scale = 1
	}
	if cfg.NaiveTimeout <= 0 {
		cfg.NaiveTimeout = 60 * time.Second
	}
	if cfg.Repeat <= 0 {
		cfg.Repeat = 2
	}
	if len(cfg.Workloads) == 0 {
		cfg.Workloads = AllWorkloads
	}
	for _, w := range cfg.Workloads {
		if !contains(AllWorkloads, w) {
			return fmt.Errorf("bench: unknown workload %q (want one of %s)", w, strings.Join(AllWorkloads, ", "))
		}
	}
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	srv, err := pgtest.Start(pgtest.Options{Settings: []string{
		"timezone = 'UTC'",
		"max_wal_size = 8GB",
		"checkpoint_timeout = 30min",
	}})
	if err != nil {
		return err
	}
	defer srv.Stop()
	r := &runner{cfg: cfg, srv: srv, log: logw}
	start := time.Now()
	r.logf("PostgreSQL %d on %s:%d, scale %g, workloads %s", srv.Version, srv.Host, srv.Port, cfg.Scale, strings.Join(cfg.Workloads, ","))
	var runErr error
	for _, w := range AllWorkloads {
		if !contains(cfg.Workloads, w) {
			continue
		}
		var err error
		switch w {
		case WorkloadCatchup:
			err = r.catchup(ctx)
		case WorkloadSteady:
			err = r.steady(ctx)
		case WorkloadBigTx:
			err = r.bigTx(ctx)
		case WorkloadSnapshot:
			err = r.snapshot(ctx)
		}
		if err != nil {
			runErr = fmt.Errorf("bench: workload %s: %w", w, err)
			r.logf("%v", runErr)
			break
		}
	}
	fmt.Fprintf(out, "dbsync benchmark: %s, scale %g, nproc %d, memory %s, PostgreSQL %d, %s, total %.0f s\n\n",
		time.Now().UTC().Format(time.RFC3339), cfg.Scale, runtime.NumCPU(), memTotal(), srv.Version, runtime.Version(), time.Since(start).Seconds())
	r.print(out)
	return runErr
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (r *runner) add(res Result) {
	if res.Rate == 0 && res.Elapsed > 0 {
		res.Rate = float64(res.Rows) / res.Elapsed.Seconds()
	}
	r.results = append(r.results, res)
	r.logf("%-22s %-16s rows=%d %.2fs %s %s %s %s", res.Workload, res.Contender, res.Rows, res.Elapsed.Seconds(), fmtRate(res.Rate), res.Ratio, res.Extra, res.Target)
}

func (r *runner) print(out io.Writer) {
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "| workload\t| contender\t| rows\t| seconds\t| rows/s\t| ratio\t| extra\t| target\t|")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|---\t|---\t|")
	for _, x := range r.results {
		secs := ""
		if x.Elapsed > 0 {
			secs = fmt.Sprintf("%.2f", x.Elapsed.Seconds())
		}
		rows := ""
		if x.Rows > 0 {
			rows = fmt.Sprint(x.Rows)
		}
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t|\n", x.Workload, x.Contender, rows, secs, fmtRate(x.Rate), x.Ratio, x.Extra, x.Target)
	}
	tw.Flush()
}

func fmtRate(r float64) string {
	switch {
	case r == 0:
		return ""
	case r >= 1e6:
		return fmt.Sprintf("%.2f M", r/1e6)
	case r >= 1e3:
		return fmt.Sprintf("%.1f k", r/1e3)
	}
	return fmt.Sprintf("%.0f", r)
}

func ratio(a, b float64) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// ceiling is the fastest a contender could have gone on this machine at the CPU it
// spent, as a ratio to ref (rows per second): every core (runtime.NumCPU) kept busy
// by the server and this process together, which spent server and self of CPU time
// on rows rows. It is an upper bound, not a forecast: it assumes perfect overlap (and,
// where the callers pass the least CPU times of several rounds, the least of each).
// A target above it cannot be met here without less CPU per row; one below it, by
// better overlap. "" when unknown.
func ceiling(server, self time.Duration, rows int64, ref float64) string {
	cpu := (server + self).Seconds()
	if cpu <= 0 || rows <= 0 || ref <= 0 {
		return ""
	}
	rate := float64(runtime.NumCPU()) * float64(rows) / cpu
	return fmt.Sprintf("ceiling on %d cores at this CPU per row %s", runtime.NumCPU(), ratio(rate, ref))
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (r *runner) scaled(n int, min int) int {
	v := int(math.Round(float64(n) * r.cfg.Scale))
	if v < min {
		v = min
	}
	return v
}

// newDatabase creates a fresh database for one workload and returns its name and a
// lib/pq pool to it.
func (r *runner) newDatabase(ctx context.Context, name string) (string, *sql.DB, error) {
	r.seq++
	name = fmt.Sprintf("bench_%s_%d", name, r.seq)
	admin, err := sql.Open("postgres", r.srv.DSN("postgres"))
	if err != nil {
		return "", nil, err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		return "", nil, err
	}
	db, err := sql.Open("postgres", r.srv.DSN(name))
	if err != nil {
		return "", nil, err
	}
	return name, db, nil
}

// dropDatabase drops a workload's database and its slots, releasing its WAL.
func (r *runner) dropDatabase(name string, db *sql.DB) {
	db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := sql.Open("postgres", r.srv.DSN("postgres"))
	if err != nil {
		return
	}
	defer admin.Close()
	_, _ = admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name)
	for i := 0; i < 50; i++ {
		if _, err := admin.ExecContext(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)")
	_, _ = admin.ExecContext(ctx, "CHECKPOINT")
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "MemTotal:")), "%d", &kb)
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "?"
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return sorted[i]
}

func sortDurations(d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }
