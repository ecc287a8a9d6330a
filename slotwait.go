package dbsync

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// slotCreationWarnAfter is how long creating the slot may take before the Syncer
// logs what it waits for.
const slotCreationWarnAfter = 2 * time.Second

// watchSlotCreation logs a warning, once, if creating the slot takes longer than
// after: pg_create_logical_replication_slot waits until every transaction that held a
// transaction ID when it began has ended (it builds the slot's initial snapshot: the
// "Logical Decoding Concepts" of the PostgreSQL documentation, 49.2), prepared ones
// included, so one left open elsewhere in the cluster makes setup wait without a word.
// The warning names how many such transactions there are and the oldest (PID,
// database, start, state), and the oldest prepared one (gid, database, when it was
// prepared), so the operator can end them. The returned function stops
// the watch and waits for it.
func (s *Syncer) watchSlotCreation(ctx context.Context, after time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(after)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var open, prepared int64
		var pid sql.NullInt64
		var datname, state, started sql.NullString
		var pgid, pdatname, pstarted sql.NullString
		// Transactions with an xid, other than the session creating the slot (it
		// holds none: the call cannot run in a transaction that wrote).
		err := s.db.QueryRowContext(ctx, `SELECT
			(SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity WHERE backend_xid IS NOT NULL),
			(SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_xacts),
			o.pid, o.datname, o.state, o.xact_start::pg_catalog.text,
			p.gid, p.database, p.prepared::pg_catalog.text
			FROM (SELECT) AS x LEFT JOIN (SELECT pid, datname, state, xact_start FROM pg_catalog.pg_stat_activity
				WHERE backend_xid IS NOT NULL ORDER BY xact_start LIMIT 1) AS o ON true
			LEFT JOIN (SELECT gid, database, prepared FROM pg_catalog.pg_prepared_xacts ORDER BY prepared LIMIT 1) AS p ON true`).Scan(
			&open, &prepared, &pid, &datname, &state, &started, &pgid, &pdatname, &pstarted)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("dbsync: creating the replication slot takes long; it waits for transactions open in the cluster to end (could not list them)",
					"slot", s.replicationSlot, "waited", after, "err", err)
			}
			return
		}
		msg := "dbsync: creating the replication slot waits for transactions that were open when it began to end (pg_create_logical_replication_slot builds its snapshot after them); commit or end them, a prepared one with COMMIT PREPARED or ROLLBACK PREPARED"
		if open == 0 && prepared == 0 {
			// Other roles' sessions show no xid to a role without pg_read_all_stats.
			msg += "; none is visible to this role (grant it pg_read_all_stats to see other roles' sessions, or look as a superuser)"
		}
		attrs := []any{"slot", s.replicationSlot, "waited", after, "open_transactions", open, "prepared_transactions", prepared,
			"oldest_pid", pid.Int64, "oldest_database", datname.String, "oldest_state", state.String, "oldest_since", started.String}
		if pgid.Valid {
			// A prepared transaction has no session (no PID): it is ended by its gid,
			// in its database.
			attrs = append(attrs, "oldest_prepared_gid", pgid.String, "oldest_prepared_database", pdatname.String,
				"oldest_prepared_since", pstarted.String)
		}
		s.log.Warn(msg, attrs...)
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}
