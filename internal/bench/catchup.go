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
	return r.drainAll(ctx, wl, sl, db, pgx, true, false)
}

// drainAll runs every contender on a copy of the master slot and records the results.
func (r *runner) drainAll(ctx context.Context, wl string, sl *slots, db, pgx *sql.DB, naive, heapTarget bool) error {
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
	// limit, with both drivers
	var ref stream
	var limitRate float64
	for _, d := range []struct {
		name string
		db   *sql.DB
	}{{"lib/pq", db}, {"pgx", pgx}} {
		slot, err := sl.copySlot(ctx, db, "limit")
		if err != nil {
			return err
		}
		st, el, err := runLimit(ctx, d.db, slot, sl.pub)
		dropSlot(db, slot)
		if err != nil {
			return fmt.Errorf("limit (%s): %w", d.name, err)
		}
		if ref.rows != 0 && st.rows != ref.rows {
			return fmt.Errorf("%w: limit read %d rows with lib/pq, %d with pgx", errMismatch, ref.rows, st.rows)
		}
		ref = st
		rate := float64(st.rows) / el.Seconds()
		if rate > limitRate {
			limitRate = rate
		}
		r.add(Result{Workload: wl, Contender: "limit (" + d.name + ")", Rows: st.rows, Elapsed: el,
			Extra: fmt.Sprintf("%d changes, %.0f MB WAL", st.changes, float64(walBytes)/1e6)})
	}
	if ref.lastCommit == 0 {
		return fmt.Errorf("the slot returned no COMMIT: nothing to measure")
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

	// streaming
	var streamRate float64
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
		streamRate = float64(ref.rows) / el.Seconds()
		r.add(Result{Workload: wl, Contender: "streaming (pglogrepl)", Rows: ref.rows, Elapsed: el, Rate: streamRate, Ratio: ratio(streamRate, limitRate),
			Extra: "parses every message"})
	}

	// dbsync, with both drivers
	for _, d := range []struct {
		name string
		db   *sql.DB
	}{{"lib/pq", db}, {"pgx", pgx}} {
		slot, err := sl.copySlot(ctx, db, "dbsync")
		if err != nil {
			return err
		}
		h, el, heap, err := runDbsync(ctx, d.db, slot, sl.pub, ref.lastCommit, flush, 5*time.Minute)
		dropSlot(db, slot)
		if err != nil {
			return fmt.Errorf("dbsync (%s): %w", d.name, err)
		}
		if h.changes.Load() != ref.changes {
			return fmt.Errorf("%w: dbsync (%s) decoded %d changes, limit read %d", errMismatch, d.name, h.changes.Load(), ref.changes)
		}
		rate := float64(ref.rows) / el.Seconds()
		target := ">=0.8x limit, > streaming: " + verdict(rate >= 0.8*limitRate && rate > streamRate)
		if heapTarget {
			target = "peak heap < 64 MiB: " + verdict(heap < 64<<20)
		}
		r.add(Result{Workload: wl, Contender: "dbsync (" + d.name + ")", Rows: ref.rows, Elapsed: el, Rate: rate, Ratio: ratio(rate, limitRate),
			Extra:  fmt.Sprintf("peak heap %s, %s vs streaming", mib(heap), ratio(rate, streamRate)),
			Target: target})
	}
	return nil
}
