// Package demo is `dbsync demo`: it creates demo tables, runs concurrent writers
// against them, keeps an in-memory copy (handlers.Cache) up to date through a Syncer,
// waits until the slot caught up, and compares the copy with the tables row by row.
//
// The demo uses its own slot, publication, control schema and table schema (see the
// Default* constants) and removes all of them at the end, so it never touches the
// slot a real consumer configured with DBSYNC_REPLSLOT.
package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/handlers"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
)

// Names the demo creates (and drops at the end).
const (
	DefaultSchema        = "dbsync_demo"
	DefaultSlot          = "dbsync_demo_slot"
	DefaultPublication   = "dbsync_demo_pub"
	DefaultCtrlNamespace = "dbsync_demo_ctrl"
)

// Tables are the demo tables, in DefaultSchema: accounts has a bigint key, order_lines
// a composite key (order_id, line_no), documents a large text column stored out of
// line (STORAGE EXTERNAL) that updates often leave unchanged, so changes carry
// unchanged-TOAST ('u') columns.
var Tables = []string{"accounts", "order_lines", "documents"}

// Config sets up one demo run. The zero value is valid: a throwaway cluster, 4
// writers for 8 seconds.
type Config struct {
	// ConnStr is the database to use. Empty: POSTGRES_* when POSTGRES_HOST is set,
	// otherwise a throwaway cluster started with pgtest.Start and stopped at the end.
	ConnStr string
	// Writers is the number of concurrent writer goroutines (default 4).
	Writers int
	// Duration is how long the writers run (default 8s).
	Duration time.Duration
	// MaxTxPerWriter stops each writer after this many transactions (0: no limit).
	MaxTxPerWriter int
	// KeysPerWriter is the key range each writer draws from per table (default 300).
	KeysPerWriter int
	// Seed makes the writers' choices reproducible (0: random).
	Seed uint64

	// SeedRows inserts this many rows per table BEFORE the slot exists. They can only
	// reach the cache through a snapshot: Rebuild.
	SeedRows int
	// Rebuild is called after the slot was created and the Syncer started, while
	// writers run, to load the rows that existed before the slot into cache. nil with
	// SeedRows > 0 means the default: a chunked DBLog snapshot (Syncer.Snapshot) of
	// every demo table, delivered through HandleRefresh.
	Rebuild func(ctx context.Context, s *dbsync.Syncer, cache *handlers.Cache, tables []string) error

	// Progress receives a progress line about once a second (nil: none).
	Progress io.Writer
	// Logger receives the Syncer's log (nil: discarded).
	Logger *slog.Logger
}

// Result is what a demo run found.
type Result struct {
	// Rows is the number of rows in the tables at the end, Tables the number of tables.
	Rows, Tables int
	// Mismatches counts rows missing from the copy, extra in it, or different.
	Mismatches int
	// Details describes up to 20 mismatches.
	Details []string
	// Committed and RolledBack count the writers' transactions.
	Committed, RolledBack int64
	// Cache is what the copy applied (changes, unchanged TOAST values kept, key changes).
	Cache handlers.CacheStats
	// Elapsed is the whole run's duration.
	Elapsed time.Duration
}

// Line is the demo's final line: "demo: <N> rows in <T> tables, <M> mismatches".
func (r Result) Line() string {
	return fmt.Sprintf("demo: %d rows in %d tables, %d mismatches", r.Rows, r.Tables, r.Mismatches)
}

