package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/lib/pq"
)

// SlotStatus is the state of the Syncer's replication slot, from pg_replication_slots
// (PostgreSQL docs §54.19 "pg_replication_slots"), the server's current WAL
// positions (§9.27.3, pg_current_wal_lsn / pg_current_wal_flush_lsn) and the slot's
// decoding statistics (pg_stat_replication_slots).
type SlotStatus struct {
	// Slot, Plugin, SlotType and Database are slot_name, plugin, slot_type, database.
	Slot     string
	Plugin   string
	SlotType string
	Database string
	// Active tells whether a process is reading the slot now; ActivePID is its
	// backend PID (0 when none).
	Active    bool
	ActivePID int
	// ConfirmedFlushLSN: changes of transactions committed before it are not sent
	// again. RestartLSN: the oldest WAL the slot retains (0 once invalidated).
	ConfirmedFlushLSN pglogrepl.LSN
	RestartLSN        pglogrepl.LSN
	// WALStatus is reserved, extended, unreserved (WAL will be removed at the next
	// checkpoint) or lost (the slot is invalidated).
	WALStatus string
	// CurrentLSN is pg_current_wal_lsn(), FlushLSN pg_current_wal_flush_lsn().
	CurrentLSN pglogrepl.LSN
	FlushLSN   pglogrepl.LSN
	// RetainedWALBytes = CurrentLSN - RestartLSN: WAL the server keeps for this slot
	// (bytes; 0 when RestartLSN is unset).
	RetainedWALBytes int64
	// LagBytes = FlushLSN - ConfirmedFlushLSN: flushed WAL the consumer has not
	// confirmed yet (bytes; 0 when it is caught up).
	LagBytes int64
	// Stats are the slot's decoding statistics (pg_stat_replication_slots; the zero
	// value before PostgreSQL 14, or before the slot decoded anything).
	Stats SlotStats
}

// SlotStats are a slot's cumulative decoding statistics since they were last reset,
// from pg_stat_replication_slots (PostgreSQL docs, "Monitoring Database Activity",
// pg_stat_replication_slots; PostgreSQL 14 and later).
// They count every decoding of the slot, each peek included, so a transaction decoded
// again by a later poll counts again; a split poll's temporary copy keeps its own
// statistics, which go with it.
//
// Spilling is the figure to watch: a transaction whose changes take more than
// logical_decoding_work_mem in the reorder buffer is written to disk and read back,
// which doubled the server's decoding time of a 1,000,000-row transaction in
// docs/BENCHMARKS.md ("Large transactions"). If SpillBytes keeps growing, raise
// logical_decoding_work_mem for the Syncer's connections (README, "Throughput").
type SlotStats struct {
	// SpillTxns is the number of transactions spilled to disk, SpillCount how many
	// times they were, SpillBytes how much was written (bytes).
	SpillTxns, SpillCount, SpillBytes int64
	// StreamTxns and StreamBytes: in-progress transactions streamed to the output
	// plugin (0 with dbsync, which does not ask pgoutput to stream).
	StreamTxns, StreamBytes int64
	// TotalTxns and TotalBytes: transactions and decoded bytes sent to the output
	// plugin.
	TotalTxns, TotalBytes int64
}

