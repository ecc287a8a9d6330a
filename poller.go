package dbsync

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pglogrepl"
	"github.com/lib/pq"
)

// The poller is dbsync's transport: it reads the slot with
// pg_logical_slot_peek_binary_changes bounded by the WAL flush LSN captured just
// before, hands the rows to delivery, and forwards the slot with
// pg_replication_slot_advance. Rules (shared/reference/pg-logical-decoding.md §2-3):
//   - forward to the COMMIT row's LSN (end of the commit record) of the last fully
//     processed transaction, never further;
//   - when a call bounded by the flush LSN L returned everything (not cut short by
//     upto_nchanges) and all of it was processed, forward to L, so a slot whose
//     publication is idle does not pin WAL while other tables write;
//   - never pg_logical_slot_get_binary_changes (it is not transactional and re-sends).
//
// How a peek's rows are read (database/sql or pgx's own connection) and how a poll
// over a large backlog is split between the slot and a temporary copy of it is in
// peekread.go; the reader goroutine is in pipeline.go.

// SlotPosition is a slot's state as the poller tracks it.
type slotState struct {
	confirmed    pglogrepl.LSN // confirmed_flush_lsn as last read or advanced to
	drainedFlush pglogrepl.LSN // flush LSN up to which everything was delivered
	window       uint64        // WAL bytes past confirmed one peek may cover (0: pollWALWindow)
	// caughtUp: the last poll of this Run delivered everything up to the flush LSN
	// it read (evictIdleRelations).
	caughtUp bool
}

// pollWALWindow is how much WAL past confirmed_flush_lsn one peek covers at most
// (its upto_lsn bound), in bytes. Every peek decodes from restart_lsn, so draining a
// backlog in many small calls is quadratic (shared/reference §1); one call per window
// decodes each byte about once. The window bounds the server's work and temporary
// files per call (the result is materialized before the first row is sent). A window
// whose call returns no whole transaction (a transaction bigger than the window) is
// doubled until one fits. A variable so tests can shrink it.
var pollWALWindow uint64 = 1 << 30

// bound returns the upto_lsn of the next peek: the flush LSN, or confirmed + window
// when the backlog is larger than the window.
func (st *slotState) bound(flush pglogrepl.LSN) pglogrepl.LSN {
	w := st.window
	if w == 0 {
		w = pollWALWindow
	}
	if st.confirmed > 0 && flush > st.confirmed && uint64(flush-st.confirmed) > w {
		return st.confirmed + pglogrepl.LSN(w)
	}
	return flush
}

// grow doubles the window after a bounded call returned no whole transaction, and
// resets it after one did.
func (st *slotState) grow(bounded, gotCommit bool) {
	switch {
	case gotCommit:
		st.window = 0
	case bounded:
		if st.window == 0 {
			st.window = pollWALWindow
		}
		st.window *= 2
	}
}

// CurrentFlushLSN returns pg_current_wal_flush_lsn(): the WAL position up to which the
// server has flushed, the bound of what a peek can decode. Returns ErrClosed after
// Close, ErrInRecovery on a standby, ErrStatementCancelled when the server cancelled
// its statement while ctx was live (a statement_timeout of dbsync's role, or
// pg_cancel_backend: raise it, and call again); when ctx ended, the error wraps
// ctx's error ("CurrentFlushLSN: context canceled: ...").
func (s *Syncer) CurrentFlushLSN(ctx context.Context) (pglogrepl.LSN, error) {
	if err := s.checkOpen("CurrentFlushLSN"); err != nil {
		return 0, err
	}
	query := `SELECT pg_catalog.pg_current_wal_flush_lsn()`
	if s.currentFlushLSNSQL != "" {
		query = s.currentFlushLSNSQL
	}
	var lsn pglogrepl.LSN
	if err := s.db.QueryRowContext(ctx, query).Scan(&lsn); err != nil {
		return 0, withCtxErr(ctx, "CurrentFlushLSN", errCancelledCall(ctx, "CurrentFlushLSN", classify(err, "read pg_current_wal_flush_lsn()")))
	}
	return lsn, nil
}

// ConfirmedFlushLSN returns the slot's confirmed_flush_lsn: changes of transactions
// committed before it are not delivered again. Returns ErrSlotMissing if the slot does
// not exist, ErrSlotInvalidated if its WAL was removed, ErrClosed after Close,
// ErrStatementCancelled when the server cancelled its statement (a statement_timeout
// of dbsync's role: raise it). When ctx ended, the error wraps ctx's error and names
// the call ("ConfirmedFlushLSN: context canceled: ...").
func (s *Syncer) ConfirmedFlushLSN(ctx context.Context) (pglogrepl.LSN, error) {
	if err := s.checkOpen("ConfirmedFlushLSN"); err != nil {
		return 0, err
	}
	lsn, err := s.confirmedFlushLSN(ctx)
	return lsn, withCtxErr(ctx, "ConfirmedFlushLSN", errCancelledCall(ctx, "ConfirmedFlushLSN", err))
}

