package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// The slot's driver lock. A Syncer reads its slot with short SQL calls (a peek, an
// advance), so PostgreSQL marks the slot active only while one runs: a second Syncer
// (another process) on the same slot would not be refused by the server, and each
// would peek from wherever the other advanced the slot to, missing what the other
// took. Run therefore holds a session advisory lock keyed by the slot name
// (slotLockSQL) on a connection of its own while it runs; another Run of that slot, or
// a Teardown of it, finds it taken and returns ErrSlotInUse.

// slotLockKey is the advisory lock key of a slot: a 64-bit hash of its name (one
// key space with setupLockKey, which a hash equals with probability 2^-64).
const slotLockKey = `pg_catalog.hashtextextended(pg_catalog.concat('dbsync slot ', $1::pg_catalog.text), 0)`

// slotLockHolder names the backend PID holding the slot lock (0 when none is found).
const slotLockHolder = `SELECT COALESCE((SELECT l.pid FROM pg_catalog.pg_locks l
	WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted AND l.objsubid OPERATOR(pg_catalog.=) 1
	AND l.database OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
	AND ((l.classid::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32) OPERATOR(pg_catalog.|) l.objid::pg_catalog.int8) OPERATOR(pg_catalog.=) ` + slotLockKey + ` LIMIT 1), 0)`

// trySlotLock takes the slot lock on conn; taken is false when another session holds
// it, pid being that session's backend PID.
//
// The queries run to their end even when ctx ends meanwhile (bounded by
// slotLockQueryTimeout): database/sql reports a query whose context ended as failed
// even when the server ran it, which would leave the lock taken on a session nobody
// knows holds it, back in the pool.
func (s *Syncer) trySlotLock(ctx context.Context, conn *sql.Conn) (taken bool, pid int, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slotLockQueryTimeout)
	defer cancel()
	if err := conn.QueryRowContext(ctx, `SELECT pg_catalog.pg_try_advisory_lock(`+slotLockKey+`)`, s.replicationSlot).Scan(&taken); err != nil {
		return false, 0, err
	}
	if taken {
		return true, 0, nil
	}
	if err := conn.QueryRowContext(ctx, slotLockHolder, s.replicationSlot).Scan(&pid); err != nil {
		return false, 0, err
	}
	return false, pid, nil
}

// unlockSlot releases the slot lock taken on conn. It runs after Run's context ended,
// so it does not end with ctx but after cleanupTimeout: a server that does not answer
// (a network partition, a frozen server) kept Run from returning for good
// (TestBlackholeCancelRunReturns). When it fails, conn's session is closed rather than
// returned to the pool still holding the lock (the server drops the lock with the
// session).
func (s *Syncer) unlockSlot(ctx context.Context, conn *sql.Conn) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, err := conn.ExecContext(ctx, `SELECT pg_catalog.pg_advisory_unlock(`+slotLockKey+`)`, s.replicationSlot)
	if err != nil {
		endSession(conn)
	}
	return err
}

// unlockSetup releases the setup lock (setupLockKey+1, which ensureSlot and
// TeardownWithResult take on conn). Like unlockSlot it runs when ctx may have ended
// and gives up after cleanupTimeout, closing conn's session (the server drops the
// lock with it): without a bound, a server that stopped answering kept a Teardown
// whose context ended waiting for good through pgx
// (TestBlackholeTeardownUnlockReturns).
func unlockSetup(ctx context.Context, conn *sql.Conn) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, err := conn.ExecContext(ctx, `SELECT pg_catalog.pg_advisory_unlock($1)`, setupLockKey+1)
	if err != nil {
		endSession(conn)
	}
	return err
}

// cleanupTimeout bounds a statement that must run after the caller's context ended
// (releasing a lock): past it the statement is abandoned and its session closed.
const cleanupTimeout = 5 * time.Second

// slotLockQueryTimeout bounds the slot lock's queries, which run to their end when
// Run's context ends (trySlotLock).
const slotLockQueryTimeout = 30 * time.Second

// errSlotDriven is ErrSlotInUse for a slot whose lock the backend pid holds.
func (s *Syncer) errSlotDriven(pid int, what string) error {
	return fmt.Errorf("%w: slot %q is driven by a running Syncer (or `dbsync tail`): backend PID %d holds its lock; only one process may drive a slot, as each would skip the changes the other consumed: %s (give each consumer a slot of its own, WithReplicationSlot / %s)",
		ErrSlotInUse, s.replicationSlot, pid, what, EnvReplSlot)
}

// slotLockKeepalive is how often Run's slot lock session is checked (and kept from
// idle_session_timeout): a session the server ended is replaced, the lock taken again.
var slotLockKeepalive = 10 * time.Second