// Status reads the Syncer's slot from pg_replication_slots and its statistics from
// pg_stat_replication_slots. It creates nothing, so it can run on a Syncer made with
// WithSetup(false) next to a running consumer. Returns ErrSlotMissing (wrapped) if
// there is no such slot, ErrClosed after Close, ErrStatementCancelled when the server
// cancelled its statement (a statement_timeout of dbsync's role: raise it). When ctx
// ended, the error wraps ctx's error and names the call ("Status: context canceled: ...").
func (s *Syncer) Status(ctx context.Context) (_ SlotStatus, err error) {
	var st SlotStatus
	if err := s.checkOpen("Status"); err != nil {
		return st, err
	}
	defer func() { err = withCtxErr(ctx, "Status", errCancelledCall(ctx, "Status", err)) }()
	var confirmed, restart sql.NullString
	var current, flush string
	var version int
	err = s.db.QueryRowContext(ctx, sqlText("slot_status.sql"), s.replicationSlot).Scan(
		&st.Slot, &st.Plugin, &st.SlotType, &st.Database, &st.Active, &st.ActivePID,
		&confirmed, &restart, &st.WALStatus, &current, &flush, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("%w: %q: nothing to report; it is created by NewSyncer (or `dbsync tail`) on first use", ErrSlotMissing, s.replicationSlot)
	}
	if err != nil {
		return st, classify(err, "read slot status of "+s.replicationSlot)
	}
	for _, p := range []struct {
		dst *pglogrepl.LSN
		src sql.NullString
	}{{&st.ConfirmedFlushLSN, confirmed}, {&st.RestartLSN, restart},
		{&st.CurrentLSN, sql.NullString{String: current, Valid: true}}, {&st.FlushLSN, sql.NullString{String: flush, Valid: true}}} {
		if !p.src.Valid {
			continue
		}
		lsn, err := pglogrepl.ParseLSN(p.src.String)
		if err != nil {
			return st, fmt.Errorf("dbsync: slot %q: %w", s.replicationSlot, err)
		}
		*p.dst = lsn
	}
	if st.RestartLSN != 0 && st.CurrentLSN > st.RestartLSN {
		st.RetainedWALBytes = int64(st.CurrentLSN - st.RestartLSN)
	}
	if st.ConfirmedFlushLSN != 0 && st.FlushLSN > st.ConfirmedFlushLSN {
		st.LagBytes = int64(st.FlushLSN - st.ConfirmedFlushLSN)
	}
	if st.Stats, err = s.slotStats(ctx, version); err != nil {
		return st, err
	}
	return st, nil
}

// slotStats reads the slot's row of pg_stat_replication_slots: the zero value when it
// has none, or when the server (version: server_version_num) is older than PostgreSQL
// 14, which has no such view.
func (s *Syncer) slotStats(ctx context.Context, version int) (SlotStats, error) {
	var st SlotStats
	if version < 140000 {
		return st, nil
	}
	err := s.db.QueryRowContext(ctx, sqlText("slot_stats.sql"), s.replicationSlot).Scan(
		&st.SpillTxns, &st.SpillCount, &st.SpillBytes, &st.StreamTxns, &st.StreamBytes, &st.TotalTxns, &st.TotalBytes)
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, classify(err, "read slot statistics of "+s.replicationSlot)
	}
	return st, nil
}

// TeardownResult says what Teardown removed, what it kept, and why.
type TeardownResult struct {
	// SlotDropped: the slot existed and was dropped (false: there was none).
	SlotDropped bool
	// OtherSlots are the other slots of this database that may be Syncers (or `dbsync
	// tail`) sharing the control schema, the watermark table and the publication:
	// every logical slot of this database whose plugin is pgoutput (or not set yet:
	// one being created) and which is not temporary, in name order. dbsync cannot
	// tell which publication or control schema a slot is read with, so when there
	// are any, Teardown keeps the schema, the watermark table and its place in the
	// publication, and only deletes this slot's rows of the snapshot progress table.
	OtherSlots []string
	// ProgressRowsDeleted: this slot's rows deleted from the snapshot progress table
	// of a kept control schema.
	ProgressRowsDeleted int64
	// WMTableUnpublished: the watermark table was taken out of the publication.
	WMTableUnpublished bool
	// CtrlSchemaDropped: dbsync's tables and the control schema were dropped.
	CtrlSchemaDropped bool
}

// Kept tells whether the control schema and the watermark table were kept because
// other slots may still use them (OtherSlots).
func (r TeardownResult) Kept() bool { return len(r.OtherSlots) > 0 }