func (c *Config) defaults() {
	if c.Writers <= 0 {
		c.Writers = 4
	}
	if c.Duration <= 0 {
		c.Duration = 8 * time.Second
	}
	if c.KeysPerWriter <= 0 {
		c.KeysPerWriter = 300
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Run runs the demo. The error is about the run itself (connection, setup, a writer
// or the Syncer failing); mismatches are reported in the Result.
func Run(ctx context.Context, cfg Config) (res Result, err error) {
	start := time.Now()
	cfg.defaults()
	if cfg.SeedRows > 0 && cfg.Rebuild == nil {
		cfg.Rebuild = SnapshotRebuild
	}
	connStr := cfg.ConnStr
	if connStr == "" {
		if v, ok := os.LookupEnv(dbsync.EnvPostgresHost); ok && v != "" {
			connStr = dbsync.ConnStringFromEnv(nil)
		} else {
			fmt.Fprintln(cfg.Progress, "demo: POSTGRES_HOST is not set: starting a throwaway PostgreSQL")
			srv, err := pgtest.Start(pgtest.Options{})
			if err != nil {
				return res, fmt.Errorf("demo: start a throwaway PostgreSQL: %w", err)
			}
			defer srv.Stop()
			connStr = srv.DSN("postgres")
		}
	}
	fmt.Fprintf(cfg.Progress, "demo: database %s\n", dbsync.RedactConnString(connStr))
	db, err := sql.Open("postgres", connStr)
	if err != nil {
		return res, fmt.Errorf("demo: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(cfg.Writers + 6)

	if err := createTables(ctx, db); err != nil {
		return res, err
	}
	// Until the Syncer exists (its deferred cleanup tears down the slot), an
	// interrupted or failed run drops what it created so far: the tables, and the
	// publication and control schema a setup cut short made (a cancelled slot
	// creation leaves no slot).
	var s *dbsync.Syncer
	defer func() {
		if s == nil {
			if terr := cleanup(db, nil); terr != nil && err == nil {
				err = terr
			}
		}
	}()
	if cfg.SeedRows > 0 {
		if err := seed(ctx, db, cfg.SeedRows); err != nil {
			return res, err
		}
	}
	qualified := make([]string, len(Tables))
	for i, t := range Tables {
		qualified[i] = DefaultSchema + "." + t
	}
	cache := handlers.NewCache()
	opts := []dbsync.SyncerOpt{dbsync.WithPGConnStr(connStr), dbsync.ForTables(qualified...),
		dbsync.WithReplicationSlot(DefaultSlot), dbsync.WithPublication(DefaultPublication),
		dbsync.WithCtrlNamespace(DefaultCtrlNamespace), dbsync.WithWMTable(dbsync.DefaultWMTable), dbsync.WithMessageHandler(cache),
		dbsync.WithPollBackoff(10*time.Millisecond, 1.5, 200*time.Millisecond)}
	if cfg.Logger != nil {
		opts = append(opts, dbsync.WithLogger(cfg.Logger))
	}
	made, err := dbsync.NewSyncerContext(ctx, opts...)
	if err != nil {
		return res, fmt.Errorf("demo: set up the syncer: %w", err)
	}
	s = made
	defer func() {
		s.Stop()
		if terr := cleanup(db, s); terr != nil && err == nil {
			err = terr
		}
		s.Close()
	}()

	runCtx, stopSyncer := context.WithCancel(ctx)
	defer stopSyncer()
	syncErr := make(chan error, 1)
	go func() { syncErr <- s.Run(runCtx) }()

	// Writers.
	var committed, rolledBack atomic.Int64
	wctx, stopWriters := context.WithTimeout(ctx, cfg.Duration)
	defer stopWriters()
	var wg sync.WaitGroup
	writerErr := make(chan error, cfg.Writers+1)
	for w := 0; w < cfg.Writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			wr := &writer{db: db, id: w, n: cfg.Writers, keys: cfg.KeysPerWriter,
				rng: rand.New(rand.NewPCG(cfg.Seed, uint64(w))), committed: &committed, rolledBack: &rolledBack}
			if err := wr.run(wctx, cfg.MaxTxPerWriter); err != nil {
				writerErr <- err
				stopWriters()
			}
		}(w)
	}
	// The rebuild (a snapshot of the seeded rows) runs while the writers write.
	rebuildDone := make(chan error, 1)
	rebuilding := cfg.Rebuild != nil
	if rebuilding {
		go func() { rebuildDone <- cfg.Rebuild(ctx, s, cache, qualified) }()
	}

	// Progress while the writers run: at once, then about once a second.
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	progress := func(phase string) {
		st := cache.Stats()
		lag := "?"
		if ss, err := s.Status(ctx); err == nil {
			lag = fmt.Sprint(ss.LagBytes)
		}
		fmt.Fprintf(cfg.Progress, "demo: %-9s %5.1fs  committed %d txns (%d rolled back)  synced %d txns, %d changes, %d snapshot rows  lag %s bytes\n",
			phase, time.Since(start).Seconds(), committed.Load(), rolledBack.Load(), st.Transactions, st.Changes, st.Refreshes, lag)
	}
	phase := func() string {
		if rebuilding {
			return "snapshot"
		}
		return "writing"
	}
	progress(phase())
	writing := true
	for writing || rebuilding {
		select {
		case <-writersDone:
			writing = false
			writersDone = nil
		case err := <-rebuildDone:
			rebuilding = false
			if err != nil {
				stopWriters()
				wg.Wait()
				return res, fmt.Errorf("demo: rebuild: %w", err)
			}
		case err := <-syncErr:
			stopWriters()
			wg.Wait()
			return res, syncerStopped(ctx, err)
		case <-tick.C:
			progress(phase())
		}
	}
	select {
	case err := <-writerErr:
		return res, err
	default:
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}

	// Caught up: the slot has confirmed everything flushed after the writers stopped.
	target, err := s.CurrentFlushLSN(ctx)
	if err != nil {
		return res, fmt.Errorf("demo: read flush LSN: %w", err)
	}
	fmt.Fprintf(cfg.Progress, "demo: writers stopped; waiting for the slot to confirm %s\n", target)
	s.Wake()
	deadline := time.Now().Add(45 * time.Second)
	for {
		st, err := s.Status(ctx)
		if err != nil {
			return res, fmt.Errorf("demo: read slot status: %w", err)
		}
		if st.ConfirmedFlushLSN >= target {
			break
		}
		select {
		case err := <-syncErr:
			return res, syncerStopped(ctx, err)
		case <-tick.C:
			progress("catch-up")
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("demo: the slot did not catch up with %s within 45s", target)
		}
	}
	stopSyncer()
	if err := <-syncErr; err != nil {
		return res, fmt.Errorf("demo: syncer: %w", err)
	}
	progress("caught up")

	rows, mismatches, details, err := Compare(ctx, db, s, cache, qualified)
	if err != nil {
		return res, err
	}
	res = Result{Rows: rows, Tables: len(qualified), Mismatches: mismatches, Details: details,
		Committed: committed.Load(), RolledBack: rolledBack.Load(), Cache: cache.Stats(), Elapsed: time.Since(start)}
	return res, nil
}

// syncerStopped explains why the Syncer's Run returned before the demo stopped it.
func syncerStopped(ctx context.Context, err error) error {
	if err == nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("demo: the syncer stopped unexpectedly")
	}
	return fmt.Errorf("demo: syncer stopped: %w", err)
}

// cleanup removes everything the demo created: the slot, watermark table and control
// schema (Teardown), the publication and the demo schema. A forgotten slot would
// retain WAL forever. With s nil (no Syncer was made: setup was cut short, which
// leaves no slot) it drops the control schema's tables and the schema directly.
func cleanup(db *sql.DB, s *dbsync.Syncer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	var res dbsync.TeardownResult
	var err error
	if s != nil {
		res, err = s.TeardownWithResult(ctx)
	}
	if err != nil {
		errs = append(errs, err)
	} else if s == nil || res.Kept() {
		// Teardown keeps a control schema other slots of the database may use; the
		// demo's is its own (DefaultCtrlNamespace), so it goes, without CASCADE.
		ns := pq.QuoteIdentifier(DefaultCtrlNamespace)
		for _, stmt := range []string{
			"DROP TABLE IF EXISTS " + ns + "." + pq.QuoteIdentifier(dbsync.DefaultWMTable) + ", " + ns + "." + pq.QuoteIdentifier("snapshot_progress"),
			"DROP SCHEMA IF EXISTS " + ns,
		} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	if _, err := db.ExecContext(ctx, "DROP PUBLICATION IF EXISTS "+pq.QuoteIdentifier(DefaultPublication)); err != nil {
		errs = append(errs, err)
	}
	if _, err := db.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+pq.QuoteIdentifier(DefaultSchema)+" CASCADE"); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("demo: cleanup: %w", err)
	}
	return nil
}

func createTables(ctx context.Context, db *sql.DB) error {
	sch := pq.QuoteIdentifier(DefaultSchema)
	// Leftovers of an interrupted run: drop its slot first (it would retain WAL).
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, DefaultSlot).Scan(&n); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if n > 0 {
		if _, err := db.ExecContext(ctx, `SELECT pg_drop_replication_slot($1)`, DefaultSlot); err != nil {
			return fmt.Errorf("demo: drop the slot of an earlier run: %w", err)
		}
	}
	stmts := []string{
		"DROP PUBLICATION IF EXISTS " + pq.QuoteIdentifier(DefaultPublication),
		"DROP SCHEMA IF EXISTS " + sch + " CASCADE",
		"CREATE SCHEMA " + sch,
		"CREATE TABLE " + sch + `.accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL, flags int[], updated_at timestamptz)`,
		"CREATE TABLE " + sch + `.order_lines (order_id int, line_no int, sku text NOT NULL, qty int NOT NULL, note text, PRIMARY KEY (order_id, line_no))`,
		"CREATE TABLE " + sch + `.documents (id int PRIMARY KEY, title text NOT NULL, version int NOT NULL, body text)`,
		"ALTER TABLE " + sch + `.documents ALTER COLUMN body SET STORAGE EXTERNAL`,
	}
	for _, st := range stmts {
		if _, err := db.ExecContext(ctx, st); err != nil {
			return fmt.Errorf("demo: create tables: %s: %w", st, err)
		}
	}
	return nil
}

