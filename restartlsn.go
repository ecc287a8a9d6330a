package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
)

// Keeping restart_lsn close to confirmed_flush_lsn.
//
// Every peek and every advance decodes the WAL again from the slot's restart_lsn
// (shared/reference/pg-logical-decoding.md §1). PostgreSQL moves restart_lsn only when
// decoding passes an xl_running_xacts record and the slot is then confirmed past it
// (logical.c: LogicalIncreaseRestartDecodingForSlot, LogicalConfirmReceivedLocation).
// Past confirmed_flush_lsn the slot holds one such candidate until it is confirmed, so
// one advance over several records moves restart_lsn only to the first of them; the
// next peek or advance, decoding them again below confirmed_flush_lsn, moves it to
// the last (TestAdvanceMovesRestartLSNToFirstRecord).
// The background writer logs one about every 15 s while there is activity
// (bgwriter.c: LOG_SNAPSHOT_INTERVAL_MS), so a Syncer that keeps up with a steady write
// load re-decodes up to ~15-30 s of WAL on every poll: at 1,000 transactions/s that
// keeps most of a server core busy (docs/BENCHMARKS.md, steady state).
//
// PostgreSQL 15 has no SQL function that only logs such a record
// (pg_log_standby_snapshot() arrived in 16, for superusers). Creating a logical slot
// logs one (slot.c: ReplicationSlotReserveWal calls LogStandbySnapshot), with the
// REPLICATION privilege the Syncer already needs. So when the slot's restart_lsn
// trails its confirmed_flush_lsn by more than Syncer.MaxRestartLSNLag, the Syncer
// creates a temporary logical slot and drops it in the same statement; the next poll
// decodes past the record and forwards the slot, and restart_lsn moves up to it.
//
// restart_lsn cannot move past the start of the oldest transaction still open (a
// long transaction pins it), and creating the slot waits for the transactions open
// when it started to end (snapbuild.c: SnapBuildWaitSnapshot). So the statement has a
// deadline (restartLogTimeout; the record is logged before the wait, and a cancelled
// creation drops its temporary slot), and when a logged record did not move
// restart_lsn, the checks back off exponentially up to restartCheckMaxInterval.

// restartCheckInterval is the least time between two checks of the slot's
// restart_lsn while polls read something; restartCheckMaxInterval caps the backoff
// after records that did not help. Variables so tests can shrink them.
var (
	restartCheckInterval    = 250 * time.Millisecond
	restartCheckMaxInterval = time.Minute
	restartLogTimeout       = 2 * time.Second
)

// restartKeeper is the state of the checks. The poll loop, and Forward for callers of
// the low-level API, start at most one check at a time, on its own goroutine, so a
// check never delays a poll; the fields that are not atomic (logged, restartAtLog,
// tried) are owned by the running check.
type restartKeeper struct {
	busy atomic.Bool
	next atomic.Int64 // no check before this time (Unix nanoseconds)
	mu   sync.Mutex
	done chan struct{} // closed when the check started last ends (nil: none yet); under mu
	logs atomic.Uint64 // records logged (tests, benchmarks)
	// warned is set once a full max_replication_slots was reported (once per Syncer).
	warned atomic.Bool

	logged       pglogrepl.LSN // the slot's position after the last record, until judged
	restartAtLog pglogrepl.LSN // restart_lsn when it was logged
	tried        int           // records logged since restart_lsn last moved
}

// RestartLSNLogs returns how many xl_running_xacts records this Syncer had PostgreSQL
// log to move its slot's restart_lsn (see Syncer.MaxRestartLSNLag).
func (s *Syncer) RestartLSNLogs() uint64 { return s.restart.logs.Load() }

// maybeCheckRestart starts a check of the slot's restart_lsn on its own goroutine,
// bounded by ctx, unless the feature is off, a check runs, the last one was too
// recent, or ctx is done. The poll loop calls it after each poll that read the slot,
// Forward after it moved the slot.
func (s *Syncer) maybeCheckRestart(ctx context.Context, now time.Time) {
	k := &s.restart
	if s.MaxRestartLSNLag <= 0 || now.UnixNano() < k.next.Load() || !k.busy.CompareAndSwap(false, true) {
		return
	}
	// Under mu, so that a check cannot start after cancelRestartChecks's cancel and be
	// missed by its wait.
	k.mu.Lock()
	if ctx.Err() != nil {
		k.mu.Unlock()
		k.busy.Store(false)
		return
	}
	done := make(chan struct{})
	k.done = done
	k.mu.Unlock()
	go func() {
		defer close(done)
		defer k.busy.Store(false)
		if err := s.checkRestart(ctx); err != nil && ctx.Err() == nil {
			if hasSQLState(err, "53400") && k.warned.CompareAndSwap(false, true) {
				s.log.Warn("dbsync: no free replication slot entry to log a running-transactions record with, so restart_lsn moves only about every 15 s and every poll decodes up to that much WAL again: raise max_replication_slots by one, or turn this off with WithMaxRestartLSNLag(0)",
					"slot", s.replicationSlot, "err", err)
			} else {
				s.log.Debug("dbsync: restart_lsn check failed", "slot", s.replicationSlot, "err", err)
			}
		}
		k.next.Store(time.Now().Add(k.backoff()).UnixNano())
	}()
}

