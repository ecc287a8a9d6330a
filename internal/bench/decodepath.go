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

// decodeRounds is how many times the decode path is measured; the best round is
// reported, as for the catch-up contenders. A round goes several times (passes) over
// the captured rows: few enough rows that the live heap stays near the poller's (a
// few MiB, which sets how often the garbage collector runs), enough passes for a
// round long enough to time.
const decodeRounds = 3

// decodeRun is one measurement of the decode path: its best round's wall time and
// this process's CPU time in that round.
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
	// The rows' bytes in one allocation, so that they add one object, not one per row,
	// to what the collector marks.
	size := 0
	for _, m := range msgs {
		size += len(m.Data)
	}
	slab := make([]byte, 0, size)
	c := &capturedRows{info: info}
	for _, m := range msgs {
		start := len(slab)
		slab = append(slab, m.Data...)
		c.data = append(c.data, slab[start:len(slab):len(slab)])
		msg, err := dbsync.Parse(m.Data)
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

// decodePath measures the decode path on one core: passes times over the captured
// rows, every row parsed (dbsync.Parse) and every row change decoded by the
// benchmark's handler (scan: into typed variables with ScanTuple; otherwise
// DecodeChange: map of values and record ID), on one goroutine with GOMAXPROCS 1, so
// that the garbage collector shares that core. It returns the best of decodeRounds
// rounds and the rows parsed in a round; a round whose handler did not decode every
// change is an error (errMismatch).
//
// The public Parse copies a row's bytes before parsing; the poller parses the copy it
// already owns, so this path does slightly more than the poller's.
func decodePath(c *capturedRows, scan bool, passes int) (best decodeRun, rows int64, err error) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	for round := 0; round < decodeRounds; round++ {
		h := newHandler(0)
		h.scan = scan
		runtime.GC()
		c0 := selfCPU()
		start := time.Now()
		for pass := 0; pass < passes; pass++ {
			for _, data := range c.data {
				msg, err := dbsync.Parse(data)
				if err != nil {
					return best, 0, err
				}
				switch msg.(type) {
				case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage:
					if err := h.change(msg, c.reln, c.info); err != nil {
						return best, 0, err
					}
				}
			}
		}
		el, cpu := time.Since(start), selfCPU()-c0
		if best.el == 0 || el < best.el {
			best = decodeRun{el, cpu}
		}
		if got, want := h.changes.Load(), int64(passes)*c.changes; got != want {
			return best, 0, fmt.Errorf("%w: the handler decoded %d changes, want %d", errMismatch, got, want)
		}
	}
	return best, int64(passes * len(c.data)), nil
}
