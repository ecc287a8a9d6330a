package dbsync

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"time"
)

// A statement_timeout set for the role or the database (or in the connection string)
// applies to dbsync's sessions too. A peek's statement runs until its last row was
// sent, and its rows are sent as the handlers take them, so a handler slower than the
// timeout over one poll, or a backlog whose decoding takes longer, had the server
// cancel the peek (57014): Run ended, and the next run met the same timeout
// (TestStatementTimeoutOfRole). PostgreSQL arms the timer when a statement starts,
// so the peek cannot lift it for itself (set_config inside the statement comes too
// late). When the server has one (stmtTimeoutSet, read with each poll's flush LSN),
// the peek, the split peek's copy and the advance run on a connection whose
// statement_timeout is set to 0 for them, and set back afterwards, so the pool's
// sessions keep the caller's setting. Without one, nothing is added. SkipBacklog's
// advance, which decodes the whole backlog, and setup's slot creation, which waits for
// the transactions open in the cluster, always ask (untimedConn): they do not poll
// first (TestSkipBacklogStatementTimeout, TestSlotCreationStatementTimeout).

// stmtTimeoutSet is a select-list expression: whether this session has a
// statement_timeout.
const stmtTimeoutSet = `pg_catalog.current_setting('statement_timeout') OPERATOR(pg_catalog.<>) '0'`

// untimed turns statement_timeout off on conn when the server has one
// (Syncer.stmtTimeout) and returns what sets it back, which closes the connection
// instead when that fails: it is not handed back to the pool without the caller's
// timeout.
func (s *Syncer) untimed(ctx context.Context, conn *sql.Conn) (restore func(), err error) {
	if !s.stmtTimeout.Load() {
		return func() {}, nil
	}
	return s.untimedConn(ctx, conn)
}

// untimedConn turns statement_timeout off on conn whatever Syncer.stmtTimeout says,
// for a call that does not poll first (SkipBacklog, setup's slot creation), and
// returns what sets it back (a no-op when the session had none; see untimed).
func (s *Syncer) untimedConn(ctx context.Context, conn *sql.Conn) (restore func(), err error) {
	var prev string
	if err := conn.QueryRowContext(ctx, `SELECT pg_catalog.current_setting('statement_timeout'), pg_catalog.set_config('statement_timeout', '0', false)`).Scan(&prev, new(string)); err != nil {
		return nil, err
	}
	if prev == "0" {
		return func() {}, nil
	}
	return func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(rctx, `SELECT pg_catalog.set_config('statement_timeout', $1, false)`, prev); err != nil {
			s.log.Debug("dbsync: cannot set statement_timeout back; closing the connection", "err", err)
			endSession(conn)
		}
	}, nil
}

// onUntimedConn runs fn on a connection of the pool with statement_timeout off
// (untimed).
func (s *Syncer) onUntimedConn(ctx context.Context, fn func(*sql.Conn) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	restore, err := s.untimed(ctx, conn)
	if err != nil {
		return err
	}
	defer restore()
	return fn(conn)
}

// endSession has conn's session end instead of going back to the pool, for a session
// left holding what a pooled one must not (the slot lock, a split peek's temporary
// slot copy, statement_timeout 0): conn is reported bad (driver.ErrBadConn), so
// database/sql closes it. With pgx's driver its pgx connection is closed first: under
// stdlib.OpenDBFromPool, database/sql's close only releases the connection to the
// pgxpool, which keeps an open session (TestEndSessionOverPgxpool). conn must not be
// used afterwards (its Close returns sql.ErrConnDone).
func endSession(conn *sql.Conn) {
	_ = conn.Raw(func(dc any) error {
		if pc, ok := dc.(pgxConner); ok {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = pc.Conn().Close(ctx)
		}
		return driver.ErrBadConn
	})
}
