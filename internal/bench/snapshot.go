package bench

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
)

// snapshotChunk is the number of rows of one keyset chunk.
const snapshotChunk = 10000

// snapshot is workload (d): a table of 1,000,000 rows (scaled) read while a writer
// updates random rows at 1,000 transactions per second: COPY (SELECT * FROM orders) TO
// STDOUT through pgx, against a DBLog-style chunked read (low watermark, keyset chunk of
// 10,000 rows decoded into maps, high watermark) through each driver.
//
// It also runs dbsync's own Snapshot (Syncer.Snapshot with default settings, a running
// Syncer, rows delivered to HandleRefresh) through each driver, the figure the target
// is judged on. The harness chunks do what a chunk costs on the database side (two
// watermark writes and one keyset SELECT of 10,000 rows) and decode every value into
// a map, without dbsync: a reference for what the snapshot path adds.
func (r *runner) snapshot(ctx context.Context) error {
	n := r.scaled(1000000, 10000)
	wl := fmt.Sprintf("d snapshot of %d rows", n)
	sl, db, pgx, err := r.prepare(ctx, "snapshot", ordersDDL)
	if err != nil {
		return err
	}
	defer r.dropDatabase(sl.dbName, db)
	defer pgx.Close()
	r.logf("%s: loading", wl)
	for i := 0; i < n; i += 100000 {
		hi := i + 100000
		if hi > n {
			hi = n
		}
		if _, err := db.ExecContext(ctx, insertOrders, i+1, hi); err != nil {
			return err
		}
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE orders`); err != nil {
		return err
	}
	// The slot would pin the writer's WAL for nothing: this workload reads the table.
	if _, err := db.ExecContext(ctx, `SELECT pg_drop_replication_slot($1)`, sl.master); err != nil {
		return err
	}

	wctx, stopWriter := context.WithCancel(ctx)
	var written atomic.Int64
	werr := make(chan error, 1)
	go func() {
		wdb, err := sql.Open("postgres", sl.dsn)
		if err != nil {
			werr <- err
			return
		}
		defer wdb.Close()
		interval := time.Second / steadyRate
		start := time.Now()
		for i := 0; ; i++ {
			if w := time.Until(start.Add(time.Duration(i) * interval)); w > 0 {
				time.Sleep(w)
			}
			if _, err := wdb.ExecContext(wctx, `UPDATE orders SET qty = qty + 1 WHERE id = $1`, rand.Int63n(int64(n))+1); err != nil {
				if wctx.Err() != nil {
					werr <- nil
				} else {
					werr <- err
				}
				return
			}
			written.Add(1)
		}
	}()
	defer func() { stopWriter(); <-werr }()
	time.Sleep(500 * time.Millisecond)

	// COPY through pgx: once unmeasured (warm-up), then before and after the chunked
	// reads; the faster of the two is the reference.
	if _, err := copyOut(ctx, pgx); err != nil {
		return fmt.Errorf("COPY: %w", err)
	}
	var copyRate float64
	var copyRows int64
	var copyEl time.Duration
	var copyCPU usage
	pm, err := postmasterPID(r.srv.DataDir())
	if err != nil {
		return err
	}
	// cpu is the CPU time of the server (writer included) and of this process since
	// s0 and g0.
	cpu := func(s0, g0 time.Duration, el time.Duration) usage {
		return usage{serverCPU(pm) - s0, selfCPU() - g0, el}
	}
	timedCopy := func() error {
		s0, g0 := serverCPU(pm), selfCPU()
		start := time.Now()
		rows, err := copyOut(ctx, pgx)
		if err != nil {
			return fmt.Errorf("COPY: %w", err)
		}
		el := time.Since(start)
		if rate := float64(rows) / el.Seconds(); rate > copyRate {
			copyRate, copyRows, copyEl, copyCPU = rate, rows, el, cpu(s0, g0, el)
		}
		return nil
	}
	if err := timedCopy(); err != nil {
		return err
	}
	type chunked struct {
		name    string
		rows    int64
		el      time.Duration
		updates int64
		cpu     usage
	}
	var reads []chunked
	var snapRows []int64
	for _, d := range []struct {
		name string
		db   *sql.DB
	}{{"pgx", pgx}, {"lib/pq", db}} {
		w0 := written.Load()
		s0, g0 := serverCPU(pm), selfCPU()
		start := time.Now()
		rows, err := chunkedRead(ctx, d.db)
		if err != nil {
			return fmt.Errorf("chunked read (%s): %w", d.name, err)
		}
		el := time.Since(start)
		if rows < int64(n) {
			return fmt.Errorf("%w: chunked read (%s) returned %d rows of %d", errMismatch, d.name, rows, n)
		}
		reads = append(reads, chunked{d.name, rows, el, written.Load() - w0, cpu(s0, g0, el)})
	}
	// dbsync's own Snapshot: a running Syncer (default settings, so chunks of
	// DefaultSnapshotChunkSize rows) reads the table through its watermark windows while
	// the writer's changes stream through the same slot.
	for i, d := range []struct {
		name     string
		db       *sql.DB
		inFlight int  // 0: the default
		rows     bool // a RefreshRowHandler scanning typed variables
		parallel int  // chunks read at once; 0: the default
	}{{"lib/pq", db, 0, false, 0}, {"pgx", pgx, 0, false, 0}, {"lib/pq, RefreshRow handler", db, 0, true, 0},
		{"pgx, RefreshRow handler", pgx, 0, true, 0}, {"lib/pq, 1 chunk in flight", db, 1, false, 0},
		{"pgx, 2 chunks read at once", pgx, 0, false, 2}} {
		slot := fmt.Sprintf("bench_snap_%d", i)
		opts := []dbsync.SyncerOpt{dbsync.WithDB(d.db), dbsync.WithReplicationSlot(slot), dbsync.WithPublication(sl.pub)}
		s, err := dbsync.NewSyncerContext(ctx, opts...)
		if err != nil {
			return fmt.Errorf("dbsync snapshot (%s): setup: %w", d.name, err)
		}
		s.Close()
		h := newHandler(0)
		var hopts []dbsync.SyncerOpt
		if d.rows {
			hopts = append(hopts, dbsync.WithMessageHandler(&rowHandler{handler: h}))
		}
		run, err := startSyncer(ctx, d.db, slot, sl.pub, h, hopts...)
		if err != nil {
			return err
		}
		if d.inFlight > 0 {
			run.s.SnapshotChunksInFlight = d.inFlight
		}
		if d.parallel > 0 {
			run.s.SnapshotParallel = d.parallel
		}
		w0 := written.Load()
		s0, g0 := serverCPU(pm), selfCPU()
		start := time.Now()
		err = run.s.Snapshot(ctx, "orders")
		el := time.Since(start)
		usage := cpu(s0, g0, el)
		if serr := run.stop(); err == nil {
			err = serr
		}
		dropSlot(db, slot)
		if err != nil {
			return fmt.Errorf("dbsync snapshot (%s): %w", d.name, err)
		}
		got, updates := h.refreshed.Load(), written.Load()-w0
		reads = append(reads, chunked{"dbsync Snapshot (" + d.name + ")", int64(n), el, updates, usage})
		r.logf("%s: dbsync Snapshot (%s): %d refresh rows, %d changes, %.2fs", wl, d.name, got, h.changes.Load(), el.Seconds())
		// A row is missing from the refresh rows only when the writer updated it inside
		// its chunk's window (it comes as a change instead): at most one row an update.
		if got < int64(n)-updates {
			return fmt.Errorf("%w: dbsync Snapshot (%s) delivered %d refresh rows of %d with %d updates meanwhile", errMismatch, d.name, got, n, updates)
		}
		snapRows = append(snapRows, got)
	}
	if err := timedCopy(); err != nil {
		return err
	}
	r.add(Result{Workload: wl, Contender: "COPY TO STDOUT (pgx)", Rows: copyRows, Elapsed: copyEl, Rate: copyRate, Extra: "writer running; best of 2; " + copyCPU.String()})
	for i, c := range reads {
		rate := float64(c.rows) / c.el.Seconds()
		res := Result{Workload: wl, Contender: "harness chunks 10k + watermarks (" + c.name + ")", Rows: c.rows, Elapsed: c.el, Rate: rate, Ratio: ratio(rate, copyRate),
			Extra: fmt.Sprintf("writer did %d updates meanwhile; not dbsync code; %s", c.updates, c.cpu)}
		if strings.HasPrefix(c.name, "dbsync") {
			res.Contender = c.name
			res.Extra = fmt.Sprintf("%d refresh rows (rows the writer touched in a window come as changes); writer did %d updates meanwhile; %s; %s",
				snapRows[i-2], c.updates, c.cpu, ceiling(c.cpu.server, c.cpu.self, c.rows, copyRate))
			if strings.Contains(c.name, "in flight") || strings.Contains(c.name, "at once") {
				res.Extra = "not the default, for comparison; " + res.Extra
			} else {
				res.Extra = fmt.Sprintf("default chunk size %d, %d chunks in flight; ", dbsync.DefaultSnapshotChunkSize, dbsync.DefaultSnapshotChunksInFlight) + res.Extra
				res.Target = ">=0.7x COPY: " + verdict(rate >= 0.7*copyRate)
			}
		}
		r.add(res)
	}
	select {
	case err := <-werr:
		if err != nil {
			return fmt.Errorf("writer: %w", err)
		}
		werr <- nil
	default:
	}
	return nil
}

// usage is the CPU time the server (all its processes) and this process spent over
// el of wall time.
type usage struct{ server, self, el time.Duration }

// String gives the usage in % of a core.
func (u usage) String() string {
	return fmt.Sprintf("CPU: server %.0f%%, this process %.0f%% of a core", pct(u.server, u.el), pct(u.self, u.el))
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// copyOut runs COPY (SELECT * FROM orders) TO STDOUT on a pgx connection of db and
// returns the number of rows.
func copyOut(ctx context.Context, db *sql.DB) (int64, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var rows int64
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("COPY needs a pgx connection, got %T", dc)
		}
		tag, err := c.Conn().PgConn().CopyTo(ctx, &countWriter{}, `COPY (SELECT * FROM orders) TO STDOUT`)
		rows = tag.RowsAffected()
		return err
	})
	return rows, err
}

// chunkedRead reads orders in keyset chunks, each between a low and a high watermark
// write to dbsync's watermark table, decoding every value into a map.
func chunkedRead(ctx context.Context, db *sql.DB) (int64, error) {
	wm := pq.QuoteIdentifier("dbsync_ctrl") + "." + pq.QuoteIdentifier("dbsync_wmtable")
	upsert := `INSERT INTO ` + wm + ` (selection_id, wm_type) VALUES ('bench', $1)
		ON CONFLICT (selection_id, wm_type) DO UPDATE SET created_at = clock_timestamp()`
	var total int64
	last := int64(0)
	for {
		if _, err := db.ExecContext(ctx, upsert, "low"); err != nil {
			return total, err
		}
		rows, err := db.QueryContext(ctx, `SELECT * FROM orders WHERE id > $1 ORDER BY id LIMIT $2`, last, snapshotChunk)
		if err != nil {
			return total, err
		}
		cols, err := rows.Columns()
		if err != nil {
			rows.Close()
			return total, err
		}
		raw := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range raw {
			ptrs[i] = &raw[i]
		}
		n := 0
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return total, err
			}
			m := make(map[string]any, len(cols))
			for i, c := range cols {
				if raw[i] == nil {
					m[c] = nil
				} else {
					m[c] = string(raw[i])
				}
			}
			id := idOf(m["id"])
			if id <= last {
				rows.Close()
				return total, fmt.Errorf("keyset out of order: %d after %d", id, last)
			}
			last = id
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, err
		}
		if _, err := db.ExecContext(ctx, upsert, "high"); err != nil {
			return total, err
		}
		total += int64(n)
		if n < snapshotChunk {
			return total, nil
		}
	}
}
