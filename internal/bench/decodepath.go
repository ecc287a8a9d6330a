package bench

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
)

// decodeRun is one round of the decode path: its wall time and this process's CPU
// time.
type decodeRun struct {
	el, cpu time.Duration
}

// capturedRows holds the head of a catch-up backlog as the poller receives it: every
// pgoutput row's bytes, and the orders table's RELATION message and table info.
type capturedRows struct {
	data    [][]byte
	changes int64 // row changes (INSERT, UPDATE, DELETE) among data
	reln    *pglogrepl.RelationMessage
	info    *dbsync.PGTableInfo
}

// captureRows reads the first ~n row changes of the workload's backlog (whole
// transactions) from a copy of its slot, through the Syncer's low-level API
// (GetMessages, not consuming).
func captureRows(ctx context.Context, db *sql.DB, sl *slots, n int) (*capturedRows, error) {
	slot, err := sl.copySlot(ctx, db, "decode")
	if err != nil {
		return nil, err
	}
	defer dropSlot(db, slot)
	s, err := dbsync.NewSyncerContext(ctx, dbsync.WithDB(db), dbsync.WithReplicationSlot(slot), dbsync.WithPublication(sl.pub))
	if err != nil {
		return nil, fmt.Errorf("syncer: %w", err)
	}
	defer s.Close()
	msgs, err := s.GetMessagesContext(ctx, n, false, nil)
	if err != nil {
		return nil, fmt.Errorf("GetMessages: %w", err)
	}
	info, err := s.TableInfo(ctx, "orders")
	if err != nil {
		return nil, err
	}
	// Each row's Data is already this caller's copy, in slabs shared by neighbouring
	// rows (as the poller's rows are): kept as they are.
	c := &capturedRows{info: info}
	for _, m := range msgs {
		c.data = append(c.data, m.Data)
		msg, err := m.Parse()
		if err != nil {
			return nil, err
		}
		switch msg := msg.(type) {
		case *pglogrepl.RelationMessage:
			if msg.RelationName == "orders" && c.reln == nil {
				c.reln = msg
			}
		case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage:
			c.changes++
		}
	}
	if c.reln == nil || c.changes == 0 {
		return nil, fmt.Errorf("%d rows read, with no RELATION message for orders or no change", len(msgs))
	}
	return c, nil
}

// decodeHandlers are the handlers whose decode path is measured, as the dbsync
// contenders use them (scan: ScanTuple into typed variables; otherwise DecodeChange:
// map of values and record ID).
var decodeHandlers = []struct {
	name string
	scan bool
}{{"DecodeChange", false}, {"ScanTuple", true}}

// decodePaths measures the decode path of a catch-up workload, one round at a time,
// and keeps each handler's best round. Each round reads the head of the backlog anew
// and drops it afterwards, so that it is not live (inflating the peak heap and
// spacing out the collections) while the contenders run. A round goes several times
// (passes) over those rows: few enough rows that the live heap stays near the
// poller's (a few MiB, which sets how often the garbage collector runs), enough
// passes for a round long enough to time.
type decodePaths struct {
	sl       *slots
	db       *sql.DB
	n        int         // row changes to read a round
	perRound int         // rows to decode a round, at least
	best     []decodeRun // by index in decodeHandlers
	// What the rounds read (the same head of the same backlog every round): rows,
	// the changes among them, and the passes over them a round.
	rows, passes, rounds int
	changes              int64
}

// newDecodePaths prepares the decode-path rounds of a workload: ~20,000 row changes
// read a round at scale 1, ~300,000 rows decoded a round.
func (r *runner) newDecodePaths(sl *slots, db *sql.DB) *decodePaths {
	return &decodePaths{sl: sl, db: db, n: r.scaled(20000, 2000), perRound: r.scaled(300000, 20000),
		best: make([]decodeRun, len(decodeHandlers))}
}

// round measures one round with each handler (nothing on a nil d).
func (d *decodePaths) round(ctx context.Context) error {
	if d == nil {
		return nil
	}
	c, err := captureRows(ctx, d.db, d.sl, d.n)
	if err != nil {
		return fmt.Errorf("decode path: %w", err)
	}
	if d.rounds > 0 && (len(c.data) != d.rows || c.changes != d.changes) {
		return fmt.Errorf("%w: decode path read %d rows (%d changes), %d (%d) before", errMismatch, len(c.data), c.changes, d.rows, d.changes)
	}
	d.rows, d.changes = len(c.data), c.changes
	d.passes = (d.perRound + d.rows - 1) / d.rows
	for i, h := range decodeHandlers {
		run, err := decodeRound(c, h.scan, d.passes)
		if err != nil {
			return fmt.Errorf("decode path (%s): %w", h.name, err)
		}
		if b := &d.best[i]; b.el == 0 || run.el < b.el {
			*b = run
		}
	}
	d.rounds++
	return nil
}

// report adds a row per handler: its best round's rate, the ratio to limitRate in the
// ratio column, and against the faster dbsync catch-up with the same handler
// (catchupRate, by scan) the "decode path >= 5x the catch-up rate" verdict.
func (d *decodePaths) report(r *runner, wl string, limitRate float64, catchupRate map[bool]float64) {
	rows := int64(d.passes * d.rows)
	for i, h := range decodeHandlers {
		run := d.best[i]
		rate := float64(rows) / run.el.Seconds()
		x := rate / catchupRate[h.scan]
		r.add(Result{Workload: wl, Contender: "decode path, one core (" + h.name + " handler)", Rows: rows, Elapsed: run.el, Rate: rate, Ratio: ratio(rate, limitRate),
			Extra: fmt.Sprintf("%.1fx the faster dbsync catch-up with this handler (%s/s); Parser.Parse + handler on one goroutine, GOMAXPROCS 1; %d rows (%d changes) x %d passes, best of %d rounds spread over the workload; CPU %.2f µs per row",
				x, fmtRate(catchupRate[h.scan]), d.rows, d.changes, d.passes, d.rounds, float64(run.cpu.Nanoseconds())/1e3/float64(rows)),
			Target: ">=5x catch-up: " + verdict(x >= 5)})
	}
}

// decodeRound measures the decode path on one core: passes times over the captured
// rows, every row parsed (a Parser: the poller's own parse of a row it owns) and
// every row change decoded by the benchmark's handler (scan: into typed variables
// with ScanTuple; otherwise DecodeChange), on one goroutine with GOMAXPROCS 1, so
// that the garbage collector shares that core. A round whose handler did not decode
// every change is an error (errMismatch).
//
// Until run 21 this used the package-level Parse, which copies each row change's
// bytes first and so did a little more per row than the poller; until run 23
// PGMSG.Parse, which the poller used until its reader took row changes' structures
// from slabs (Parser).
func decodeRound(c *capturedRows, scan bool, passes int) (decodeRun, error) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	h := newHandler(0)
	h.scan = scan
	var p dbsync.Parser
	runtime.GC()
	c0 := selfCPU()
	start := time.Now()
	for pass := 0; pass < passes; pass++ {
		for _, data := range c.data {
			msg, err := p.Parse(dbsync.PGMSG{Data: data})
			if err != nil {
				return decodeRun{}, err
			}
			switch msg.(type) {
			case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage:
				if err := h.change(msg, c.reln, c.info); err != nil {
					return decodeRun{}, err
				}
			}
		}
	}
	run := decodeRun{time.Since(start), selfCPU() - c0}
	if got, want := h.changes.Load(), int64(passes)*c.changes; got != want {
		return run, fmt.Errorf("%w: the handler decoded %d changes, want %d", errMismatch, got, want)
	}
	return run, nil
}