// SkipBacklog forwards the slot to the current WAL flush LSN
// (pg_replication_slot_advance), skipping every change not yet confirmed, for every
// consumer of the slot; it returns the slot's new position (`dbsync tail -from-now`).
// Like Teardown it takes the slot's lock (see Run) for the advance, so it returns
// ErrSlotInUse, and moves nothing, while a Syncer runs on the slot in this or another
// process: that Syncer's unprocessed changes would be lost to it. It returns
// ErrAlreadyRunning while this Syncer's Run runs and ErrClosed after Close, and
// ErrSlotMismatch, moving nothing, for a slot dbsync does not read (not a logical
// pgoutput slot of this database, or a two_phase one: see Setup), and
// ErrStatementCancelled when the server cancelled a statement of its lookup (a
// statement_timeout of dbsync's role: raise it; the slot was not moved). When ctx ended,
// the error wraps ctx's error and names the call. The advance decodes
// the whole backlog and runs with statement_timeout off (a statement_timeout of the
// role, the database or the connection string does not cancel it; the pool's
// sessions keep theirs).
func (s *Syncer) SkipBacklog(ctx context.Context) (lsn pglogrepl.LSN, err error) {
	if err := s.checkLowLevelCall("SkipBacklog"); err != nil {
		return 0, err
	}
	defer func() { err = withCtxErr(ctx, "SkipBacklog", errCancelledCall(ctx, "SkipBacklog", err)) }()
	conn, taken, pid, err := s.takeSlotLock(ctx)
	if err != nil {
		return 0, s.diagnose(ctx, classify(err, "lock slot "+s.replicationSlot))
	}
	if !taken {
		return 0, s.errSlotDriven(pid, "stop it before skipping its backlog")
	}
	restore := func() {}
	defer func() {
		if uerr := s.unlockSlot(ctx, conn); uerr != nil && err == nil {
			err = classify(uerr, "unlock slot "+s.replicationSlot)
		}
		restore()
		conn.Close()
	}()
	// Only a slot dbsync reads: advancing another (a physical slot of a standby, a
	// subscription's two_phase slot) would skip WAL or changes its consumer needs.
	var slotType, plugin, database, current string
	var twoPhase bool
	err = conn.QueryRowContext(ctx, `SELECT slot_type, COALESCE(plugin, ''), COALESCE(database, ''),
		COALESCE((pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.->>) 'two_phase')::pg_catalog.bool, false), pg_catalog.current_database()
		FROM pg_catalog.pg_replication_slots s WHERE slot_name OPERATOR(pg_catalog.=) $1`, s.replicationSlot).Scan(&slotType, &plugin, &database, &twoPhase, &current)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// The advance names it (ErrSlotMissing).
	case err != nil:
		return 0, classify(err, "look up replication slot "+s.replicationSlot)
	case twoPhase && slotType == "logical" && plugin == "pgoutput" && database == current:
		return 0, s.errSlotTwoPhase()
	default:
		if err := s.errForeignSlot(slotType, plugin, database, current, "SkipBacklog does not move it"); err != nil {
			return 0, err
		}
	}
	// The advance decodes the whole backlog, which takes as long as it is big: like
	// the peek and Run's advance it runs with statement_timeout off (untimed.go).
	if restore, err = s.untimedConn(ctx, conn); err != nil {
		restore = func() {}
		return 0, classify(err, "turn statement_timeout off for the advance of slot "+s.replicationSlot)
	}
	if err := conn.QueryRowContext(ctx, `SELECT end_lsn FROM pg_catalog.pg_replication_slot_advance($1, pg_catalog.pg_current_wal_flush_lsn())`,
		s.replicationSlot).Scan(&lsn); err != nil {
		return 0, s.diagnose(ctx, classify(err, "advance slot "+s.replicationSlot+" to the flush LSN"))
	}
	return lsn, nil
}

