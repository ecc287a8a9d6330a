package dbsync

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
)

// This file reads a selection's rows: the SELECT of a Refresh or a snapshot chunk,
// every column in its text output form. One goroutine reads (the driver's row
// parsing) and copies rows into batches; selectDecoders goroutines decode batches
// (typed values, record IDs) in parallel; the caller puts them back in the SELECT's
// order. A chunk then costs about the largest of the stages per row, not their sum
// (docs/BENCHMARKS.md, snapshot).
//
// Two transports, as for peeks (peekread.go): with pgx's stdlib driver the selection
// runs on pgx's own connection (sql.Conn.Raw), asking for every result column in text
// format, so the SELECT names the columns as they are and the server sends each
// value's output function result; through database/sql the SELECT casts columns to
// text, since drivers turn some types into Go values (time.Time, float64) whose text
// form they do not keep — with lib/pq only the columns of the types it converts
// (selectForm).

// selectForm is how a selection's SELECT names its columns.
type selectForm int

const (
	// formText: every column as a text expression (columnList, selectList), for
	// any database/sql driver.
	formText selectForm = iota
	// formPlain: columns as they are; the transport asks for text results.
	formPlain
	// formPQ: for lib/pq, which hands text results to database/sql as they are except
	// for a few types it converts: columns of those types as text expressions, the
	// others as they are (columnList).
	formPQ
)

// selQuery is one selection's SELECT, built for the transport that runs it.
type selQuery struct {
	// build returns the SELECT with its columns in the given form.
	build func(form selectForm) string
	args  []any
	// unique says that no two rows can have the same key (a SELECT of the table
	// itself): the selection then indexes its rows by key only if it must.
	unique bool
	// rows is how many rows the SELECT returns at most, when known (its LIMIT, the
	// keys asked for): the selection's room is made once.
	rows int
	// reread builds the query that reads rows of this selection again, given their
	// key columns' values (texts, in key order), in a follow-up window: the same
	// columns with the same meaning (settle). A selection of the table's own columns
	// reads the table by key (keysQuery); a Refresh runs the caller's query
	// restricted to the keys (refreshKeysQuery).
	reread func(keys [][]string) selQuery
}

// pgconnParams returns args as text-format parameters for pgx's connection, or false
// when one is of a type only database/sql converts.
func (q selQuery) pgconnParams() ([][]byte, bool) {
	out := make([][]byte, len(q.args))
	for i, a := range q.args {
		switch v := a.(type) {
		case nil:
		case string:
			out[i] = []byte(v)
		case int:
			out[i] = strconv.AppendInt(nil, int64(v), 10)
		case int64:
			out[i] = strconv.AppendInt(nil, v, 10)
		default:
			return nil, false
		}
	}
	return out, true
}

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
		b.appendCol(v)
	case string:
		start := int32(len(b.buf))
		b.buf = append(b.buf, v...)
		b.offs = append(b.offs, start, int32(len(b.buf)))
	case int64:
		// lib/pq's value of an integer column (formPQ selects them as they are):
		// decimal digits, as int8out/int4out/int2out print them.
		start := int32(len(b.buf))
		b.buf = strconv.AppendInt(b.buf, v, 10)
		b.offs = append(b.offs, start, int32(len(b.buf)))
	default:
		return fmt.Errorf("%w: selection column of Go type %T; columns are selected as text", ErrDecodeValue, src)
	}
	return nil
}