// waitRestartChecks waits for the check started last, if any, to end (it stops with
// the context it was started with: the poll loop's, or the Syncer's own for
// Forward's checks). At most one check runs at a time.
func (s *Syncer) waitRestartChecks() {
	k := &s.restart
	k.mu.Lock()
	done := k.done
	k.mu.Unlock()
	if done != nil {
		<-done
	}
}

// cancelRestartChecks calls cancel, the context of the checks to end, so that no
// such check starts afterwards, and waits for the one that runs.
func (s *Syncer) cancelRestartChecks(cancel context.CancelFunc) {
	k := &s.restart
	k.mu.Lock()
	cancel()
	k.mu.Unlock()
	s.waitRestartChecks()
}

// backoff is the wait before the next check: restartCheckInterval, doubled for each
// record logged in a row that did not move restart_lsn, capped at
// restartCheckMaxInterval.
func (k *restartKeeper) backoff() time.Duration {
	d := restartCheckInterval
	for i := 1; i < k.tried && d < restartCheckMaxInterval; i++ {
		d *= 2
	}
	return min(d, restartCheckMaxInterval)
}

// checkRestart reads the slot's restart_lsn and confirmed_flush_lsn and, when they are
// more than MaxRestartLSNLag bytes apart, has PostgreSQL log an xl_running_xacts
// record — unless the record logged last is still waiting for the slot to be forwarded
// past it.
func (s *Syncer) checkRestart(ctx context.Context) error {
	k := &s.restart
	var r, c pglogrepl.LSN
	err := s.db.QueryRowContext(ctx, `SELECT restart_lsn::pg_catalog.text, confirmed_flush_lsn::pg_catalog.text FROM pg_catalog.pg_replication_slots
		WHERE slot_name OPERATOR(pg_catalog.=) $1 AND restart_lsn IS NOT NULL AND confirmed_flush_lsn IS NOT NULL`,
		s.replicationSlot).Scan(&r, &c)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // the poll reports a missing or invalidated slot
	}
	if err != nil {
		return classify(err, "read the slot's restart_lsn")
	}
	if !k.judge(r, c, s.MaxRestartLSNLag) {
		return nil
	}
	k.tried++
	at, err := s.logRunningXacts(ctx)
	if err != nil {
		return err
	}
	k.logs.Add(1)
	k.logged, k.restartAtLog = at, r
	s.log.Debug("dbsync: logged a running-transactions record to move restart_lsn",
		"slot", s.replicationSlot, "restart_lsn", r.String(), "confirmed_flush_lsn", c.String(), "at", at.String())
	return nil
}

// judge takes a reading of the slot's restart_lsn and confirmed_flush_lsn and says
// whether to log a record now: when they are more than maxLag bytes apart, unless the
// record logged last is still waiting for the slot to be forwarded past it. A record
// the slot was forwarded past without restart_lsn moving (an open transaction pins
// it) leaves k.tried counting, so the checks back off.
func (k *restartKeeper) judge(restart, confirmed pglogrepl.LSN, maxLag int64) bool {
	if k.logged != 0 {
		switch {
		case restart > k.restartAtLog:
			k.tried = 0 // it moved
		case confirmed < k.logged:
			return false // not forwarded past the record yet: judge it later
		}
		k.logged = 0
	}
	return confirmed > restart && uint64(confirmed-restart) > uint64(maxLag)
}

// logRunningXacts has PostgreSQL log an xl_running_xacts record by creating a
// temporary logical slot (pgoutput) and dropping it in the same statement, and returns
// the new slot's consistent point (past the record). The statement ends within
// restartLogTimeout: creating a slot waits for the transactions open when it started.
func (s *Syncer) logRunningXacts(ctx context.Context) (pglogrepl.LSN, error) {
	ctx, cancel := context.WithTimeout(ctx, restartLogTimeout)
	defer cancel()
	var lsn pglogrepl.LSN
	var dropped sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT lsn, pg_catalog.pg_drop_replication_slot(slot_name)::pg_catalog.text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput', true)`,
		scratchSlotName(s.replicationSlot, "_rx_")).Scan(&lsn, &dropped)
	if err != nil {
		return 0, classify(err, "log a running-transactions record (create and drop a temporary slot)")
	}
	return lsn, nil
}