// Teardown is TeardownWithResult without the result (what it did is logged at Info).
func (s *Syncer) Teardown(ctx context.Context) error {
	if err := s.checkOpen("Teardown"); err != nil {
		return err
	}
	defer s.unstickAfter(ctx)() // lib/pq on a server that does not answer: sockets.go
	_, err := s.teardown(ctx)
	return s.endCall(ctx, "Teardown", errCancelledCall(ctx, "Teardown", err))
}

// TeardownWithResult removes what Setup created for this Syncer, so nothing keeps
// retaining WAL, without touching what other Syncers of the database may use:
//
//  1. It drops the replication slot (pg_drop_replication_slot), but only a logical
//     pgoutput slot of this database that is not temporary and not two_phase: the
//     kind Setup creates.
//  2. If other slots may be Syncers sharing the control schema, the watermark table
//     and the publication (TeardownResult.OtherSlots: non-temporary logical pgoutput
//     slots of this database), it keeps those and deletes only this slot's rows of
//     the snapshot progress table (a later Syncer with this slot name starts its
//     snapshots over). The teardown of the last such slot removes them.
//  3. Otherwise it takes the watermark table out of the publication (ALTER
//     PUBLICATION ... DROP TABLE, unless the publication is FOR ALL TABLES or does
//     not hold it by itself: one publishing it FOR TABLES IN SCHEMA of the control
//     schema loses the table, and the schema, when they are dropped), drops dbsync's two tables (the watermark and snapshot progress
//     tables) and then the control schema, never with CASCADE, in one transaction:
//     if anything dbsync did not create is in the schema or depends on its tables
//     (a type, a view, a column of such a type), nothing of step 3 is done.
//
// Steps 2 and 3 run under the lock Setup creates slots under, so a Syncer setting up
// at the same time is either seen in step 2 or sets up again what step 3 removed.
// The publication itself and the published tables are left alone. Running it again
// does nothing: every step is skipped when already done.
//
// Errors: ErrSlotInUse when a process is reading the slot, or a Syncer runs on it
// holding its lock (see Run), in this or another process (stop it first; nothing is
// dropped);
// ErrSlotMismatch when the slot is not a logical pgoutput slot of this database, or
// is another session's temporary slot, or a two_phase slot (nothing is dropped then); ErrCtrlSchemaNotEmpty
// when the control schema holds anything but dbsync's tables, something depends on
// those, or the schema is public, information_schema or pg_* (the slot is dropped,
// the rest kept); ErrClosed after Close (nothing is dropped: make a new Syncer);
// ErrStatementCancelled when the server cancelled a statement of it (a
// statement_timeout of dbsync's role: raise it, and run it again); or the server's
// error (wrapping ctx's error too when ctx ended: the error that came first leads
// the message, as for GetMessagesContext). With the server not answering it
// returns within about 30 s (the slot lock check's bound) once ctx ended (README,
// "Stopping when the server does not answer").
func (s *Syncer) TeardownWithResult(ctx context.Context) (res TeardownResult, err error) {
	if err := s.checkOpen("TeardownWithResult"); err != nil {
		return res, err
	}
	defer s.unstickAfter(ctx)() // lib/pq on a server that does not answer: sockets.go
	res, err = s.teardown(ctx)
	return res, s.endCall(ctx, "TeardownWithResult", errCancelledCall(ctx, "TeardownWithResult", err))
}

