package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// This file reads a selection's rows: the SELECT of a Refresh or a snapshot chunk,
// every column in its text output form. One goroutine reads (the driver's row
// parsing) and copies rows into batches; selectDecoders goroutines decode batches
// (typed values, record IDs) in parallel; the caller puts them back in the SELECT's
// order. A chunk then costs about the largest of the stages per row, not their sum
// (docs/BENCHMARKS.md, snapshot).

// selectBatchRows is the number of rows the reading goroutine hands over at a time.
const selectBatchRows = 256

// rawBatch holds up to selectBatchRows rows as copied bytes: column j of row i is
// buf[offs[2*(i*ncol+j)]:offs[2*(i*ncol+j)+1]], or NULL when that start is -1.
type rawBatch struct {
	buf  []byte
	offs []int32
	n    int
	seq  int // position among the selection's batches
}

// decodedBatch is a rawBatch decoded: its rows and their key columns' texts, or the
// error decoding stopped at.
type decodedBatch struct {
	seq   int
	items []DBItem
	keys  [][]string
	err   error
}

// selectDecoders is the number of goroutines decoding a selection's batches.
const selectDecoders = 2

// colScanner copies one column of the current row into a rawBatch. It is a
// sql.Scanner, so it sees the driver's value itself: NULL (nil) is told apart from an
// empty string whatever the driver (database/sql turns an empty string into a nil
// sql.RawBytes with some drivers).
type colScanner struct{ b **rawBatch }

func (c colScanner) Scan(src any) error {
	b := *c.b
	switch v := src.(type) {
	case nil:
		b.offs = append(b.offs, -1, -1)
		return nil
	case []byte:
		start := int32(len(b.buf))
		b.buf = append(b.buf, v...)
		b.offs = append(b.offs, start, int32(len(b.buf)))
	case string:
		start := int32(len(b.buf))
		b.buf = append(b.buf, v...)
		b.offs = append(b.offs, start, int32(len(b.buf)))
	default:
		return fmt.Errorf("%w: selection column of Go type %T; columns are selected as text", ErrDecodeValue, src)
	}
	return nil
}

func newRawBatch(bufCap, offsCap int) *rawBatch {
	return &rawBatch{buf: make([]byte, 0, max(bufCap, 64)), offs: make([]int32, 0, offsCap)}
}

// row fills dst (one entry per column) with views of row i: nil for NULL, else a
// non-nil slice of buf (buf is never nil).
func (b *rawBatch) row(i int, dst []sql.RawBytes) {
	ncol := len(dst)
	for j := range dst {
		k := 2 * (i*ncol + j)
		if b.offs[k] < 0 {
			dst[j] = nil
			continue
		}
		dst[j] = b.buf[b.offs[k]:b.offs[k+1]:b.offs[k+1]]
	}
}

