package dbsync

import (
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// The poll's rows are read and parsed on one goroutine and delivered to the handlers
// on another, so reading the result set (driver, row scan, pgoutput parse) overlaps
// with the handlers' work: on a backlog the client side otherwise runs serially after
// the server has materialized the peek. Order is kept (one reader, one deliverer, a
// FIFO channel); at most parsedQueue batches of parsedBatch rows, or of about
// parsedBatchBytes of row data, are in flight, so memory stays bounded whatever the
// size of the peek and of its rows (counting rows alone, 4 x 256 rows of 100 KB held
// 363 MiB of heap behind a slow handler: TestBacklogOfLargeRowsHeapBounded).

const (
	parsedBatch      = 256     // rows per hand-over
	parsedBatchBytes = 1 << 20 // bytes of row data (PGMSG.Data) from which a batch is handed over with fewer rows
	parsedQueue      = 4       // batches queued between reader and deliverer
)

// parsedRow is one peeked row and its parsed message, or the error reading or
// parsing it (the last entry the reader sends).
type parsedRow struct {
	m   PGMSG
	msg pglogrepl.Message
	err error
}

// rowReader reads rows on its own goroutine. Consume batches from C until it is
// closed, or call stop to abandon the rest; then Err tells how the result set ended.
type rowReader struct {
	C    <-chan []parsedRow
	quit chan struct{}
	done chan struct{}
	err  error
}

// readRows starts a poll's read (Syncer.readPoll, bound to its arguments) on the
// reader's goroutine and parses every row there.
func readRows(read func(peekRowFunc) error) *rowReader {
	c := make(chan []parsedRow, parsedQueue)
	r := &rowReader{C: c, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer close(c)
		batch := make([]parsedRow, 0, parsedBatch)
		batchBytes := 0   // row data in batch
		var parser Parser // row changes' structures from slabs (parse_change.go)
		send := func() bool {
			if len(batch) == 0 {
				return true
			}
			select {
			case c <- batch:
				batch, batchBytes = make([]parsedRow, 0, parsedBatch), 0
				return true
			case <-r.quit:
				return false
			}
		}
		err := read(func(m PGMSG) error {
			p := parsedRow{m: m}
			// m.Data is a copy owned by this row, so the message may alias it.
			p.msg, p.err = parser.Parse(m)
			batch = append(batch, p)
			if p.err != nil {
				batch[len(batch)-1].err = fmt.Errorf("row at LSN %s: %w", m.LSN, p.err)
				send() // the error is the last entry the deliverer gets
				return errPeekAbandoned
			}
			batchBytes += len(m.Data)
			if (len(batch) == parsedBatch || batchBytes >= parsedBatchBytes) && !send() {
				return errPeekAbandoned
			}
			return nil
		})
		if errors.Is(err, errPeekAbandoned) {
			return
		}
		if send() {
			r.err = err
		}
	}()
	return r
}

// stop abandons the rows not consumed yet and waits for the reader to finish.
func (r *rowReader) stop() {
	select {
	case <-r.quit:
	default:
		close(r.quit)
	}
	for range r.C {
	}
	<-r.done
}

// Err is the result set's error once C is closed (nil if stop abandoned it).
func (r *rowReader) Err() error {
	<-r.done
	return r.err
}