// teardown is TeardownWithResult for Teardown and TeardownWithResult.
func (s *Syncer) teardown(ctx context.Context) (res TeardownResult, err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return res, classify(err, "connect for teardown")
	}
	defer conn.Close()
	// The session lock ensureSlot creates slots under (setup.go).
	if _, err := conn.ExecContext(ctx, `SELECT pg_catalog.pg_advisory_lock($1)`, setupLockKey+1); err != nil {
		return res, classify(err, "lock teardown")
	}
	defer func() {
		if uerr := unlockSetup(ctx, conn); uerr != nil && err == nil {
			err = classify(uerr, "unlock teardown")
		}
	}()
	// A Syncer running on the slot holds the slot lock (slotlock.go) between its
	// polls, when PostgreSQL does not mark the slot active.
	taken, pid, err := s.trySlotLock(ctx, conn)
	if err != nil {
		// Whether the lock was taken is not known: the session goes with it.
		endSession(conn)
		return res, classify(err, "lock slot "+s.replicationSlot)
	}
	if !taken {
		return res, s.errSlotDriven(pid, "stop it before tearing the slot down")
	}
	defer func() {
		if uerr := s.unlockSlot(ctx, conn); uerr != nil && err == nil {
			err = classify(uerr, "unlock slot "+s.replicationSlot)
		}
	}()
	if res.SlotDropped, err = s.dropSlot(ctx, conn); err != nil {
		return res, err
	}
	err = s.teardownCatalog(ctx, conn, &res)
	return res, err
}