// appendCol adds one column of the current row: v, or NULL when v is nil.
func (b *rawBatch) appendCol(v []byte) {
	if v == nil {
		b.offs = append(b.offs, -1, -1)
		return
	}
	start := int32(len(b.buf))
	b.buf = append(b.buf, v...)
	b.offs = append(b.offs, start, int32(len(b.buf)))
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

// selResult is what a selection read: its rows, the snapshot its SELECT saw, and the
// key columns (text) of the last row (nil: no rows).
type selResult struct {
	rows    *InMemSelection
	snap    xidSnapshot
	lastKey []string
}

// selectRows runs q in a READ ONLY REPEATABLE READ transaction whose first statement
// captures pg_current_snapshot() (the snapshot every later statement of the
// transaction uses), and returns the rows (keyed by record ID), the snapshot and the
// key columns (text) of the last row (nil: no rows).
func (s *Syncer) selectRows(ctx context.Context, info *PGTableInfo, cols []string, q selQuery) (_ *InMemSelection, _ xidSnapshot, _ []string, err error) {
	// LOCK TABLE and the SELECT wait for a lock another transaction holds on the
	// table (an ALTER TABLE, a LOCK TABLE, a VACUUM FULL left open or prepared):
	// after lockWaitWarnAfter that is logged, and an error that ends the wait names
	// the lock and who holds it (TestSelectionLockWaitNamesHolder).
	watch := s.watchLock(ctx, info.QuotedName(), "", accessShareConflicts, "a selection on "+info.QualifiedName())
	defer func() { err = watch.end(err) }()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, xidSnapshot{}, nil, classify(err, "begin selection transaction")
	}
	defer conn.Close()
	var res selResult
	native := false
	params, ok := q.pgconnParams()
	err = conn.Raw(func(dc any) error {
		pc, isPgx := dc.(pgxConner)
		if !isPgx || !ok {
			return nil
		}
		native = true
		s.pgconnSelects.Add(1)
		return s.selectPgconn(ctx, pc.Conn().PgConn(), info, cols, q.build(formPlain), params, q, &res)
	})
	if !native && err == nil {
		err = s.selectSQL(ctx, conn, info, cols, q, &res)
	}
	if err != nil {
		// Row-level security refused the SELECT (row_security is off): asked about on
		// another connection, once this one is back in the pool.
		conn.Close()
		if rerr := s.rlsRefused(ctx, "selection on "+info.QualifiedName(), info, err); rerr != nil {
			err = rerr
		}
		return nil, res.snap, nil, err
	}
	return res.rows, res.snap, res.lastKey, nil
}

// selectSQL is selectRows through database/sql.
func (s *Syncer) selectSQL(ctx context.Context, conn *sql.Conn, info *PGTableInfo, cols []string, q selQuery, res *selResult) error {
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return classify(err, "begin selection transaction")
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, selectionLock(info)); err != nil {
		return lockErr(ctx, info, err)
	}
	shape, err := readShapeSQL(ctx, tx, info)
	if err != nil {
		return err
	}
	if err := checkShape(info, shape); err != nil {
		return err
	}
	var snapText, applied string
	if err := tx.QueryRowContext(ctx, sqlText("selection_begin.sql")).Scan(&snapText, &applied); err != nil {
		return classify(err, "read pg_current_snapshot()")
	}
	if res.snap, err = parseSnapshot(snapText); err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	form := formText
	if _, ok := s.db.Driver().(*pq.Driver); ok {
		form = formPQ
	}
	rows, err := tx.QueryContext(rctx, q.build(form), q.args...)
	if err != nil {
		return selectionQueryErr(ctx, info, err)
	}
	defer rows.Close()
	var cur *rawBatch
	dest := make([]any, len(cols))
	for i := range dest {
		dest[i] = colScanner{&cur}
	}
	err = s.collectRows(rctx, cancel, info, cols, q, res, func(b *rawBatch) (bool, error) {
		if !rows.Next() {
			return false, rows.Err()
		}
		cur = b
		return true, rows.Scan(dest...)
	})
	if err != nil {
		return classify(err, "read selection rows")
	}
	if err := rows.Close(); err != nil {
		return classify(err, "read selection rows")
	}
	if err := tx.Commit(); err != nil {
		return classify(err, "end selection transaction")
	}
	return nil
}

