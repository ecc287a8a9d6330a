package dbsync

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The peek's transport: one pg_logical_slot_peek_binary_changes call (sql/peek.sql)
// on one connection of the Syncer's *sql.DB, its rows handed over one at a time.
//
// Through lib/pq, or any driver but pgx's, the rows go through database/sql (Rows.Next,
// Scan into sql.RawBytes, the lsn and xid columns parsed from text: rowScanner). When
// the connection is pgx's stdlib driver, the same statement runs on the driver's own
// connection (sql.Conn.Raw, pgconn.ExecParams) with the three columns in binary form
// and read in place: no driver.Value per column, no string for the lsn and xid, no
// reflection in Scan. On a backlog that per-row cost is paid on the poller's reader
// goroutine, which with a cheap handler is what bounds the catch-up rate
// (docs/BENCHMARKS.md). The connection stays a database/sql one: the pool, its limits
// and its session handling are the caller's.

// peekRowFunc receives a peek's rows in order. m.Data is a copy that the callee owns
// (shared with neighbouring rows in a slab, never overwritten). An error stops the read
// and is returned as is by readPeek.
type peekRowFunc func(m PGMSG) error

// pgxConner is what pgx's stdlib driver connection (*stdlib.Conn) offers: its pgx
// connection. Asserted inside sql.Conn.Raw, so dbsync does not register pgx's driver.
type pgxConner interface {
	Conn() *pgx.Conn
}

// readPeek peeks the slot up to upto (transactions committing at or after it are not
// returned) and at most about max rows (0: no row bound) and calls fn for every row,
// on the calling goroutine. Server and driver errors are classified (ErrSlotMissing,
// ErrSlotInvalidated, ...); fn's error is returned unchanged.
func (s *Syncer) readPeek(ctx context.Context, upto pglogrepl.LSN, max int, fn peekRowFunc) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return classify(err, "peek slot "+s.replicationSlot)
	}
	defer conn.Close()
	return s.readPeekConn(ctx, conn, upto, max, fn)
}

// readPeekConn is readPeek on conn.
func (s *Syncer) readPeekConn(ctx context.Context, conn *sql.Conn, upto pglogrepl.LSN, max int, fn peekRowFunc) error {
	restore, err := s.untimed(ctx, conn)
	if err != nil {
		return classify(err, "peek slot "+s.replicationSlot)
	}
	defer restore()
	return s.peekOn(ctx, conn, s.replicationSlot, upto, max, fn)
}

// peekOn is readPeek of slot on conn.
func (s *Syncer) peekOn(ctx context.Context, conn *sql.Conn, slot string, upto pglogrepl.LSN, max int, fn peekRowFunc) error {
	var fnErr error
	tracked := func(m PGMSG) error {
		fnErr = fn(m)
		return fnErr
	}
	native := false
	err := conn.Raw(func(dc any) error {
		switch c := dc.(type) {
		case pgxConner:
			native = true
			s.pgconnPeeks.Add(1)
			return s.readPeekPgconn(ctx, c.Conn().PgConn(), slot, upto, max, tracked)
		case driver.QueryerContext:
			var err error
			if native, err = s.readPeekDriver(ctx, c, slot, upto, max, tracked); native {
				s.driverPeeks.Add(1)
			}
			return err
		}
		return nil
	})
	if !native && err == nil {
		err = s.readPeekSQL(ctx, conn, slot, upto, max, tracked)
	}
	if fnErr != nil {
		return fnErr
	}
	return classify(err, "peek slot "+slot)
}