// dropSlot drops the Syncer's slot if it is one Setup could have created; dropped is
// false when there is none.
func (s *Syncer) dropSlot(ctx context.Context, conn *sql.Conn) (dropped bool, err error) {
	var slotType, plugin, database, current string
	var temporary, active, twoPhase bool
	var pid int
	err = conn.QueryRowContext(ctx, `SELECT slot_type, COALESCE(plugin, ''), COALESCE(database, ''), temporary, active,
		COALESCE(active_pid, 0), COALESCE((pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.->>) 'two_phase')::pg_catalog.bool, false), pg_catalog.current_database()
		FROM pg_catalog.pg_replication_slots s WHERE slot_name OPERATOR(pg_catalog.=) $1`, s.replicationSlot).Scan(
		&slotType, &plugin, &database, &temporary, &active, &pid, &twoPhase, &current)
	if errors.Is(err, sql.ErrNoRows) {
		s.log.Info("dbsync: teardown: no replication slot to drop", "slot", s.replicationSlot)
		return false, nil
	}
	if err != nil {
		return false, classify(err, "look up replication slot "+s.replicationSlot)
	}
	if slotType != "logical" || plugin != "pgoutput" {
		return false, fmt.Errorf("%w: slot %q is a %s slot with plugin %q, not a logical pgoutput slot: dbsync did not create it and does not drop it; check the slot name (WithReplicationSlot / %s / -slot), or drop it yourself with SELECT pg_drop_replication_slot(%s) if nothing uses it",
			ErrSlotMismatch, s.replicationSlot, slotType, plugin, EnvReplSlot, pq.QuoteLiteral(s.replicationSlot))
	}
	if database != current {
		return false, fmt.Errorf("%w: slot %q belongs to database %q, not %q: connect to that database to tear it down",
			ErrSlotMismatch, s.replicationSlot, database, current)
	}
	if temporary {
		return false, fmt.Errorf("%w: slot %q is a temporary slot of another session (backend PID %d), which dbsync does not create and does not drop; PostgreSQL drops it when that session ends",
			ErrSlotMismatch, s.replicationSlot, pid)
	}
	if twoPhase {
		return false, s.errSlotTwoPhase()
	}
	if active {
		return false, fmt.Errorf("%w: slot %q is read by backend PID %d: stop that consumer first (or SELECT pg_terminate_backend(%d))",
			ErrSlotInUse, s.replicationSlot, pid, pid)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_catalog.pg_drop_replication_slot($1)`, s.replicationSlot); err != nil {
		if hasSQLState(err, "42704") {
			return false, nil // dropped concurrently
		}
		return false, classify(err, "drop replication slot "+s.replicationSlot)
	}
	s.log.Info("dbsync: teardown: dropped replication slot", "slot", s.replicationSlot)
	return true, nil
}

// teardownCatalog does steps 2 and 3 of TeardownWithResult in one transaction under
// setupCatalog's lock, recording what it did in res once it committed.
func (s *Syncer) teardownCatalog(ctx context.Context, conn *sql.Conn, res *TeardownResult) (err error) {
	tx, err := beginCatalogTx(ctx, conn, "teardown")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	others, err := queryStringList(ctx, tx, `SELECT slot_name FROM pg_catalog.pg_replication_slots
		WHERE database OPERATOR(pg_catalog.=) pg_catalog.current_database() AND slot_type OPERATOR(pg_catalog.=) 'logical' AND NOT temporary
		AND (plugin OPERATOR(pg_catalog.=) 'pgoutput' OR COALESCE(plugin, '') OPERATOR(pg_catalog.=) '') AND slot_name OPERATOR(pg_catalog.<>) $1
		ORDER BY slot_name`, s.replicationSlot)
	if err != nil {
		return classify(err, "list replication slots")
	}
	ns := pq.QuoteIdentifier(s.ctrlNamespace)
	if len(others) > 0 {
		var deleted int64
		var progress bool
		if err = tx.QueryRowContext(ctx, `SELECT pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1::pg_catalog.text, $2::pg_catalog.text)) IS NOT NULL`,
			s.ctrlNamespace, snapshotProgressTable).Scan(&progress); err != nil {
			return classify(err, "look up the snapshot progress table")
		}
		if progress {
			r, err := tx.ExecContext(ctx, "DELETE FROM "+ns+"."+pq.QuoteIdentifier(snapshotProgressTable)+" WHERE slot_name OPERATOR(pg_catalog.=) $1", s.replicationSlot)
			if err != nil {
				return classify(err, "delete the snapshot progress of slot "+s.replicationSlot)
			}
			if deleted, err = r.RowsAffected(); err != nil {
				return err
			}
		}
		if err = tx.Commit(); err != nil {
			return classify(err, "commit teardown")
		}
		res.OtherSlots, res.ProgressRowsDeleted = others, deleted
		s.log.Info("dbsync: teardown: kept the control schema and the watermark table: other slots may use them",
			"schema", s.ctrlNamespace, "table", s.wmTableName, "publication", s.publication, "slots", others,
			"snapshot_progress_rows_deleted", deleted)
		return nil
	}
	var exists bool
	if err = tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname OPERATOR(pg_catalog.=) $1)`,
		s.ctrlNamespace).Scan(&exists); err != nil {
		return classify(err, "look up control schema "+s.ctrlNamespace)
	}
	if !exists {
		// Without the schema there is no watermark table to take out of the publication.
		if err = tx.Commit(); err != nil {
			return classify(err, "commit teardown")
		}
		return nil
	}
	if s.ctrlNamespace == "public" || s.ctrlNamespace == "information_schema" || strings.HasPrefix(s.ctrlNamespace, "pg_") {
		return fmt.Errorf("%w: the control namespace is %q, a schema dbsync must never drop; drop the watermark table %s yourself",
			ErrCtrlSchemaNotEmpty, s.ctrlNamespace, ns+"."+pq.QuoteIdentifier(s.wmTableName))
	}
	unpublished, err := s.dropWMFromPublication(ctx, tx)
	if err != nil {
		return err
	}
	// RESTRICT (the default) throughout: whatever else is in the schema or depends on
	// dbsync's tables fails the statement (2BP01) and rolls everything back.
	dropTables := "DROP TABLE IF EXISTS " + ns + "." + pq.QuoteIdentifier(s.wmTableName) + ", " +
		ns + "." + pq.QuoteIdentifier(snapshotProgressTable)
	if _, err = tx.ExecContext(ctx, dropTables); err != nil {
		return s.errCtrlDependents(err, "drop the watermark and snapshot progress tables", dropTables+";\n  DROP SCHEMA "+ns)
	}
	if _, err = tx.ExecContext(ctx, "DROP SCHEMA "+ns); err != nil {
		return s.errCtrlDependents(err, "drop control schema "+s.ctrlNamespace, "DROP SCHEMA "+ns)
	}
	if err = tx.Commit(); err != nil {
		return classify(err, "commit teardown")
	}
	res.WMTableUnpublished, res.CtrlSchemaDropped = unpublished, true
	if unpublished {
		s.log.Info("dbsync: teardown: removed watermark table from publication", "publication", s.publication,
			"table", s.ctrlNamespace+"."+s.wmTableName)
	}
	s.log.Info("dbsync: teardown: dropped control schema", "schema", s.ctrlNamespace)
	return nil
}