// seed inserts n rows per table (before the slot exists).
func seed(ctx context.Context, db *sql.DB, n int) error {
	sch := pq.QuoteIdentifier(DefaultSchema)
	for _, st := range []string{
		"INSERT INTO " + sch + `.accounts SELECT -g, 'seed', g, NULL, now() FROM generate_series(1, $1) g`,
		"INSERT INTO " + sch + `.order_lines SELECT -g, 1, 'seed', 1, NULL FROM generate_series(1, $1) g`,
		"INSERT INTO " + sch + `.documents SELECT -g, 'seed', 0, repeat(md5(g::text), 100) FROM generate_series(1, $1) g`,
	} {
		if _, err := db.ExecContext(ctx, st, n); err != nil {
			return fmt.Errorf("demo: seed: %w", err)
		}
	}
	return nil
}

// bigText returns an incompressible-looking text of about n bytes.
func bigText(rng *rand.Rand, n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
	var b strings.Builder
	b.Grow(n)
	for i := 0; i < n; i++ {
		b.WriteByte(alphabet[rng.IntN(len(alphabet))])
	}
	return b.String()
}

// SnapshotRebuild loads every row of tables into the cache with a chunked, lock-free
// DBLog snapshot while the Syncer streams changes (Syncer.Snapshot). Chunks are
// small (DemoChunkSize) so that many windows interleave with the writers.
func SnapshotRebuild(ctx context.Context, s *dbsync.Syncer, _ *handlers.Cache, tables []string) error {
	s.SnapshotChunkSize = DemoChunkSize
	return s.Snapshot(ctx, tables...)
}

// DemoChunkSize is the snapshot chunk size of the demo's rebuild.
const DemoChunkSize = 500
