package dbsync

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

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
	what := "peek slot " + s.replicationSlot
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return classify(err, what)
	}
	defer conn.Close()
	var fnErr error
	counted := func(m PGMSG) error {
		fnErr = fn(m)
		return fnErr
	}
	native := false
	err = conn.Raw(func(dc any) error {
		pc, ok := dc.(pgxConner)
		if !ok {
			return nil
		}
		native = true
		s.pgconnPeeks.Add(1)
		return s.readPeekPgconn(ctx, pc.Conn().PgConn(), upto, max, counted)
	})
	if !native && err == nil {
		err = s.readPeekSQL(ctx, conn, upto, max, counted)
	}
	if fnErr != nil {
		return fnErr
	}
	return classify(err, what)
}

// readPeekSQL is readPeek through database/sql.
func (s *Syncer) readPeekSQL(ctx context.Context, conn *sql.Conn, upto pglogrepl.LSN, max int, fn peekRowFunc) error {
	var nchanges any
	if max > 0 {
		nchanges = max
	}
	rows, err := conn.QueryContext(ctx, sqlText("peek.sql"), s.replicationSlot, upto.String(), nchanges, s.publicationOption(), s.binaryOption())
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

// peekResultFormats asks for the lsn (pg_lsn: 8 bytes), xid (xid: 4 bytes) and data
// (bytea: the bytes themselves) columns in binary form (pg_lsn_send, xidsend,
// byteasend: big-endian integers).
var peekResultFormats = []int16{pgx.BinaryFormatCode, pgx.BinaryFormatCode, pgx.BinaryFormatCode}

// readPeekPgconn is readPeek on pgx's own connection.
func (s *Syncer) readPeekPgconn(ctx context.Context, pc *pgconn.PgConn, upto pglogrepl.LSN, max int, fn peekRowFunc) error {
	var nchanges []byte // NULL: no row bound
	if max > 0 {
		nchanges = strconv.AppendInt(nil, int64(max), 10)
	}
	params := [][]byte{[]byte(s.replicationSlot), []byte(upto.String()), nchanges,
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

func lenAt(v [][]byte, i int) int {
	if i < len(v) {
		return len(v[i])
	}
	return -1
}

// errPeekAbandoned stops a peek's read when its consumer went away.
var errPeekAbandoned = errors.New("dbsync: peek abandoned")