// selectPgconn is selectRows on pgx's own connection: the transaction's statements
// and the SELECT (every result column in text format) on pc. When the transaction
// cannot be ended cleanly the connection is reported bad (driver.ErrBadConn after the
// classified error is kept) so the pool drops it.
func (s *Syncer) selectPgconn(ctx context.Context, pc *pgconn.PgConn, info *PGTableInfo, cols []string, query string, params [][]byte, q selQuery, res *selResult) (err error) {
	// BEGIN, the table's lock, its shape and the snapshot in one round trip (simple
	// protocol, so the shape query's two parameters are inlined as quoted literals).
	// Of these statements only LOCK TABLE can fail with 42P01 (lockErr).
	results, err := pc.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "+selectionLock(info)+"; "+
		shapeQueryLiteral(info)+"; "+sqlText("selection_begin.sql")).ReadAll()
	if err != nil {
		return s.endPgconnSelect(pc, lockErr(ctx, info, err))
	}
	if len(results) != 4 {
		return s.endPgconnSelect(pc, fmt.Errorf("dbsync: selection's first statements returned %d results, want 4", len(results)))
	}
	shape, err := parseShapeRows(results[2].Rows)
	if err == nil {
		err = checkShape(info, shape)
	}
	if err != nil {
		return s.endPgconnSelect(pc, err)
	}
	if len(results[3].Rows) != 1 || len(results[3].Rows[0]) != 2 {
		return s.endPgconnSelect(pc, fmt.Errorf("dbsync: pg_current_snapshot() returned no row"))
	}
	if res.snap, err = parseSnapshot(string(results[3].Rows[0][0])); err != nil {
		return s.endPgconnSelect(pc, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rr := pc.ExecParams(rctx, query, params, nil, nil, textResults)
	err = s.collectRows(rctx, cancel, info, cols, q, res, func(b *rawBatch) (bool, error) {
		if !rr.NextRow() {
			return false, nil
		}
		vals := rr.Values()
		if len(vals) != len(cols) {
			return false, fmt.Errorf("%w: selection row of %d columns, want %d", ErrMalformedMessage, len(vals), len(cols))
		}
		for _, v := range vals {
			b.appendCol(v)
		}
		return true, nil
	})
	_, qerr := rr.Close()
	if err == nil && qerr != nil {
		var pgErr *pgconn.PgError
		if ctx.Err() != nil {
			// Cancelled by the caller: its error, as database/sql's rows give it (not the
			// server's "canceling statement" error).
			err = fmt.Errorf("read selection rows: %w", ctx.Err())
		} else if errors.As(qerr, &pgErr) {
			err = selectionQueryErr(ctx, info, qerr)
		} else {
			err = classify(qerr, "read selection rows")
		}
	}
	if err != nil {
		return s.endPgconnSelect(pc, err)
	}
	if _, err := pc.Exec(ctx, `COMMIT`).ReadAll(); err != nil {
		return s.endPgconnSelect(pc, classify(err, "end selection transaction"))
	}
	return nil
}

// selectionQueryErr is the error of a selection's SELECT that the server refused: the
// query is at fault (ErrConfig: a Refresh query's error, a column it lacks), unless
// the session was lost (isTransient: a restart, pg_terminate_backend), which
// openSelection retries and is no fault of the query, or the caller's context ended
// (lib/pq then has the server cancel the statement: 57014), which is ctx's error, or
// the server cut the statement short for reasons of its own (selectionCutShort:
// statement_timeout, pg_cancel_backend, lock_timeout, a deadlock, resources), which
// abandons the selection (ErrRefreshAbandoned: nothing of it was delivered, run it
// again) and is no fault of the query either (TestSelectionStatementTimeout).
func selectionQueryErr(ctx context.Context, info *PGTableInfo, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("run selection on %s: %w (%w)", info.QualifiedName(), ctx.Err(), classify(err, "run selection"))
	}
	if isTransient(err) {
		return classify(err, "run selection on "+info.QualifiedName())
	}
	if why := selectionCutShort(err); why != "" {
		return fmt.Errorf("%w: selection on %s: %s; nothing of it was delivered: run the Refresh or Snapshot again (a Snapshot resumes at this chunk): %w",
			ErrRefreshAbandoned, info.QualifiedName(), why, classify(err, "run selection"))
	}
	return fmt.Errorf("%w: selection query on %s: %w", ErrConfig, info.QualifiedName(), classify(err, "run selection"))
}

// selectionCutShort says why the server ended a selection's statement (its SELECT, or
// the planning of a Refresh query) when it did so for reasons of its own rather than
// the query's: "" for any other error.
func selectionCutShort(err error) string {
	code, _, ok := serverError(err)
	switch {
	case !ok:
		return ""
	case code == "57014":
		return "the server cancelled the statement (statement_timeout of the role, the database or the connection string, or pg_cancel_backend); with a statement_timeout, raise it for dbsync's sessions or read smaller chunks (WithSnapshotChunkSize)"
	case code == "55P03":
		return "the statement could not get a lock in time (lock_timeout)"
	case strings.HasPrefix(code, "40"):
		return "the server rolled the statement's transaction back (" + code + ": a deadlock or serialization failure)"
	case strings.HasPrefix(code, "53"):
		return "the server ran short of resources (" + code + ")"
	}
	return ""
}

// textResults asks for every result column in text format (one format code applies
// to all columns: protocol message Bind).
var textResults = []int16{pgx.TextFormatCode}