// selectRows runs query in a READ ONLY REPEATABLE READ transaction whose first
// statement captures pg_current_snapshot() (the snapshot every later statement of
// the transaction uses), and returns the rows (keyed by record ID), the snapshot and
// the key columns (text) of the last row (nil: no rows).
func (s *Syncer) selectRows(ctx context.Context, info *PGTableInfo, cols []string, query string, args ...any) (*InMemSelection, xidSnapshot, []string, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, xidSnapshot{}, nil, classify(err, "begin selection transaction")
	}
	defer tx.Rollback()
	var snapText string
	if err := tx.QueryRowContext(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snapText); err != nil {
		return nil, xidSnapshot{}, nil, classify(err, "read pg_current_snapshot()")
	}
	snap, err := parseSnapshot(snapText)
	if err != nil {
		return nil, xidSnapshot{}, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := tx.QueryContext(rctx, query, args...)
	if err != nil {
		return nil, snap, nil, fmt.Errorf("%w: selection query on %s: %w", ErrConfig, info.QualifiedName(), classify(err, "run selection"))
	}
	defer rows.Close()

	// Reader: the driver's rows, copied out of its buffers, in numbered batches.
	batches := make(chan *rawBatch, 4)
	var readErr error
	go func() {
		defer close(batches)
		b := newRawBatch(0, 2*len(cols)*selectBatchRows)
		dest := make([]any, len(cols))
		for i := range dest {
			dest[i] = colScanner{&b}
		}
		seq := 0
		for rows.Next() {
			if err := rows.Scan(dest...); err != nil {
				readErr = err
				return
			}
			b.n++
			if b.n == selectBatchRows {
				b.seq = seq
				seq++
				select {
				case batches <- b:
				case <-rctx.Done():
					return
				}
				b = newRawBatch(cap(b.buf), cap(b.offs))
			}
		}
		if readErr = rows.Err(); readErr == nil && b.n > 0 {
			b.seq = seq
			select {
			case batches <- b:
			case <-rctx.Done():
			}
		}
	}()

	// Decoders: batches are decoded in parallel and put back in order below.
	keyIdx := make([]int, len(info.PrimaryKey))
	for i, k := range info.PrimaryKey {
		keyIdx[i] = indexOf(cols, k)
	}
	results := make(chan *decodedBatch, selectDecoders*2)
	var wg sync.WaitGroup
	for w := 0; w < selectDecoders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := make([]sql.RawBytes, len(cols))
			for b := range batches {
				d := &decodedBatch{seq: b.seq, items: make([]DBItem, b.n), keys: make([][]string, b.n)}
				keySlab := make([]string, b.n*len(keyIdx))
				for i := 0; i < b.n && d.err == nil; i++ {
					b.row(i, raw)
					d.items[i], d.err = selectedRow(info, cols, raw)
					key := keySlab[i*len(keyIdx) : (i+1)*len(keyIdx) : (i+1)*len(keyIdx)]
					for k, j := range keyIdx {
						key[k] = string(raw[j])
					}
					d.keys[i] = key
				}
				select {
				case results <- d:
				case <-rctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(results)
	}()
	// On an error, stop the reader and the decoders and wait for them.
	fail := func(err error) (*InMemSelection, xidSnapshot, []string, error) {
		cancel()
		for range results {
		}
		return nil, snap, nil, err
	}

	sel := NewInMemSelection()
	var lastKey []string
	waiting := map[int]*decodedBatch{}
	next := 0
	for d := range results {
		waiting[d.seq] = d
		for d := waiting[next]; d != nil; d = waiting[next] {
			delete(waiting, next)
			next++
			if d.err != nil {
				return fail(d.err)
			}
			for i, item := range d.items {
				sel.add(item, d.keys[i])
				lastKey = d.keys[i]
			}
		}
	}
	if len(waiting) > 0 && readErr == nil {
		return nil, snap, nil, fmt.Errorf("dbsync: selection rows lost in decoding (%d batches out of order)", len(waiting))
	}
	if readErr != nil {
		return nil, snap, nil, classify(readErr, "read selection rows")
	}
	if err := rows.Close(); err != nil {
		return nil, snap, nil, classify(err, "read selection rows")
	}
	if err := tx.Commit(); err != nil {
		return nil, snap, nil, classify(err, "end selection transaction")
	}
	return sel, snap, lastKey, nil
}

// selectedRow turns one selected row — every column in PostgreSQL's text output form,
// the form pgoutput sends in changes (nil: NULL) — into a DBItem, decoding values the
// way MessageToMap decodes a change's tuple (shared with ScanRow) so record IDs match
// between refresh rows and changes.
func selectedRow(info *PGTableInfo, cols []string, raw []sql.RawBytes) (DBItem, error) {
	values, err := info.decodeTextRowRaw(cols, raw, true)
	if err != nil {
		return DBItem{}, err
	}
	key, err := info.GetRecordID(values)
	if err != nil {
		return DBItem{}, fmt.Errorf("%s: %w", info.QualifiedName(), err)
	}
	return DBItem{Table: info, Key: key, Values: values}, nil
}
