package bench

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
)

// ordersDDL is the realistic published table: bigint key, text, int, numeric,
// timestamptz, jsonb.
const ordersDDL = `CREATE TABLE orders (
	id bigint PRIMARY KEY,
	customer text NOT NULL,
	qty int NOT NULL,
	amount numeric(12,2) NOT NULL,
	created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	attrs jsonb NOT NULL)`

// insertOrders inserts ids $1..$2 into orders in one statement.
const insertOrders = `INSERT INTO orders
	SELECT g, 'customer-' || g, (g % 100)::int, ((g % 100000) / 100.0)::numeric(12,2), clock_timestamp(),
	       jsonb_build_object('sku', 'sku-' || (g % 500), 'tags', jsonb_build_array('a', 'b'), 'n', g)
	FROM generate_series($1::bigint, $2::bigint) g`

const (
	benchSlot = "bench"
	benchPub  = "bench_pub"
)

// prepare creates the workload's database, table(s), publication and master slot
// through dbsync's own setup (NewSyncer with ForTables), before any change is written.
func (r *runner) prepare(ctx context.Context, name string, ddl ...string) (*slots, *sql.DB, *sql.DB, error) {
	dbName, db, err := r.newDatabase(ctx, name)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, q := range ddl {
		if _, err := db.ExecContext(ctx, q); err != nil {
			r.dropDatabase(dbName, db)
			return nil, nil, nil, err
		}
	}
	s, err := dbsync.NewSyncerContext(ctx, dbsync.WithDB(db), dbsync.ForTables("orders"),
		dbsync.WithReplicationSlot(benchSlot), dbsync.WithPublication(benchPub))
	if err != nil {
		r.dropDatabase(dbName, db)
		return nil, nil, nil, fmt.Errorf("dbsync setup: %w", err)
	}
	s.Close()
	pgx, err := sql.Open("pgx", r.srv.DSN(dbName))
	if err != nil {
		r.dropDatabase(dbName, db)
		return nil, nil, nil, err
	}
	return &slots{dbName: dbName, dsn: r.srv.DSN(dbName), pub: benchPub, master: benchSlot}, db, pgx, nil
}

func flushLSN(ctx context.Context, db *sql.DB) (pglogrepl.LSN, error) {
	var s string
	var l pglogrepl.LSN
	if err := db.QueryRowContext(ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&s); err != nil {
		return 0, err
	}
	return l, l.Scan(s)
}

func (r *runner) catchup(ctx context.Context) error {
	txs := r.scaled(1000, 10)
	if err := r.catchupOne(ctx, txs, false); err != nil {
		return err
	}
	return r.catchupOne(ctx, txs, true)
}

// catchupOne is workload (a): txs transactions of 1,000 rows each (with noisy, each
// followed by a 2,000-row transaction on an unpublished table), then every contender
// drains a copy of the slot.
func (r *runner) catchupOne(ctx context.Context, txs int, noisy bool) error {
	wl := fmt.Sprintf("a catch-up %dx1000", txs)
	ddl := []string{ordersDDL}
	if noisy {
		wl += " +noise"
		ddl = append(ddl, `CREATE TABLE noise (id bigint PRIMARY KEY, payload text)`)
	}
	sl, db, pgx, err := r.prepare(ctx, "catchup", ddl...)
	if err != nil {
		return err
	}
	defer r.dropDatabase(sl.dbName, db)
	defer pgx.Close()
	r.logf("%s: writing", wl)
	for i := 0; i < txs; i++ {
		if _, err := db.ExecContext(ctx, insertOrders, i*1000+1, i*1000+1000); err != nil {
			return err
		}
		if noisy {
			if _, err := db.ExecContext(ctx, `INSERT INTO noise SELECT g, repeat('x', 100) FROM generate_series($1::bigint, $2::bigint) g`, i*2000+1, i*2000+2000); err != nil {
				return err
			}
		}
	}
	return r.drainAll(ctx, wl, sl, db, pgx, nil, true, false)
}