// endPgconnSelect rolls back a failed selection transaction on pc and returns err, so
// the connection goes back to the pool ready for use; when the rollback fails too it
// is dropped (pgx's driver would also drop a connection returned inside a
// transaction, in its ResetSession).
func (s *Syncer) endPgconnSelect(pc *pgconn.PgConn, err error) error {
	if pc.IsClosed() {
		return errors.Join(err, driver.ErrBadConn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, rerr := pc.Exec(ctx, `ROLLBACK`).ReadAll(); rerr != nil {
		return errors.Join(err, driver.ErrBadConn)
	}
	return err
}

// collectRows reads a selection's rows with next (which appends one row to the batch
// it is given and reports false at the end) on a new goroutine, decodes them on
// selectDecoders goroutines and puts them into res in the order read. cancel stops
// next's query (it cancels the context the query runs with); collectRows calls it on
// an error and returns after every goroutine it started is done.
func (s *Syncer) collectRows(rctx context.Context, cancel context.CancelFunc, info *PGTableInfo, cols []string, q selQuery,
	res *selResult, next func(b *rawBatch) (bool, error)) error {
	// Reader: rows copied out of the driver's buffers, in numbered batches.
	batches := make(chan *rawBatch, 4)
	var readErr error
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(batches)
		b := newRawBatch(0, 2*len(cols)*selectBatchRows)
		seq := 0
		for {
			more, err := next(b)
			if err != nil {
				readErr = err
				return
			}
			if !more {
				break
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
				if hook := s.win.duringSelect; hook != nil && seq == 1 {
					hook()
				}
				b = newRawBatch(cap(b.buf), cap(b.offs))
			}
		}
		if b.n > 0 {
			b.seq = seq
			select {
			case batches <- b:
			case <-rctx.Done():
			}
		}
	}()

	// Decoders: batches are decoded in parallel and put back in order below.
	dec := info.textRowDecoder(cols)
	keyIdx := dec.keyIdx // every key column is selected (queryTable / the table's own columns)
	// For a RefreshRowHandler rows keep their bytes and only keys are decoded (values
	// too when a Batcher needs them).
	_, rowMode := s.refreshRowHandler()
	values := !rowMode || s.Batcher != nil
	ncol := len(cols)
	results := make(chan *decodedBatch, selectDecoders*2)
	var wg sync.WaitGroup
	for w := 0; w < selectDecoders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var raw []sql.RawBytes // a row's column views; its own slice per row in rowMode
			if !rowMode {
				raw = make([]sql.RawBytes, ncol)
			}
			for b := range batches {
				d := &decodedBatch{seq: b.seq, items: make([]DBItem, b.n), keys: make([][]string, b.n)}
				keySlab := make([]string, b.n*len(keyIdx))
				var rawSlab []sql.RawBytes
				var rowSlab []RefreshRow
				if rowMode {
					rawSlab, rowSlab = make([]sql.RawBytes, b.n*ncol), make([]RefreshRow, b.n)
				}
				for i := 0; i < b.n && d.err == nil; i++ {
					if rowMode {
						raw = rawSlab[i*ncol : (i+1)*ncol : (i+1)*ncol]
					}
					b.row(i, raw)
					if values {
						d.items[i], d.err = dec.item(raw)
					} else {
						d.items[i], d.err = dec.keyItem(raw)
					}
					if rowMode && d.err == nil {
						it := &d.items[i]
						rowSlab[i] = RefreshRow{Table: info, Key: it.Key, names: cols, cols: dec.cols, raw: raw, values: it.Values}
						it.row = &rowSlab[i]
					}
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
	fail := func(err error) error {
		cancel()
		for range results {
		}
		<-readDone
		return err
	}

	sel := NewInMemSelection()
	if q.rows > 0 {
		sel.rows = make([]selRow, 0, min(q.rows, 1<<20))
	}
	var lastKey []string
	waiting := map[int]*decodedBatch{}
	nextSeq := 0
	for d := range results {
		waiting[d.seq] = d
		for d := waiting[nextSeq]; d != nil; d = waiting[nextSeq] {
			delete(waiting, nextSeq)
			nextSeq++
			if d.err != nil {
				return fail(d.err)
			}
			for i, item := range d.items {
				if q.unique {
					sel.appendUnique(item, d.keys[i])
				} else {
					sel.add(item, d.keys[i])
				}
				lastKey = d.keys[i]
			}
		}
	}
	<-readDone
	if readErr != nil {
		return readErr
	}
	if len(waiting) > 0 {
		return fmt.Errorf("dbsync: selection rows lost in decoding (%d batches out of order)", len(waiting))
	}
	res.rows, res.lastKey = sel, lastKey
	return nil
}
