package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"
)

// lockWaitWarnAfter is how long a statement of a Refresh or Snapshot (a selection's
// LOCK TABLE and SELECT, a Refresh query's planning, a watermark's INSERT) may run
// before the Syncer looks whether it waits for a lock another session holds, and logs
// who holds it.
const lockWaitWarnAfter = 2 * time.Second

// Lock modes that conflict with the ones dbsync's statements wait for (the
// "Conflicting Lock Modes" table of the PostgreSQL documentation, 13.3.1).
var (
	// accessShareConflicts: a selection's LOCK TABLE ... IN ACCESS SHARE MODE, its
	// SELECT, a Refresh query's planning.
	accessShareConflicts = []string{"AccessExclusiveLock"}
	// rowExclusiveConflicts: a watermark's INSERT.
	rowExclusiveConflicts = []string{"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}
	// writerLockModes: the locks of the table's writers a Snapshot waits for
	// (sql/table_writers.sql).
	writerLockModes = []string{"RowExclusiveLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}
)

// lockWatch watches one statement (or a few in a row) of a Refresh or Snapshot that may
// wait for a lock on a table (watchLock). It costs a timer: no statement runs unless
// the statement is still running after lockWaitWarnAfter, or fails because its wait
// was cut short (end).
type lockWatch struct {
	s     *Syncer
	ctx   context.Context
	rel   string   // the table, quoted and qualified; "" when not known (a Refresh query)
	stmt  string   // when rel is "": the waiting statement's text, to find its session
	modes []string // lock modes that conflict with the one waited for
	what  string
	timer *time.Timer
	fired chan struct{} // closed when the timer's look is done
	found string        // the holders the timer's look found ("": none)
	// serverAnswered: the wait ended on the client (a Snapshot's wait for the
	// table's writers) right after the server answered a look, so end may look
	// again though err is no server error.
	serverAnswered bool
}

// watchLock starts watching a wait for a lock on rel (quoted and qualified; "" when
// not known: then the session running stmt is looked for among those waiting for a
// lock) in one of the modes that conflict with modes. After lockWaitWarnAfter the
// holders of such locks (sessions with their PID and state, prepared transactions
// with their gid) are looked up and, if there are any, logged once as a warning.
// end must be called when the statements are done.
func (s *Syncer) watchLock(ctx context.Context, rel, stmt string, modes []string, what string) *lockWatch {
	w := &lockWatch{s: s, ctx: ctx, rel: rel, stmt: stmt, modes: modes, what: what, fired: make(chan struct{})}
	after := lockWaitWarnAfter
	w.timer = time.AfterFunc(after, func() {
		defer close(w.fired)
		table, holders := s.lockHolders(ctx, rel, stmt, modes)
		if holders == "" {
			return
		}
		w.found = lockHeld(table, holders)
		s.log.Warn("dbsync: "+what+" has been waiting for a lock on a table that another session or a prepared transaction holds; end that transaction (pg_terminate_backend(pid) for a session, COMMIT PREPARED or ROLLBACK PREPARED for a prepared one) or wait for it",
			"table", table, "waited", after, "held_by", holders)
	})
	return w
}

// end stops the watch and returns err, with the lock it waited for and who holds it
// appended when err ended a wait (the caller's context ended, or the server cut the
// statement short: statement_timeout, lock_timeout) and such a lock was found: by the
// timer's look, or (rel known, the server's own error, the Syncer not closed) by a
// look now, bounded by 2 s.
// The error wraps err (errors.Is and errors.As see what it saw).
func (w *lockWatch) end(err error) error {
	if w.timer.Stop() {
		close(w.fired)
	} else {
		<-w.fired
	}
	if err == nil || (w.ctx.Err() == nil && selectionCutShort(err) == "") {
		return err
	}
	found := w.found
	if _, _, server := serverError(err); found == "" && w.rel != "" && (server || w.serverAnswered) {
		// Only when the server answered (lib/pq's cancelled statement, a timeout):
		// one whose session was cut off (pgx ends a statement whose context ended by
		// closing its connection) may be unreachable, and the look would only keep
		// the caller waiting.
		w.s.mu.Lock()
		closed := w.s.closed
		w.s.mu.Unlock()
		if !closed {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 2*time.Second)
			table, holders := w.s.lockHolders(ctx, w.rel, "", w.modes)
			cancel()
			if holders != "" {
				found = lockHeld(table, holders)
			}
		}
	}
	if found == "" {
		return err
	}
	return fmt.Errorf("%w (%s)", err, found)
}

// lockHeld is what an error says of a lock on table that holders hold.
func lockHeld(table, holders string) string {
	return "waiting for a lock on " + table + " held by " + holders
}

// lockHolders lists, for lockWatch, the sessions and prepared transactions holding a
// lock in one of modes on rel (or, rel "", on the table the session running stmt waits
// for): "PID n (state, in transaction since t)" or "prepared transaction 'gid'
// (prepared at t)", joined with ", "; and the table's name. "" when there are none or
// they cannot be listed (other roles' sessions show no state without
// pg_read_all_stats; the lock itself is listed all the same).
func (s *Syncer) lockHolders(ctx context.Context, rel, stmt string, modes []string) (table, holders string) {
	rows, err := s.db.QueryContext(ctx, `WITH r AS (
		SELECT COALESCE(pg_catalog.to_regclass(NULLIF($1, '')),
			(SELECT l.relation FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
			WHERE NOT l.granted AND l.locktype OPERATOR(pg_catalog.=) 'relation' AND $2 OPERATOR(pg_catalog.<>) ''
				AND a.query OPERATOR(pg_catalog.=) $2 LIMIT 1)) AS oid)
		SELECT pg_catalog.concat(pg_catalog.quote_ident(n.nspname), '.', pg_catalog.quote_ident(c.relname)),
			h.pid, h.mode, a.state, a.xact_start::pg_catalog.text, p.gid, p.database, p.prepared::pg_catalog.text
		FROM r JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.oid
		JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
		JOIN pg_catalog.pg_locks h ON h.locktype OPERATOR(pg_catalog.=) 'relation' AND h.relation OPERATOR(pg_catalog.=) r.oid
			AND h.database OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
			AND h.granted AND h.mode OPERATOR(pg_catalog.=) ANY ($3)
		LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) h.pid
		LEFT JOIN pg_catalog.pg_locks x ON h.pid IS NULL AND x.pid IS NULL AND x.locktype OPERATOR(pg_catalog.=) 'transactionid'
			AND x.virtualtransaction OPERATOR(pg_catalog.=) h.virtualtransaction
		LEFT JOIN pg_catalog.pg_prepared_xacts p ON p.transaction OPERATOR(pg_catalog.=) x.transactionid
		ORDER BY a.xact_start, p.prepared LIMIT 5`, rel, stmt, pq.StringArray(modes))
	if err != nil {
		return "", ""
	}
	defer rows.Close()
	var list []string
	for rows.Next() {
		var pid sql.NullInt64
		var mode string
		var state, since, gid, gdb, prepared sql.NullString
		if rows.Scan(&table, &pid, &mode, &state, &since, &gid, &gdb, &prepared) != nil {
			return "", ""
		}
		switch {
		case pid.Valid:
			d := fmt.Sprintf("PID %d (%s", pid.Int64, mode)
			if state.Valid {
				d += ", " + state.String
			}
			if since.Valid {
				d += ", in a transaction since " + since.String
			}
			list = append(list, d+")")
		case gid.Valid:
			list = append(list, fmt.Sprintf("prepared transaction %s (%s, database %s, prepared at %s)",
				pq.QuoteLiteral(gid.String), mode, gdb.String, prepared.String))
		default:
			list = append(list, "a prepared transaction ("+mode+")")
		}
	}
	if rows.Err() != nil || len(list) == 0 {
		return "", ""
	}
	return table, strings.Join(list, ", ")
}