// drainAll runs every contender on a copy of the master slot and records the results.
// With tuned (a pgx pool whose sessions set logical_decoding_work_mem to
// tunedDecodingWorkMem), a limit and a dbsync ScanTuple contender also run through it,
// for comparison: not the defaults the targets are judged on.
func (r *runner) drainAll(ctx context.Context, wl string, sl *slots, db, pgx, tuned *sql.DB, naive, heapTarget bool) error {
	// Vacuum and analyze what the workload wrote, and write its dirty buffers out,
	// now: otherwise autovacuum and the checkpointer do it during some contender's
	// measurement (on 2 cores taking CPU from whichever runs then, and adding to its
	// server CPU figure). Their WAL comes before the flush LSN, so every contender
	// decodes it.
	for _, q := range []string{`VACUUM (ANALYZE)`, `CHECKPOINT`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	flush, err := flushLSN(ctx, db)
	if err != nil {
		return err
	}
	var walBytes int64
	if err := db.QueryRowContext(ctx, `SELECT pg_current_wal_flush_lsn() - restart_lsn FROM pg_replication_slots WHERE slot_name = $1`, sl.master).Scan(&walBytes); err != nil {
		return err
	}
	r.logf("%s: %.0f MB of WAL to decode", wl, float64(walBytes)/1e6)

	// Warm-up, not measured: the first read of fresh WAL pays for page-cache misses
	// that would otherwise count against whichever contender runs first.
	{
		slot, err := sl.copySlot(ctx, db, "warmup")
		if err != nil {
			return err
		}
		_, _, err = runLimit(ctx, db, slot, sl.pub)
		dropSlot(db, slot)
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	// A limit reader, and a dbsync contender, through one pool. tuned: a pool with a
	// larger logical_decoding_work_mem, reported for comparison; it neither sets the
	// limit rate nor gets a target verdict.
	type reader struct {
		name  string
		db    *sql.DB
		tuned bool
	}
	type syncer struct {
		reader
		scan bool // the ScanTuple handler (typed variables, no map); else DecodeChange
	}
	drivers := []reader{{"lib/pq", db, false}, {"pgx", pgx, false}}
	// dbsync contenders: the DecodeChange handler and the ScanTuple handler through
	// both drivers.
	syncers := []syncer{{drivers[0], false}, {drivers[1], false},
		{reader{"lib/pq, ScanTuple handler", db, false}, true}, {reader{"pgx, ScanTuple handler", pgx, false}, true}}
	if tuned != nil {
		tunedName := "logical_decoding_work_mem " + tunedDecodingWorkMem
		drivers = append(drivers, reader{"pgx, " + tunedName, tuned, true})
		syncers = append(syncers, syncer{reader{"pgx, ScanTuple handler, " + tunedName, tuned, true}, true})
	}
	// best is a contender's best round: the least elapsed time and, separately, the
	// least CPU time of the server (all its processes) and of this process, and the
	// largest peak heap.
	type best struct {
		el, server, self time.Duration
		heap             uint64
	}
	limits := make([]best, len(drivers))
	dbs := make([]best, len(syncers))
	pm, err := postmasterPID(r.srv.DataDir())
	if err != nil {
		return err
	}
	least := func(d *time.Duration, v time.Duration) {
		if *d == 0 || v < *d {
			*d = v
		}
	}
	keep := func(b *best, el, server, self time.Duration, heap uint64) {
		least(&b.el, el)
		least(&b.server, server)
		least(&b.self, self)
		if heap > b.heap {
			b.heap = heap
		}
	}
	// cpu measures the server's and this process's CPU time over f.
	cpu := func(f func() error) (server, self time.Duration, err error) {
		s0, g0 := serverCPU(pm), selfCPU()
		err = f()
		return serverCPU(pm) - s0, selfCPU() - g0, err
	}
	// perRow gives a contender's CPU time per row read.
	perRow := func(b best, rows int64) string {
		us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(rows) }
		return fmt.Sprintf("CPU per row (least of %d): server %.2f µs, this process %.2f µs", r.cfg.Repeat, us(b.server), us(b.self))
	}
	var ref stream
	// The decode path (catch-up workloads only): one round with each handler after
	// each round of the contenders and one after all of them, so that its rounds are
	// spread over the workload like theirs.
	var dp *decodePaths
	if !heapTarget {
		dp = r.newDecodePaths(sl, db)
	}
	// limit and dbsync, with both drivers, interleaved, best of cfg.Repeat rounds
	// (the machine may be shared: the best round is the least disturbed one).
	for round := 0; round < r.cfg.Repeat; round++ {
		for i, d := range drivers {
			slot, err := sl.copySlot(ctx, db, "limit")
			if err != nil {
				return err
			}
			var st stream
			var el time.Duration
			server, self, err := cpu(func() (err error) {
				st, el, err = runLimit(ctx, d.db, slot, sl.pub)
				return err
			})
			dropSlot(db, slot)
			if err != nil {
				return fmt.Errorf("limit (%s): %w", d.name, err)
			}
			if ref.rows != 0 && st != ref {
				return fmt.Errorf("%w: limit read %+v with %s, %+v before", errMismatch, st, d.name, ref)
			}
			if st.lastCommit == 0 {
				return fmt.Errorf("the slot returned no COMMIT: nothing to measure")
			}
			ref = st
			keep(&limits[i], el, server, self, 0)
		}
		for i, d := range syncers {
			slot, err := sl.copySlot(ctx, db, "dbsync")
			if err != nil {
				return err
			}
			var h *handler
			var el time.Duration
			var heap uint64
			server, self, err := cpu(func() (err error) {
				h, el, heap, err = runDbsync(ctx, d.db, slot, sl.pub, ref.lastCommit, flush, 5*time.Minute, d.scan)
				return err
			})
			dropSlot(db, slot)
			if err != nil {
				return fmt.Errorf("dbsync (%s): %w", d.name, err)
			}
			if h.changes.Load() != ref.changes {
				return fmt.Errorf("%w: dbsync (%s) decoded %d changes, limit read %d", errMismatch, d.name, h.changes.Load(), ref.changes)
			}
			keep(&dbs[i], el, server, self, heap)
		}
		if err := dp.round(ctx); err != nil {
			return err
		}
	}
	limitRate := 0.0
	for i, d := range drivers {
		if !d.tuned {
			limitRate = max(limitRate, float64(ref.rows)/limits[i].el.Seconds())
		}
	}
	for i, d := range drivers {
		res := Result{Workload: wl, Contender: "limit (" + d.name + ")", Rows: ref.rows, Elapsed: limits[i].el,
			Extra: fmt.Sprintf("%d changes, %.0f MB WAL; best of %d; %s", ref.changes, float64(walBytes)/1e6, r.cfg.Repeat, perRow(limits[i], ref.rows))}
		if d.tuned {
			// Against the limit with PostgreSQL's defaults, which the other ratios use.
			rate := float64(ref.rows) / limits[i].el.Seconds()
			res.Rate, res.Ratio = rate, ratio(rate, limitRate)
			res.Extra = "not the default, for comparison; " + res.Extra
		}
		r.add(res)
	}

	if naive {
		slot, err := sl.copySlot(ctx, db, "naive")
		if err != nil {
			return err
		}
		rows, el, partial, err := runNaive(ctx, db, slot, sl.pub, r.cfg.NaiveTimeout)
		dropSlot(db, slot)
		if err != nil {
			return fmt.Errorf("naive: %w", err)
		}
		extra := ""
		if partial {
			extra = fmt.Sprintf("stopped after %s, %d of %d rows", r.cfg.NaiveTimeout, rows, ref.rows)
		}
		rate := float64(rows) / el.Seconds()
		r.add(Result{Workload: wl, Contender: "naive (lib/pq)", Rows: rows, Elapsed: el, Rate: rate, Ratio: ratio(rate, limitRate), Extra: extra})
	}

	// streaming: pg_recvlogical, and a pglogrepl client that parses every message
	var streamRate float64
	{
		slot, err := sl.copySlot(ctx, db, "recvlogical")
		if err != nil {
			return err
		}
		el, err := runRecvlogical(ctx, r.srv.BinPath("pg_recvlogical"), r.srv.URL(sl.dbName), slot, sl.pub, ref.lastCommit)
		dropSlot(db, slot)
		if err != nil {
			return err
		}
		rate := float64(ref.rows) / el.Seconds()
		streamRate = max(streamRate, rate)
		r.add(Result{Workload: wl, Contender: "streaming (pg_recvlogical)", Rows: ref.rows, Elapsed: el, Rate: rate, Ratio: ratio(rate, limitRate),
			Extra: "to /dev/null"})
	}
	{
		slot, err := sl.copySlot(ctx, db, "stream")
		if err != nil {
			return err
		}
		c := &streamClient{}
		start := time.Now()
		err = c.run(ctx, sl.dsn, slot, sl.pub, func(m *pglogrepl.CommitMessage) bool { return m.TransactionEndLSN >= ref.lastCommit })
		el := time.Since(start)
		dropSlot(db, slot)
		if err != nil {
			return fmt.Errorf("streaming: %w", err)
		}
		if c.changes.Load() != ref.changes {
			return fmt.Errorf("%w: streaming got %d changes, limit %d", errMismatch, c.changes.Load(), ref.changes)
		}
		rate := float64(ref.rows) / el.Seconds()
		streamRate = max(streamRate, rate)
		r.add(Result{Workload: wl, Contender: "streaming (pglogrepl)", Rows: ref.rows, Elapsed: el, Rate: rate, Ratio: ratio(rate, limitRate),
			Extra: "parses every message"})
	}

	// catchupRate is the faster driver's catch-up rate with each handler.
	catchupRate := map[bool]float64{}
	for i, d := range syncers {
		rate := float64(ref.rows) / dbs[i].el.Seconds()
		if !d.tuned {
			catchupRate[d.scan] = max(catchupRate[d.scan], rate)
		}
		target := ">=0.8x limit, > streaming: " + verdict(rate >= 0.8*limitRate && rate > streamRate)
		if heapTarget {
			target = "peak heap < 64 MiB: " + verdict(dbs[i].heap < 64<<20)
		}
		extra := fmt.Sprintf("peak heap %s, %s vs best streaming; best of %d; %s; %s", mib(dbs[i].heap), ratio(rate, streamRate), r.cfg.Repeat,
			perRow(dbs[i], ref.rows), ceiling(dbs[i].server, dbs[i].self, ref.rows, limitRate))
		if d.tuned {
			extra, target = "not the default, for comparison; "+extra, ""
		}
		r.add(Result{Workload: wl, Contender: "dbsync (" + d.name + ")", Rows: ref.rows, Elapsed: dbs[i].el, Rate: rate, Ratio: ratio(rate, limitRate),
			Extra: extra, Target: target})
	}
	if dp == nil {
		return nil
	}
	if err := dp.round(ctx); err != nil {
		return err
	}
	dp.report(r, wl, limitRate, catchupRate)
	return nil
}