// readPeekSQL is readPeek through database/sql.
func (s *Syncer) readPeekSQL(ctx context.Context, conn *sql.Conn, slot string, upto pglogrepl.LSN, max int, fn peekRowFunc) error {
	var nchanges any
	if max > 0 {
		nchanges = max
	}
	rows, err := conn.QueryContext(ctx, sqlText("peek.sql"), slot, upto.String(), nchanges, s.publicationOption(), s.binaryOption())
	if err != nil {
		return err
	}
	defer rows.Close()
	var sc rowScanner
	for rows.Next() {
		var m PGMSG
		if err := sc.scan(rows, &m); err != nil {
			return err
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return rows.Err()
}

// readPeekDriver is readPeek through the driver's own connection and the standard
// driver interfaces (driver.QueryerContext, driver.Rows: what database/sql itself
// calls), for drivers other than pgx's, such as lib/pq. It skips what database/sql
// adds per row (the Rows lock, Scan's conversions into sql.RawBytes): ~0.1 µs a row of
// this process's CPU through lib/pq, a sixth of reading a peek row
// (docs/BENCHMARKS-history.md). The lsn and xid columns may come as text ([]byte or
// string) and the xid as an int64; anything else is an error. handled is false, with
// nothing read, when the driver declines the query (driver.ErrSkip): the caller reads
// through database/sql then.
func (s *Syncer) readPeekDriver(ctx context.Context, qc driver.QueryerContext, slot string, upto pglogrepl.LSN, max int, fn peekRowFunc) (handled bool, err error) {
	var nchanges driver.Value // NULL: no row bound
	if max > 0 {
		nchanges = int64(max)
	}
	args := []driver.NamedValue{
		{Ordinal: 1, Value: slot},
		{Ordinal: 2, Value: upto.String()},
		{Ordinal: 3, Value: nchanges},
		{Ordinal: 4, Value: s.publicationOption()},
		{Ordinal: 5, Value: s.binaryOption()},
	}
	rows, err := qc.QueryContext(ctx, sqlText("peek.sql"), args)
	if errors.Is(err, driver.ErrSkip) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	var sc rowScanner
	dest := make([]driver.Value, len(rows.Columns()))
	if len(dest) != 3 {
		rows.Close()
		return true, fmt.Errorf("%w: peek returned %d columns, want 3 (lsn, xid, data)", ErrMalformedMessage, len(dest))
	}
	for {
		if err = rows.Next(dest); err != nil {
			break
		}
		var m PGMSG
		if err = sc.driverRow(dest, &m); err != nil {
			break
		}
		if err = fn(m); err != nil {
			break
		}
	}
	// Close reads what is left of the result, as rows.Close does through database/sql.
	cerr := rows.Close()
	if err == io.EOF {
		return true, cerr
	}
	return true, err
}

// peekResultFormats asks for the lsn (pg_lsn: 8 bytes), xid (xid: 4 bytes) and data
// (bytea: the bytes themselves) columns in binary form (pg_lsn_send, xidsend,
// byteasend: big-endian integers).
var peekResultFormats = []int16{pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode}

// readPeekPgconn is readPeek on pgx's own connection.
func (s *Syncer) readPeekPgconn(ctx context.Context, pc *pgconn.PgConn, slot string, upto pglogrepl.LSN, max int, fn peekRowFunc) error {
	var nchanges []byte // NULL: no row bound
	if max > 0 {
		nchanges = strconv.AppendInt(nil, int64(max), 10)
	}
	params := [][]byte{[]byte(slot), []byte(upto.String()), nchanges,
		[]byte(s.publicationOption()), []byte(s.binaryOption())}
	rr := pc.ExecParams(ctx, sqlText("peek.sql"), params, nil, nil, peekResultFormats)
	var sc rowScanner
	var rowErr error
	for rr.NextRow() {
		var m PGMSG
		if rowErr = sc.binaryRow(rr.Values(), &m); rowErr != nil {
			break
		}
		if rowErr = fn(m); rowErr != nil {
			break
		}
	}
	// Close reads what is left of the result (as rows.Close does through
	// database/sql) and returns the statement's error.
	_, err := rr.Close()
	if rowErr != nil {
		return rowErr
	}
	return err
}

// binaryRow reads a peek row whose columns came in binary form.
func (r *rowScanner) binaryRow(v [][]byte, m *PGMSG) error {
	if len(v) != 3 || len(v[0]) != 8 || len(v[1]) != 4 {
		return fmt.Errorf("%w: peek row with %d columns, lsn of %d bytes, xid of %d bytes: want 3, 8, 4",
			ErrMalformedMessage, len(v), lenAt(v, 0), lenAt(v, 1))
	}
	m.LSN = pglogrepl.LSN(binary.BigEndian.Uint64(v[0]))
	m.Xid = binary.BigEndian.Uint32(v[1])
	m.Data = r.copyData(v[2])
	return nil
}

// driverRow reads a peek row as a driver's Rows.Next returned it. Data is copied
// (the driver may reuse its buffer at the next row).
func (r *rowScanner) driverRow(v []driver.Value, m *PGMSG) error {
	lsn, ok := driverText(v[0])
	if !ok {
		return fmt.Errorf("%w: peek row's lsn column came as %T, want text", ErrMalformedMessage, v[0])
	}
	var err error
	if m.LSN, err = parseLSN(lsn); err != nil {
		return err
	}
	if x, ok := v[1].(int64); ok {
		if x < 0 || x > 1<<32-1 {
			return fmt.Errorf("%w: invalid xid %d", ErrMalformedMessage, x)
		}
		m.Xid = uint32(x)
	} else if xid, ok := driverText(v[1]); ok {
		if m.Xid, err = parseXid(xid); err != nil {
			return err
		}
	} else {
		return fmt.Errorf("%w: peek row's xid column came as %T, want text or int64", ErrMalformedMessage, v[1])
	}
	data, ok := driverText(v[2])
	if !ok {
		return fmt.Errorf("%w: peek row's data column came as %T, want bytes", ErrMalformedMessage, v[2])
	}
	m.Data = r.copyData(data)
	return nil
}

// driverText returns a driver value's bytes when it is []byte or string.
func driverText(v driver.Value) ([]byte, bool) {
	switch x := v.(type) {
	case []byte:
		return x, true
	case string:
		return []byte(x), true
	}
	return nil, false
}

// first returns b's first byte, 0 when b is empty.
func first(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

func lenAt(v [][]byte, i int) int {
	if i < len(v) {
		return len(v[i])
	}
	return -1
}

// errPeekAbandoned stops a peek's read when its consumer went away.
var errPeekAbandoned = errors.New("dbsync: peek abandoned")

// Split peeks. A peek's server work (decoding from restart_lsn and materializing the
// result) and the client's work on its rows do not overlap within one call: the client
// waits until the whole result is built (shared/reference §1). On a large backlog the
// poller therefore splits a poll in two at an LSN mid: the slot itself is peeked up
// to mid, and at the same time a temporary copy of the slot
// (pg_copy_logical_replication_slot), forwarded to mid with pg_replication_slot_advance,
// is peeked up to the poll's bound on a second connection. The server builds both
// results at once (two backends), and the copy's rows are read once the slot's are
// delivered. The copy decodes the first half again but skips its transactions (they
// commit before its confirmed_flush_lsn), which costs about a fifth of decoding and
// sending them (docs/BENCHMARKS-history.md, "Catch-up: where the time goes"). The
// rows handed over are those of one peek up to the bound, except that the copy's call
// describes again (RELATION) a relation the slot's call already described, as the
// call of every poll does:
//   - the slot's call returns the transactions whose COMMIT record starts before mid,
//     plus one whose COMMIT starts right after mid when mid falls inside a WAL page
//     header (the call stops after the first record ending at or after mid);
//   - the copy returns those whose COMMIT starts at or after mid;
//   - so a transaction of the copy whose BEGIN names a commit LSN (final_lsn) at or
//     before the last COMMIT the slot returned is dropped, as is a non-transactional
//     message at or before the slot's last row (the same case, for a message record);
//     RELATION and TYPE rows always pass (they describe what follows).
// TestSplitPeekMatchesOnePeek and TestSplitPeekSeamInPageHeader check these rules.
// The slot is forwarded only by the poller, after delivery, as for one peek; the copy
// is temporary and dropped after the read (or with its session).

// splitMinWAL is the backlog (bytes of WAL between confirmed_flush_lsn and the poll's
// bound) from which a poll is split (Syncer.splitMinWAL overrides it in tests).
const splitMinWAL = 64 << 20

// canSplit tells whether a poll from confirmed to upto is split: a large backlog, no
// row bound, and a pool that may open four connections at once: the split holds two
// while it reads, delivering a RELATION of a table not described yet reads the
// catalog on a third, and a handler that uses the pool (WithDB: "one more for a
// handler") may hold a fourth across a transaction; on three such a handler stalled
// Run for good (TestTxHandlerOnPoolOfThree). A Refresh or Snapshot needs one
// meanwhile too, but only for its statements, which end on their own.
func (s *Syncer) canSplit(confirmed, upto pglogrepl.LSN, max int) bool {
	min := uint64(splitMinWAL)
	if s.splitMinWAL > 0 {
		min = s.splitMinWAL
	}
	if max > 0 || confirmed == 0 || upto <= confirmed || uint64(upto-confirmed) < min {
		return false
	}
	open := s.db.Stats().MaxOpenConnections
	return open == 0 || open >= 4
}

// readPoll reads one poll's rows (from the slot's confirmed_flush_lsn, confirmed, up
// to upto) and calls fn for each, split in two when canSplit says so.
func (s *Syncer) readPoll(ctx context.Context, confirmed, upto pglogrepl.LSN, max int, fn peekRowFunc) error {
	if s.canSplit(confirmed, upto, max) {
		return s.readPeekSplit(ctx, confirmed+(upto-confirmed)/2, upto, fn)
	}
	return s.readPeek(ctx, upto, max, fn)
}

// splitBatch is how many of the copy's rows its reader hands over at once.
const splitBatch = 256

// splitConnWait is how long a split peek waits for its second connection before it
// peeks once on its first instead.
const splitConnWait = time.Second

// readPeekSplit peeks the slot up to mid and a temporary copy of it from mid to upto
// at the same time, and calls fn for the rows of one peek up to upto, in order. If the
// copy cannot be made (no free replication slot, say), or the pool gives no second
// connection within splitConnWait, it reads one peek instead: a pool whose limit
// database/sql does not see (a pgxpool under stdlib.OpenDBFromPool, whose
// MaxOpenConnections is 0) would otherwise keep the split waiting for good
// (TestOpenDBFromPoolSplitPoll).
func (s *Syncer) readPeekSplit(ctx context.Context, mid, upto pglogrepl.LSN, fn peekRowFunc) error {
	what := "peek slot " + s.replicationSlot
	sconn, err := s.db.Conn(ctx) // the slot's peek
	if err != nil {
		return classify(err, what)
	}
	defer sconn.Close()
	wctx, wcancel := context.WithTimeout(ctx, splitConnWait)
	cconn, err := s.db.Conn(wctx) // the copy's
	wcancel()
	if err != nil {
		if ctx.Err() != nil {
			return classify(err, what)
		}
		s.log.Debug("dbsync: no second connection for a split peek; peeking once", "slot", s.replicationSlot, "waited", splitConnWait, "err", err)
		return s.readPeekConn(ctx, sconn, upto, 0, fn)
	}
	restore, err := s.untimed(ctx, cconn)
	if err != nil {
		cconn.Close()
		return classify(err, what)
	}
	copyName := scratchSlotName(s.replicationSlot, "_split_")
	// The copy's confirmed_flush_lsn is the lsn the copy returns (NULL: none).
	var copied sql.NullString
	if err := cconn.QueryRowContext(ctx, `SELECT lsn::pg_catalog.text FROM pg_catalog.pg_copy_logical_replication_slot($1, $2, true)`, s.replicationSlot, copyName).Scan(&copied); err != nil {
		if ctx.Err() != nil {
			cconn.Close()
			return classify(err, what)
		}
		restore()
		cconn.Close()
		s.log.Debug("dbsync: cannot copy the slot for a split peek; peeking once", "slot", s.replicationSlot, "err", err)
		return s.readPeekConn(ctx, sconn, upto, 0, fn)
	}
	var copyConfirmed pglogrepl.LSN
	if copied.Valid {
		if copyConfirmed, err = parseLSN([]byte(copied.String)); err != nil {
			// The temporary copy exists: end its session (which drops it) rather than
			// hand the connection back to the pool with the copy holding WAL.
			endSession(cconn)
			cconn.Close()
			return err
		}
	}
	s.splitPeeks.Add(1)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows := make(chan []PGMSG, parsedQueue)
	copyErr := make(chan error, 1)
	go func() {
		defer close(rows)
		copyErr <- s.readCopy(cctx, cconn, copyName, copyConfirmed, mid, upto, rows)
	}()
	stopCopy := func() {
		cancel()
		for range rows {
		}
		<-copyErr
	}
	defer func() {
		// The copy is temporary: dropping it is tidiness (its session ending drops it
		// too, and a cancelled read may have ended that session).
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer dcancel()
		if _, err := cconn.ExecContext(dctx, `SELECT pg_catalog.pg_drop_replication_slot($1)`, copyName); err != nil && !hasSQLState(err, "42704") {
			// The copy would live as long as this pooled session, holding back WAL:
			// have the pool close the connection instead (its session drops the copy).
			s.log.Debug("dbsync: dropping the split peek's slot copy; closing its connection", "slot", copyName, "err", err)
			endSession(cconn)
		} else {
			restore()
		}
		cconn.Close()
	}()

	var lastCommit, lastLSN pglogrepl.LSN // the slot's last COMMIT (its commit LSN) and last row
	err = s.readPeekConn(ctx, sconn, mid, 0, func(m PGMSG) error {
		if first(m.Data) == 'C' {
			c, err := commitLSN(m.Data)
			if err != nil {
				return err
			}
			lastCommit = c
		}
		lastLSN = m.LSN
		return fn(m)
	})
	if err != nil {
		stopCopy()
		return err
	}
	var skipping, inTx bool
	for batch := range rows {
		for _, m := range batch {
			pass := !skipping
			switch first(m.Data) {
			case 'B':
				final, err := beginFinalLSN(m.Data)
				if err != nil {
					stopCopy()
					return err
				}
				skipping, inTx = final <= lastCommit, true
				pass = !skipping
			case 'C':
				skipping, inTx = false, false
			case 'R', 'Y':
				pass = true
			case 'M':
				if !inTx {
					pass = m.LSN > lastLSN
				}
			}
			if !pass {
				continue
			}
			if err := fn(m); err != nil {
				stopCopy()
				return err
			}
		}
	}
	return <-copyErr // classified by readCopy
}

// readCopy forwards the temporary copy (at confirmed, its confirmed_flush_lsn) to mid
// and peeks it up to upto on conn, sending its rows to out in batches.
func (s *Syncer) readCopy(ctx context.Context, conn *sql.Conn, copyName string, confirmed, mid, upto pglogrepl.LSN, out chan<- []PGMSG) error {
	// A temporary slot is dropped by any error in its session, so the copy is
	// forwarded only when mid is ahead of it (the poller's idea of the slot's
	// position may be stale); if it is not, the slot's own call returns nothing and
	// the copy everything.
	if mid > confirmed {
		if _, err := conn.ExecContext(ctx, `SELECT pg_catalog.pg_replication_slot_advance($1, $2::pg_catalog.pg_lsn)`, copyName, mid.String()); err != nil {
			return classify(err, "advance slot copy "+copyName)
		}
	}
	batch := make([]PGMSG, 0, splitBatch)
	batchBytes := 0 // row data in batch: a batch goes at splitBatch rows or parsedBatchBytes
	err := s.peekOn(ctx, conn, copyName, upto, 0, func(m PGMSG) error {
		batch = append(batch, m)
		batchBytes += len(m.Data)
		if len(batch) == splitBatch || batchBytes >= parsedBatchBytes {
			select {
			case out <- batch:
			case <-ctx.Done():
				return ctx.Err()
			}
			batch, batchBytes = make([]PGMSG, 0, splitBatch), 0
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		select {
		case out <- batch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// scratchSlotName names a temporary slot (a split peek's copy, restartlsn.go's
// throwaway slot): the slot's name (cut to fit NAMEDATALEN), suffix and random hex.
func scratchSlotName(slot, suffix string) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	tail := suffix + hex.EncodeToString(r[:])
	if len(slot)+len(tail) > 63 {
		slot = slot[:63-len(tail)]
	}
	return slot + tail
}

// commitLSN reads a pgoutput COMMIT's commit LSN ('C', flags, commit LSN, end LSN,
// timestamp).
func commitLSN(b []byte) (pglogrepl.LSN, error) {
	if len(b) < 26 || b[0] != 'C' {
		return 0, fmt.Errorf("%w: COMMIT of %d bytes", ErrMalformedMessage, len(b))
	}
	return pglogrepl.LSN(binary.BigEndian.Uint64(b[2:10])), nil
}

// beginFinalLSN reads a pgoutput BEGIN's final LSN, the LSN of its commit record ('B',
// final LSN, timestamp, xid).
func beginFinalLSN(b []byte) (pglogrepl.LSN, error) {
	if len(b) < 21 || b[0] != 'B' {
		return 0, fmt.Errorf("%w: BEGIN of %d bytes", ErrMalformedMessage, len(b))
	}
	return pglogrepl.LSN(binary.BigEndian.Uint64(b[1:9])), nil
}