// errCtrlDependents names a failed DROP of dbsync's tables or control schema: objects
// dbsync did not create are in the schema or depend on its tables (2BP01; the
// server's detail lists them) give ErrCtrlSchemaNotEmpty; a role that does not own
// them (42501: an administrator created them) ErrInsufficientPrivilege naming the
// statements (stmts) their owner must run.
func (s *Syncer) errCtrlDependents(err error, what, stmts string) error {
	if hasSQLState(err, "42501") {
		return fmt.Errorf("%w: %s: the role does not own them; nothing of the control schema was dropped (the slot was): have their owner (or a superuser) run\n  %s;\nor keep them for a later Syncer: %w",
			ErrInsufficientPrivilege, what, stmts, err)
	}
	if !hasSQLState(err, "2BP01") {
		return classify(err, what)
	}
	detail := serverDetail(err)
	if detail == "" {
		detail = "objects dbsync did not create depend on it"
	}
	return fmt.Errorf("%w: %s: %s; nothing of the control schema was dropped (the slot was): move or drop those objects (or point %s / WithCtrlNamespace at a schema only dbsync uses), then run teardown again: %w",
		ErrCtrlSchemaNotEmpty, what, strings.ReplaceAll(detail, "\n", "; "), EnvCtrlNamespace, err)
}

// dropWMFromPublication takes the watermark table out of the publication in tx;
// unpublished is false when there was nothing to do.
func (s *Syncer) dropWMFromPublication(ctx context.Context, tx *sql.Tx) (unpublished bool, err error) {
	var allTables bool
	err = tx.QueryRowContext(ctx, `SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) $1`, s.publication).Scan(&allTables)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && allTables) {
		return false, nil
	}
	if err != nil {
		return false, classify(err, "look up publication "+s.publication)
	}
	var in bool
	// Only a table the publication holds by itself (pg_publication_rel) can be dropped
	// from it: one it publishes through FOR TABLES IN SCHEMA of the control schema
	// leaves it with the table (and the schema, when that is dropped).
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr
		JOIN pg_catalog.pg_publication p ON p.oid OPERATOR(pg_catalog.=) pr.prpubid
		JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) pr.prrelid JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
		WHERE p.pubname OPERATOR(pg_catalog.=) $1 AND n.nspname OPERATOR(pg_catalog.=) $2 AND c.relname OPERATOR(pg_catalog.=) $3)`, s.publication, s.ctrlNamespace, s.wmTableName).Scan(&in); err != nil {
		return false, classify(err, "read publication tables of "+s.publication)
	}
	if !in {
		return false, nil
	}
	stmt := "ALTER PUBLICATION " + pq.QuoteIdentifier(s.publication) + " DROP TABLE " +
		pq.QuoteIdentifier(s.ctrlNamespace) + "." + pq.QuoteIdentifier(s.wmTableName)
	if _, err := tx.ExecContext(ctx, stmt); err != nil {
		if hasSQLState(err, "42501") {
			return false, fmt.Errorf("%w: remove the watermark table from publication %q: the role may not change the publication; nothing of the control schema was dropped (the slot was): have a superuser (or a role owning the publication and the watermark table) run\n  %s;\nthen run teardown again, which drops the control schema: %w",
				ErrInsufficientPrivilege, s.publication, stmt, err)
		}
		return false, classify(err, "remove the watermark table from publication "+s.publication)
	}
	return true, nil
}

// queryStringList runs a query of one text column in tx.
func queryStringList(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