// confirmedFlushLSN is ConfirmedFlushLSN for dbsync's own calls, which may run while
// Close stops them.
func (s *Syncer) confirmedFlushLSN(ctx context.Context) (pglogrepl.LSN, error) {
	var lsn pglogrepl.LSN
	var confirmed, walStatus sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT confirmed_flush_lsn::pg_catalog.text, wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name OPERATOR(pg_catalog.=) $1`,
		s.replicationSlot).Scan(&confirmed, &walStatus)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, s.errSlotDropped(nil)
	}
	if err != nil {
		return 0, classify(err, "read slot position")
	}
	if walStatus.String == "lost" {
		return 0, s.errSlotLost(nil)
	}
	if confirmed.Valid {
		if err := lsn.Scan(confirmed.String); err != nil {
			return 0, err
		}
	}
	return lsn, nil
}

// publicationOption is the value of pgoutput's publication_names option: pgoutput
// parses it as a list of SQL identifiers, so each name is quoted.
func (s *Syncer) publicationOption() string { return pq.QuoteIdentifier(s.publication) }

// binaryOption is the value of pgoutput's binary option (WithBinary).
func (s *Syncer) binaryOption() string {
	if s.binary {
		return "true"
	}
	return "false"
}

// advance forwards the slot to lsn with pg_replication_slot_advance, if lsn is past
// the slot's confirmed position, and returns the new confirmed position.
func (s *Syncer) advance(ctx context.Context, st *slotState, lsn pglogrepl.LSN) error {
	if lsn <= st.confirmed {
		return nil
	}
	var end pglogrepl.LSN
	const q = `SELECT end_lsn FROM pg_catalog.pg_replication_slot_advance($1, $2::pg_catalog.pg_lsn)`
	var err error
	if s.stmtTimeout.Load() {
		err = s.onUntimedConn(ctx, func(c *sql.Conn) error {
			return c.QueryRowContext(ctx, q, s.replicationSlot, lsn.String()).Scan(&end)
		})
	} else {
		err = s.db.QueryRowContext(ctx, q, s.replicationSlot, lsn.String()).Scan(&end)
	}
	if err != nil {
		if code, _, _ := serverError(err); code == "55000" {
			// "cannot advance replication slot to X, minimum is Y": someone else moved
			// the slot past lsn. Told apart from the other 55000 errors (an invalidated
			// slot, wal_level) by the slot's position, not by the message, which is in
			// the server's language.
			if c, rerr := s.confirmedFlushLSN(ctx); rerr == nil && c >= lsn {
				st.confirmed = c
				return nil
			}
		}
		return classify(err, fmt.Sprintf("advance slot %s to %s", s.replicationSlot, lsn))
	}
	s.log.Debug("dbsync: slot advanced", "slot", s.replicationSlot, "lsn", end.String())
	if end > st.confirmed {
		st.confirmed = end
	}
	return nil
}

// resyncFellBack re-reads the slot's position when a poll's rows hold a point the slot
// may be forwarded to (target, 0: none) at or before st.confirmed. A peek returns only
// what commits after the slot's confirmed_flush_lsn, so the slot is then behind the
// poller's copy of its position: after a server crash PostgreSQL brings a slot back to
// its last saved position (saved at checkpoints, and when an advance moves restart_lsn;
// shared/reference/pg-logical-decoding.md §2), and a Run that met no error across the
// crash (the pool reconnects by itself) or retried a handler's error kept its copy.
// Without this the advance past the transactions delivered again was skipped as
// already done, and a poll cut short by MaxMessagesToRead read the same rows again
// forever (TestCrashSlotFallsBackMaxMessages).
func (s *Syncer) resyncFellBack(ctx context.Context, st *slotState, target pglogrepl.LSN) error {
	if target == 0 || target > st.confirmed {
		return nil
	}
	c, err := s.confirmedFlushLSN(ctx)
	if err != nil {
		return err
	}
	s.log.Warn("dbsync: the slot is behind where this Syncer forwarded it (a server crash brings a slot back to its last saved position): the transactions after it were delivered again",
		"slot", s.replicationSlot, "confirmed_flush_lsn", c.String(), "forwarded_to", st.confirmed.String())
	st.confirmed = c
	st.drainedFlush = 0
	return nil
}

// GetMessages returns the rows at the head of the slot, in commit order, of the
// transactions committed before the current WAL flush LSN (and the non-transactional
// logical messages among them). numMessages bounds the rows (the peek's upto_nchanges)
// only at transaction boundaries: reading stops once numMessages rows or more were
// returned, so a call returns whole transactions and may return more rows than
// numMessages (a transaction of a million rows comes whole even with numMessages 1).
// numMessages <= 0 means no row bound; above 2147483647 (upto_nchanges is an int4) it
// is ErrConfig, and nothing is read; so is a session whose client_encoding is not
// UTF8 (add client_encoding=UTF8 to the connection string). After Close, GetMessages returns ErrClosed, and
// while Run runs ErrAlreadyRunning (Run reads the slot itself). With
// consume it also forwards the slot past the returned rows (as Forward(len) would),
// otherwise repeated calls return the same rows until Forward (after a server crash,
// rows forwarded past may come again first: PostgreSQL saves a slot's position at
// checkpoints, TestGetMessagesForwardAcrossCrash). Rows are appended to
// out; on an error the rows read before it may have been appended (the peek can end
// inside a transaction), and Forward still refers to the last call that read the
// slot without error. A statement the server cancelled while ctx was live
// (pg_cancel_backend, a statement_timeout) is ErrStatementCancelled: call again.
// This is the low-level API; Run does both for you.
func (s *Syncer) GetMessages(numMessages int, consume bool, out []PGMSG) ([]PGMSG, error) {
	return s.GetMessagesContext(context.Background(), numMessages, consume, out)
}

// GetMessagesContext is GetMessages with a context. When ctx ends, the error wraps
// ctx's error (also while the call waits for another GetMessages or Forward of the
// Syncer: they run one at a time) and says so: "GetMessages: context canceled: ...",
// or, when the call had failed for a reason of its own first (a named error such
// as ErrSlotMissing, a server error), that error followed by "(GetMessages's
// context ended too: context canceled)"; errors.Is holds for both. The call returns within 30 s of that also when
// the server does not answer (README, "Stopping when the server does not answer").
func (s *Syncer) GetMessagesContext(ctx context.Context, numMessages int, consume bool, out []PGMSG) (_ []PGMSG, err error) {
	if numMessages > math.MaxInt32 {
		return out, fmt.Errorf("%w: GetMessages(%d): numMessages must be at most 2147483647 rows (the peek's upto_nchanges is an int4); use 0 for no row bound", ErrConfig, numMessages)
	}
	if err := s.checkLowLevelCall("GetMessages"); err != nil {
		return out, err
	}
	if err := s.lockPeek(ctx); err != nil {
		return out, withCtxErr(ctx, "GetMessages", err)
	}
	defer s.unlockPeek()
	defer s.unstickAfter(ctx)() // lib/pq on a server that does not answer: sockets.go
	defer func() { err = s.endCall(ctx, "GetMessages", errCancelled(ctx, "GetMessages", s.diagnose(ctx, err))) }()
	var upto pglogrepl.LSN
	var timed bool
	var enc string
	if err := s.db.QueryRowContext(ctx, `SELECT pg_catalog.pg_current_wal_flush_lsn(), `+stmtTimeoutSet+`, `+clientEncoding).Scan(&upto, &timed, &enc); err != nil {
		return out, classify(err, "read pg_current_wal_flush_lsn()")
	}
	if err := checkClientEncoding(enc); err != nil {
		return out, err
	}
	s.stmtTimeout.Store(timed)
	start := len(out)
	if err := s.readPeek(ctx, upto, numMessages, func(m PGMSG) error {
		out = append(out, m)
		if s.getMessagesRow != nil {
			s.getMessagesRow(len(out) - start)
		}
		return nil
	}); err != nil {
		return out, err
	}
	got := out[start:]
	// Keep only where the slot may be forwarded to, not the rows: they are the
	// caller's, and holding them would keep their Data alive after the caller let go.
	s.lastPeekPoints = s.lastPeekPoints[:0]
	for i, m := range got {
		if forwardPoint(m.Data) {
			s.lastPeekPoints = append(s.lastPeekPoints, peekPoint{rows: i + 1, lsn: m.LSN})
		}
	}
	s.lastPeekLen = len(got)
	s.lastPeekUpto = upto
	s.lastPeekComplete = numMessages <= 0 || len(got) < numMessages
	if consume {
		return out, s.forwardLocked(ctx, len(got))
	}
	return out, nil
}

// Forward moves the slot past the first nummsgs rows returned by the last GetMessages
// call that read the slot without error: to the COMMIT row of the last transaction entirely within them, or a later
// non-transactional logical message among them (so a transaction cut in the middle
// comes again), or — when nummsgs covers every row and that call drained the slot up
// to its flush LSN — to that flush LSN. A nummsgs larger than that call's rows counts
// as all of them. A negative nummsgs is ErrConfig; after Close, ErrClosed; while Run
// runs, ErrAlreadyRunning; a statement the server cancelled while ctx was live
// (pg_cancel_backend, a statement_timeout), ErrStatementCancelled: call again. Like Run's
// polls, it then keeps the slot's restart_lsn close (Syncer.MaxRestartLSNLag): a
// check may run in the background until Close.
func (s *Syncer) Forward(nummsgs int) error {
	return s.ForwardContext(context.Background(), nummsgs)
}

// ForwardContext is Forward with a context. When ctx ends, the error wraps ctx's
// error (also while the call waits for another GetMessages or Forward of the
// Syncer), named as GetMessagesContext's is ("Forward: context canceled: ...", or
// the call's own earlier cause first); the call returns within 30 s of that also when the server does not
// answer (README, "Stopping when the server does not answer").
func (s *Syncer) ForwardContext(ctx context.Context, nummsgs int) error {
	if err := s.checkLowLevelCall("Forward"); err != nil {
		return err
	}
	if err := s.lockPeek(ctx); err != nil {
		return withCtxErr(ctx, "Forward", err)
	}
	defer s.unlockPeek()
	defer s.unstickAfter(ctx)() // lib/pq on a server that does not answer: sockets.go
	err := s.forwardLocked(ctx, nummsgs)
	return s.endCall(ctx, "Forward", errCancelled(ctx, "Forward", s.diagnose(ctx, err)))
}

// lockPeek waits for the GetMessages and Forward calls under way to end, or for ctx
// to end (its error then): a call waiting for one still reading, or stuck on a server
// that does not answer, returns when its own context ends
// (TestLowLevelCallWaitingHonoursContext).
func (s *Syncer) lockPeek(ctx context.Context) error {
	select {
	case s.peekSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unlockPeek lets the next GetMessages or Forward call go on.
func (s *Syncer) unlockPeek() { <-s.peekSem }

// checkLowLevelCall (GetMessages, Forward) is ErrClosed for a call made after Close, and ErrAlreadyRunning for one
// made while Run runs: Run reads and forwards the slot itself, and a peek of another
// session at the same time would make Run's fail with ErrSlotInUse.
func (s *Syncer) checkLowLevelCall(call string) error {
	if err := s.checkOpen(call); err != nil {
		return err
	}
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	switch {
	case running:
		return fmt.Errorf("%w: %s while Run runs: Run reads and forwards the slot itself (a second reader would make its polls fail with ErrSlotInUse); use either Run or GetMessages and Forward", ErrAlreadyRunning, call)
	}
	return nil
}

func (s *Syncer) forwardLocked(ctx context.Context, nummsgs int) error {
	if nummsgs < 0 {
		return fmt.Errorf("%w: Forward(%d): the number of messages processed cannot be negative", ErrConfig, nummsgs)
	}
	if nummsgs > s.lastPeekLen {
		nummsgs = s.lastPeekLen
	}
	var target pglogrepl.LSN
	for i := len(s.lastPeekPoints) - 1; i >= 0; i-- {
		if p := s.lastPeekPoints[i]; p.rows <= nummsgs {
			target = p.lsn
			break
		}
	}
	if nummsgs == s.lastPeekLen && s.lastPeekComplete && s.lastPeekUpto > target {
		target = s.lastPeekUpto
	}
	if target == 0 {
		return nil
	}
	st := slotState{}
	c, err := s.confirmedFlushLSN(ctx)
	if err != nil {
		return err
	}
	st.confirmed = c
	if err := s.advance(ctx, &st, target); err != nil {
		return err
	}
	// Keep restart_lsn close for callers that poll through GetMessages and Forward, as
	// the poll loop does for Run (restartlsn.go). The check runs on its own goroutine
	// and may outlive this call: it is bounded by the Syncer's life (Close).
	if s.bg != nil {
		s.maybeCheckRestart(s.bg, time.Now())
	}
	return nil
}

// peekPoint is a row of a GetMessages call after which the slot may be forwarded
// (forwardPoint): its LSN, and the number of rows up to and including it.
type peekPoint struct {
	rows int
	lsn  pglogrepl.LSN
}

// lastCommitLSN returns the LSN of the last row of msgs after which the slot may be
// forwarded (forwardPoint), 0 if none.
func lastCommitLSN(msgs []PGMSG) pglogrepl.LSN {
	for i := len(msgs) - 1; i >= 0; i-- {
		if forwardPoint(msgs[i].Data) {
			return msgs[i].LSN
		}
	}
	return 0
}

// forwardPoint tells whether a peek row ends a unit the slot may be forwarded past
// once it and every row before it were processed: a COMMIT, or a non-transactional
// logical message (pgoutput 'M' with flags bit 0 clear), which decoding outputs on its
// own, never inside a transaction's BEGIN ... COMMIT. Its row LSN is the end of its
// WAL record, and a later peek from there does not return it again
// (decode.c: logicalmsg_decode skips records starting before the start point). Without
// it a poll of non-transactional messages only, cut short by MaxMessagesToRead, could
// never forward the slot and would read the same rows forever.
func forwardPoint(data []byte) bool {
	if len(data) == 0 {
		return false
	}
	switch data[0] {
	case byte(pglogrepl.MessageTypeCommit):
		return true
	case byte(pglogrepl.MessageTypeMessage):
		return len(data) > 1 && data[1]&1 == 0
	}
	return false
}

// pollResult says what one poll did.
type pollResult struct {
	rows     int  // rows read from the slot
	cutShort bool // the peek hit MaxMessagesToRead or its WAL window: more may be waiting
	stop     bool // a handler asked to stop
	peeked   bool // the slot was read (the flush LSN had moved past what was delivered)
	// stalled: an EventsProcessor took no row the slot can be forwarded past (none, or
	// part of the first transaction): the poll comes again after the idle backoff.
	stalled bool
}

// flushWatchInterval is how often an idle poller compares pg_current_wal_flush_lsn()
// with the position it has delivered up to. The comparison is one cheap query; the
// slot is peeked only when the flush LSN moved, so an idle Syncer costs about
// 1/flushWatchInterval trivial queries per second and sees the first change after an
// idle period within about this interval. Peeks that find nothing of the publication
// (other tables writing) back off as DelayBetweenPeekRetries and friends say.
const flushWatchInterval = 100 * time.Millisecond

// After flushWatchSlowAfter without anything flushed, the poller compares every
// flushWatchSlowInterval instead: each comparison costs this process about half a
// millisecond of CPU on the development machine (mostly the system calls of one
// query), so 100 ms ticks alone were ~0.5-0.8% of a core, close to the 1% budget
// for an idle syncer and server (docs/BENCHMARKS-history.md, "Steady state and
// idle"). A change after a long quiet period then waits up to 250 ms; one after a
// short pause still up to 100 ms.
const (
	flushWatchSlowAfter    = 2 * time.Second
	flushWatchSlowInterval = 250 * time.Millisecond
)

// flushWatchWait is the wait before the next comparison of the flush LSN when nothing
// was flushed for quietFor.
func flushWatchWait(quietFor time.Duration) time.Duration {
	if quietFor >= flushWatchSlowAfter {
		return flushWatchSlowInterval
	}
	return flushWatchInterval
}

// pollLoop polls until ctx ends or a fatal error.
func (s *Syncer) pollLoop(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		s.waitRestartChecks()
	}()
	st := &slotState{}
	idle := s.idleBackoff()
	retry := newRetryBackoff()
	first := true
	slotInUse := 0      // consecutive ErrSlotInUse failures
	cancelled := 0      // consecutive polls the server cancelled (57014)
	var quiet time.Time // since when nothing was flushed (zero: something was)
	for {
		var res pollResult
		var err error
		if first {
			st.confirmed, err = s.confirmedFlushLSN(ctx)
		}
		started := time.Now()
		if err == nil {
			first = false
			res, err = s.pollOnce(ctx, st)
		}
		if ctx.Err() != nil {
			if errors.Is(err, ErrHandler) && s.HandlerErrorPolicy != RetryOnHandlerError {
				// A handler or the Batcher failed in the poll the stop ended (the
				// Batcher gets its completed transactions at the stop): fatal as
				// without the stop, and not to be reported as a clean one.
				return err
			}
			return nil
		}
		if err != nil {
			// The next attempt reads again the keys it takes from the catalog (a key
			// added to fix ErrNoKey, say: tableCache.recheckKeys).
			s.tables.recheckKeys()
		}
		var wait time.Duration
		switch {
		case res.stop:
			return err // nil, or why the slot could not be forwarded before stopping
		case err == nil:
			retry.Reset()
			slotInUse = 0
			cancelled = 0
			if res.peeked {
				quiet = time.Time{}
				s.maybeCheckRestart(ctx, started)
			} else if quiet.IsZero() {
				quiet = started
			}
			if res.rows > 0 || res.cutShort {
				idle.Reset()
				if res.cutShort || s.MinPollInterval <= 0 {
					continue
				}
				if !sleepCtx(ctx, s.MinPollInterval-time.Since(started)) {
					return nil
				}
				continue
			}
			if res.peeked {
				wait = idle.NextBackOff()
			} else {
				wait = flushWatchWait(time.Since(quiet))
			}
		case errors.Is(err, ErrHandler) && s.HandlerErrorPolicy == RetryOnHandlerError:
			wait = retry.NextBackOff()
			s.log.Warn("dbsync: handler failed; retrying the transaction", "err", err, "retry_in", wait)
		case errors.Is(err, ErrHandler):
			return err
		case errors.Is(err, ErrSlotInUse):
			// A session that just lost its connection can hold the slot for a moment;
			// another live consumer holds it for good: give up after a few tries.
			slotInUse++
			if slotInUse > maxSlotInUseRetries {
				return err
			}
			wait = retry.NextBackOff()
			s.log.Warn("dbsync: slot in use; retrying", "err", err, "retry_in", wait)
		case isTransient(err):
			wait = retry.NextBackOff()
			s.log.Warn("dbsync: poll failed; retrying", "err", err, "retry_in", wait)
			first = true
		case hasSQLState(err, "57014"):
			// The server cancelled a statement of the poll that Run did not (its context
			// is live): pg_cancel_backend by an administrator or another process (the
			// peek and the advance run with statement_timeout off: untimed.go). The slot
			// is where the poll found it, or where its advance took it: retried like a
			// lost connection, not ended on as if fatal (TestCancelPeekMidStream). A
			// statement cancelled in every poll (a statement_timeout of the role
			// shorter than the poll's catalog reads, or than a wait for a lock on them)
			// would have Run retry forever delivering nothing: after maxCancelledPolls
			// in a row it ends (TestRunStatementTimeoutNoProgress).
			cancelled++
			if cancelled > maxCancelledPolls {
				return fmt.Errorf("%w: Run: %d polls in a row were cancelled by the server before they could deliver: a statement_timeout of dbsync's role, the database or the connection string shorter than the poll's statements (its catalog reads, or their waits for locks) cancels them every time, or another session keeps cancelling them (pg_cancel_backend); raise statement_timeout for dbsync's role (ALTER ROLE ... SET statement_timeout, or options='-c statement_timeout=...' in the connection string) and run again (the slot was not forwarded past what was delivered): %w",
					ErrStatementCancelled, cancelled, err)
			}
			wait = retry.NextBackOff()
			s.log.Warn("dbsync: poll cancelled by the server; retrying", "err", err, "retry_in", wait)
			first = true
		default:
			return s.diagnose(ctx, err)
		}
		// Wake cuts an idle wait short, not a retry's backoff: a Refresh or Snapshot
		// wakes the poller after each high watermark, and a handler failing under
		// RetryOnHandlerError or a lost server must not be retried at that rate.
		wake := s.wake
		if err != nil {
			wake = nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-wake:
			t.Stop()
			idle.Reset()
		case <-t.C:
		}
	}
}

// pollOnce reads the slot once up to the current flush LSN, delivers what it read and
// forwards the slot past what was processed.
func (s *Syncer) pollOnce(ctx context.Context, st *slotState) (pollResult, error) {
	var res pollResult
	// Watermarks written before this query get its insert LSN: at or past their
	// commit records, for the check that they reach the slot (polledThrough below).
	written := s.win.writtenUnstamped()
	var upto, insert pglogrepl.LSN
	var timed bool
	var enc string
	if err := s.db.QueryRowContext(ctx, `SELECT pg_catalog.pg_current_wal_flush_lsn(), pg_catalog.pg_current_wal_insert_lsn(), `+stmtTimeoutSet+`, `+clientEncoding).Scan(&upto, &insert, &timed, &enc); err != nil {
		return res, classify(err, "read pg_current_wal_flush_lsn()")
	}
	if err := checkClientEncoding(enc); err != nil {
		return res, err
	}
	s.stmtTimeout.Store(timed)
	s.win.stamp(written, insert)
	if upto <= st.drainedFlush || upto <= st.confirmed {
		return res, nil // nothing flushed since everything was delivered
	}
	res.peeked = true
	flush := upto
	upto = st.bound(flush)
	if s.EventsProcessor != nil {
		res, err := s.pollBatch(ctx, st, upto, upto < flush)
		// The slot was read: restart_lsn upkeep and the idle backoff follow, as for a
		// MessageHandler (TestRestartLSNFollowsConfirmedEventsProcessor).
		res.peeked = true
		res.cutShort = !res.stalled && (res.cutShort || upto < flush)
		return res, err
	}
	if st.caughtUp {
		s.evictIdleRelations()
	}
	st.caughtUp = false
	d := s.newDelivery(ctx)
	var deliverErr error
	confirmed := st.confirmed
	rr := readRows(func(fn peekRowFunc) error { return s.readPoll(ctx, confirmed, upto, s.MaxMessagesToRead, fn) })
	// Also when a handler panics: the reader would otherwise wait to hand over its
	// next batch for good, holding the peek's connection.
	defer rr.stop()
	// Stop (Run's context ending) abandons the poll at the next row: the rows the
	// reader queued ahead are not handed to the handlers after Stop was called.
	stopping := ctx.Done()
read:
	for batch := range rr.C {
		for _, p := range batch {
			if p.err != nil {
				deliverErr = p.err
				break read
			}
			select {
			case <-stopping:
				deliverErr = ctx.Err()
				break read
			default:
			}
			res.rows++
			if err := d.deliverParsed(p.m, p.msg); err != nil {
				deliverErr = err
				break read
			}
		}
	}
	rr.stop()
	if rowsErr := rr.Err(); deliverErr == nil && rowsErr != nil {
		deliverErr = rowsErr // classified by readPeek
	}
	// A handler's request to stop counts only when nothing failed with it.
	stopped := errors.Is(deliverErr, ErrStopProcessingMessages)
	if ferr := d.finish(); ferr != nil {
		// The Batcher did not take this poll's transactions: forward nothing.
		if ctx.Err() != nil && errors.Is(deliverErr, ctx.Err()) {
			deliverErr = nil // the stop that ended the poll is no failure of its own
		}
		deliverErr = errors.Join(deliverErr, ferr)
		stopped = false
	}
	res.cutShort = s.MaxMessagesToRead > 0 && res.rows >= s.MaxMessagesToRead
	complete := deliverErr == nil && !res.cutShort && !d.inTx
	st.grow(upto < flush, d.lastCommitEnd != 0)
	res.cutShort = res.cutShort || upto < flush
	target := d.lastCommitEnd
	if complete && upto > target {
		target = upto
	}
	// Forward what was processed even when stopping, also when the stop comes while
	// the advance runs: cancelled with ctx, the advance left transactions already
	// delivered (a tail's printed lines) in the slot, to be delivered again by the next
	// run. It may go on for stopGrace after ctx ended.
	actx, cancelAdvance := afterStop(ctx, stopGrace)
	defer cancelAdvance()
	err := s.resyncFellBack(actx, st, target)
	if err == nil {
		err = s.advance(actx, st, target)
	}
	if err != nil {
		if stopped {
			// Stop all the same (the handler asked to); Run returns why the slot was
			// not forwarded, and what was processed will be delivered again.
			res.stop = true
			return res, fmt.Errorf("stopping as the handler asked, but the slot was not forwarded past what it processed (that is delivered again on the next run): %w", err)
		}
		if deliverErr != nil {
			return res, errors.Join(deliverErr, err)
		}
		return res, err
	}
	if complete {
		st.drainedFlush = upto
		st.caughtUp = upto == flush
		s.win.polledThrough(upto)
	}
	if stopped {
		res.stop = true
		return res, nil
	}
	return res, deliverErr
}

// pollBatch is pollOnce for an EventsProcessor: the whole poll is read into memory
// and handed over at once.
func (s *Syncer) pollBatch(ctx context.Context, st *slotState, upto pglogrepl.LSN, bounded bool) (pollResult, error) {
	var res pollResult
	var msgs []PGMSG
	err := s.readPoll(ctx, st.confirmed, upto, s.MaxMessagesToRead, func(m PGMSG) error {
		msgs = append(msgs, m)
		return nil
	})
	if err != nil {
		if ctx.Err() == nil { // not a stop: Run's context ending cancels the peek
			s.EventsProcessor(nil, err)
		}
		return res, err
	}
	res.rows = len(msgs)
	res.cutShort = s.MaxMessagesToRead > 0 && res.rows >= s.MaxMessagesToRead
	if len(msgs) == 0 {
		st.grow(bounded, false)
		return res, s.advance(ctx, st, upto)
	}
	n, stop := s.EventsProcessor(msgs, nil)
	if n < 0 {
		n = 0
	}
	if n > len(msgs) {
		n = len(msgs)
	}
	target := lastCommitLSN(msgs[:n])
	complete := n == len(msgs) && !res.cutShort
	st.grow(bounded, lastCommitLSN(msgs) != 0)
	if complete && upto > target {
		target = upto
	}
	// Forward what was processed even when Run's context ended meanwhile (see
	// pollOnce).
	actx, cancelAdvance := afterStop(ctx, stopGrace)
	defer cancelAdvance()
	err = s.resyncFellBack(actx, st, target)
	if err == nil {
		err = s.advance(actx, st, target)
	}
	if err != nil {
		if stop {
			// Stop all the same (the processor asked to), not retry the poll and hand
			// it again to a processor that asked to stop (see pollOnce).
			res.stop = true
			return res, fmt.Errorf("stopping as the EventsProcessor asked, but the slot was not forwarded past what it processed (that is delivered again on the next run): %w", err)
		}
		return res, err
	}
	if complete {
		st.drainedFlush = upto
	}
	res.stop = stop
	switch {
	case n < len(msgs) && target == 0:
		// Nothing taken that the slot could move past (no row, or part of the first
		// transaction): the same poll comes again, after the idle backoff as if idle,
		// not at once, which would re-read the slot back to back while the processor
		// cannot take it.
		res.rows, res.cutShort, res.stalled = 0, false, true
	case n < len(msgs):
		res.cutShort = true // the rest comes again in the next poll, at once
	}
	return res, nil
}

// idleBackoff is the wait between empty polls: DelayBetweenPeekRetries, multiplied by
// TimerDelayBackoffFactor after each further empty poll, capped at
// MaxDelayBetweenEmptyPeeks; it never gives up and has no jitter.
func (s *Syncer) idleBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = s.DelayBetweenPeekRetries
	b.Multiplier = s.TimerDelayBackoffFactor
	b.MaxInterval = s.MaxDelayBetweenEmptyPeeks
	b.RandomizationFactor = 0
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// newRetryBackoff is the wait before retrying after a failure: 100 ms doubling up to
// 30 s with jitter, forever.
func newRetryBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.Multiplier = 2
	b.MaxInterval = 30 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// maxSlotInUseRetries is how many consecutive "slot is active" errors (55006) Run
// retries (about 3 s of backoff) before returning ErrSlotInUse.
const maxSlotInUseRetries = 5

// maxCancelledPolls is how many consecutive polls cancelled by the server (57014)
// Run retries before it returns ErrStatementCancelled. A variable so tests can
// shrink it.
var maxCancelledPolls = 10

// clientEncoding is a select-list expression: the session's client_encoding, read
// with each poll's flush LSN (checkClientEncoding).
const clientEncoding = `pg_catalog.current_setting('client_encoding')`

// checkClientEncoding refuses a session whose client_encoding is not UTF8. pgoutput
// converts every text value (and every name in a RELATION) to the client encoding,
// and dbsync's values are Go strings in UTF-8: in another encoding they would be
// delivered as that encoding's bytes ('é' as "\xe9" in LATIN1), and a character it
// lacks would stop every peek. lib/pq asks for UTF8 when it connects; pgx does not,
// so the database's encoding (TestPgxOnNonUTF8Database), or a client_encoding set for
// the role or the database (ALTER ROLE/DATABASE ... SET)
// or in the options parameter (PGOPTIONS) reaches its sessions (TestClientEncodingOfRoleRefused).
func checkClientEncoding(enc string) error {
	if enc == "UTF8" {
		return nil
	}
	return fmt.Errorf("%w: the session's client_encoding is %s (the database's encoding, or set for the role or the database?), but dbsync reads text as UTF-8 and would deliver it in %s; add client_encoding=UTF8 to the connection string (pgx passes it to the server)", ErrConfig, enc, enc)
}

// isTransient tells whether err is worth retrying: a lost or refused connection, a
// server shutting down or starting, too many connections.
func isTransient(err error) bool {
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, sql.ErrConnDone) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	if code, _, ok := serverError(err); ok {
		switch {
		case strings.HasPrefix(code, "08"), code == "57P01", code == "57P02", code == "57P03", code == "53300",
			// The server ended an idle session: idle_in_transaction_session_timeout
			// (25P03), idle_session_timeout (57P05). The next attempt gets a new one.
			code == "25P03", code == "57P05":
			return true
		}
	}
	return false
}

// stopGrace is how long forwarding the slot past what was delivered may go on after
// Run's context ended.
const stopGrace = 10 * time.Second

// afterStop returns a context that does not end with ctx but grace after it, or when
// the returned cancel is called.
func afterStop(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-gctx.Done():
		}
	})
	return gctx, func() {
		stop()
		cancel()
	}
}

// sleepCtx waits d (nothing when d <= 0) and reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