// lockSlotForRun takes the slot lock for Run on a connection it keeps until release
// is called (the connection's session then ends: its idle_session_timeout is off,
// keepSessionIdle). It holds one connection of the pool while Run runs, so it is taken only
// on a pool without a limit (SetMaxOpenConns, 0: the default, and the pool NewSyncer
// opens itself); on a limited pool, which Run's two connections may exhaust, Run
// holds no lock (README, "Only one process may drive a slot"). A connection failure
// is retried with Run's backoff until ctx ends (release is then a no-op and err nil:
// Run returns). Every slotLockKeepalive the session is checked; one that ended (a
// server restart, pg_terminate_backend, idle_session_timeout) is replaced and the
// lock taken again, and when another session took it meanwhile, lost is called with
// ErrSlotInUse. Errors: ErrSlotInUse when another session holds the lock.
func (s *Syncer) lockSlotForRun(ctx context.Context, lost func(error)) (release func(), err error) {
	noop := func() {}
	if s.db.Stats().MaxOpenConnections != 0 {
		return noop, nil
	}
	retry := newRetryBackoff()
	for {
		mark := s.silenceMark()
		conn, taken, pid, err := s.takeSlotLock(ctx)
		switch {
		case taken:
			s.keepSessionIdle(ctx, conn)
			stop, done := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				conn = s.keepSlotLock(ctx, conn, stop, lost)
			}()
			return func() {
				close(stop)
				<-done
				if conn == nil {
					return
				}
				if s.silentSince(mark) {
					// The server stopped answering (the stop's sweep closed the
					// sockets stuck on it): the unlock would hang the same way,
					// taking Run past its bound (TestPartitionRunStopsAfterOneSweep).
					// Ending the session drops the lock as well, on the server's side
					// once it sees the connection close.
					s.log.Debug("dbsync: the server did not answer; the slot lock's session is closed without an unlock")
					endSession(conn)
					conn.Close()
					return
				}
				if err := s.unlockSlot(ctx, conn); err != nil {
					s.log.Debug("dbsync: cannot release the slot lock; its connection was closed", "err", err)
				}
				// Its idle_session_timeout is off (keepSessionIdle): the session
				// ends rather than going back to the pool.
				endSession(conn)
				conn.Close()
			}, nil
		case ctx.Err() != nil:
			return noop, nil
		case err == nil:
			return noop, s.errSlotDriven(pid, "stop it first")
		case !isTransient(err):
			return noop, classify(err, "lock slot "+s.replicationSlot)
		}
		wait := retry.NextBackOff()
		s.log.Warn("dbsync: cannot take the slot lock; retrying", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return noop, nil
		case <-t.C:
		}
	}
}

// takeSlotLock takes the slot lock on a new connection of the pool, returned when
// taken; pid is the holder when another session has it.
func (s *Syncer) takeSlotLock(ctx context.Context) (conn *sql.Conn, taken bool, pid int, err error) {
	conn, err = s.db.Conn(ctx)
	if err != nil {
		return nil, false, 0, err
	}
	taken, pid, err = s.trySlotLock(ctx, conn)
	if err != nil {
		// Whether the lock was taken is not known: the session goes, and the lock
		// with it, rather than back to the pool.
		endSession(conn)
	}
	if err != nil || !taken {
		conn.Close()
		return nil, false, pid, err
	}
	return conn, true, 0, nil
}

// keepSessionIdle turns idle_session_timeout (PostgreSQL 14 and later) off on Run's
// slot lock session, which stays idle between keepalives (slotLockKeepalive): a
// timeout of the role shorter than that ended it, leaving the slot unlocked until the
// next check, and another Syncer's SkipBacklog or Teardown went through under the
// running one (TestSlotLockIdleSessionTimeout). The session ends when Run releases the
// lock, so the pool's sessions keep the role's setting. On failure the keepalive
// still replaces an ended session.
func (s *Syncer) keepSessionIdle(ctx context.Context, conn *sql.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slotLockQueryTimeout)
	defer cancel()
	if _, err := conn.ExecContext(ctx, `SELECT pg_catalog.set_config('idle_session_timeout', '0', false)
		WHERE pg_catalog.current_setting('idle_session_timeout', true) IS NOT NULL`); err != nil {
		s.log.Debug("dbsync: cannot turn idle_session_timeout off on the slot lock session", "err", err)
	}
}

// keepSlotLock checks the slot lock's session every slotLockKeepalive until stop is
// closed or ctx ends, replacing a session that ended; it returns the connection
// holding the lock (nil when it holds none).
func (s *Syncer) keepSlotLock(ctx context.Context, conn *sql.Conn, stop <-chan struct{}, lost func(error)) *sql.Conn {
	t := time.NewTicker(slotLockKeepalive)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return conn
		case <-ctx.Done():
			return conn
		case <-t.C:
		}
		if conn != nil {
			_, err := conn.ExecContext(ctx, `SELECT 1`)
			if err == nil || ctx.Err() != nil {
				continue
			}
			s.log.Warn("dbsync: the slot lock's session ended; taking the lock again", "slot", s.replicationSlot, "err", err)
			endSession(conn)
			conn.Close()
			conn = nil
		}
		c, taken, pid, err := s.takeSlotLock(ctx)
		switch {
		case taken:
			s.keepSessionIdle(ctx, c)
			conn = c
		case ctx.Err() != nil:
			return nil
		case err == nil:
			lost(s.errSlotDriven(pid, "it took the slot lock after this Syncer's lock session ended; this Syncer stopped"))
			return nil
		default:
			s.log.Warn("dbsync: cannot take the slot lock again; retrying", "slot", s.replicationSlot, "err", err, "retry_in", slotLockKeepalive)
		}
	}
}
