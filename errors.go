package dbsync

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
)

// ErrStopProcessingMessages may be returned by a MessageHandler method to stop the
// Syncer cleanly: everything before the message that returned it is forwarded (the
// slot moves to the COMMIT of the last fully processed transaction; a COMMIT that
// returned it counts as processed) and Start/Run return without error.
var ErrStopProcessingMessages = errors.New("dbsync: message processing halted")

// Named errors. Every error dbsync returns for these situations wraps one of them, so
// callers test with errors.Is; the wrapping error says what to do about it. Errors from
// the server are also the driver's error type with the SQLSTATE: *pq.Error through
// lib/pq, *pgconn.PgError through pgx's stdlib (errors.As); both are recognised.
var (
	// ErrWALLevel: the server's wal_level is below logical (SQLSTATE 55000).
	// Fix: set wal_level = logical in postgresql.conf and restart the server.
	ErrWALLevel = errors.New("dbsync: wal_level is not logical")
	// ErrReplicationPrivilege: the role is neither superuser nor REPLICATION (42501).
	// Fix: ALTER ROLE <role> REPLICATION.
	ErrReplicationPrivilege = errors.New("dbsync: role may not use replication slots")
	// ErrInsufficientPrivilege: the role lacks a privilege other than REPLICATION
	// (42501): SELECT on a table a Refresh or Snapshot reads, CREATE on the database
	// (or the control schema) to create the control schema (or its tables),
	// ownership of the publication or of a table setup adds to it, privileges on the
	// control schema's tables; or row-level security policies apply to the role on a
	// table a Refresh or Snapshot reads (or on a control table), which would hide rows
	// from its SELECTs (fix: ALTER ROLE <role> BYPASSRLS, or read as the table's
	// owner without FORCE ROW LEVEL SECURITY, or disable RLS on the table). The
	// message names the GRANT, or the statement an owner or superuser must run, that
	// fixes it; README ("PostgreSQL requirements") lists what a role without
	// superuser needs.
	ErrInsufficientPrivilege = errors.New("dbsync: role lacks a privilege")
	// ErrPublicationMissing: the publication does not exist (42704, or found missing
	// from the catalog): at setup, when no tables were given (ForTables) to create it
	// for; from Run, GetMessages, CheckReplicaIdentity, Refresh or Snapshot,
	// also with ForTables, when it was dropped since setup or never created
	// (WithSetup(false)): TestNamedErrorDespiteObjectName.
	ErrPublicationMissing = errors.New("dbsync: publication does not exist")
	// ErrSlotMismatch: a slot with the configured name exists but is not a logical
	// pgoutput slot of this database, or is another session's temporary slot, or was
	// created with two_phase = true: Setup does not use it, Teardown does not drop it
	// and SkipBacklog does not move it; Run and GetMessages of a Syncer made with
	// WithSetup(false) on a slot of another plugin, kind or database return it too.
	ErrSlotMismatch = errors.New("dbsync: replication slot exists with another plugin, kind or database")
	// ErrSlotMissing: the replication slot does not exist (42704).
	ErrSlotMissing = errors.New("dbsync: replication slot does not exist")
	// ErrSlotInUse: another process is reading the slot (55006), or another Syncer
	// runs on it holding its lock (Run; README, "Only one process may drive a slot").
	// Only one process may drive a slot.
	ErrSlotInUse = errors.New("dbsync: replication slot is active in another process")
	// ErrSlotInvalidated: the server removed WAL the slot still needed
	// (max_slot_wal_keep_size; pg_replication_slots.wal_status 'lost'); the slot can no
	// longer deliver changes and must be dropped and re-created, followed by a snapshot
	// to rebuild consumers. Setup returns it for an existing invalidated slot; a peek
	// or an advance of one fails with SQLSTATE 55000 and returns it too (named from
	// the slot's wal_status, whatever the server's language: Syncer.diagnose).
	ErrSlotInvalidated = errors.New("dbsync: replication slot was invalidated")
	// ErrInRecovery: logical decoding is not possible on a standby (PG 15, 0A000; the
	// WAL functions dbsync reads positions with fail there with 55000 "recovery is in
	// progress", named from pg_is_in_recovery()). Fix: connect to the primary.
	ErrInRecovery = errors.New("dbsync: server is in recovery (a standby)")
	// ErrHandler wraps an error returned by a MessageHandler or a Batcher.
	// The slot was not moved past the change that failed.
	ErrHandler = errors.New("dbsync: handler failed")
	// ErrMalformedMessage: a pgoutput message could not be decoded.
	ErrMalformedMessage = errors.New("dbsync: malformed pgoutput message")
	// ErrUnknownRelation: a change referenced a relation ID no RELATION message described.
	ErrUnknownRelation = errors.New("dbsync: change for unknown relation")
	// ErrDecodeValue: a column value could not be decoded as its type (PGColumnInfo.
	// DecodeText/DecodeBytes). The message names the column, type and format.
	ErrDecodeValue = errors.New("dbsync: cannot decode column value")
	// ErrUnchangedTOAST: PGTableInfo.ScanTuple met columns whose value PostgreSQL did
	// not send (an UPDATE left a TOASTed value unchanged, tuple kind 'u'); their
	// destinations were left untouched, every other column was scanned. Keep the
	// previous values of those columns (docs/VALUES.md).
	ErrUnchangedTOAST = errors.New("dbsync: column value not sent (unchanged TOAST)")
	// ErrNoKey: a row has no usable key for a record ID (GetRecordID): the table has no
	// primary key or replica identity index, or a key column is missing or NULL.
	// DecodeChange does not return it for a table without a key (it gives Change.Key
	// ""); handlers.Cache and a Batcher do, for changes of such a table.
	ErrNoKey = errors.New("dbsync: row has no usable key")
	// ErrReplicaIdentity: a published table's updates and deletes cannot be captured
	// (no primary key and REPLICA IDENTITY DEFAULT, or REPLICA IDENTITY NOTHING), or
	// its key holds a generated column, which pgoutput does not send, so they cannot
	// be given a record ID (ReplicaIdentityProblem.GeneratedKey); returned by setup
	// with WithStrictReplicaIdentity. Fix: add a primary key, or ALTER TABLE ...
	// REPLICA IDENTITY FULL (WithReplicaIdentityFull); for a generated key, a key of
	// columns that are not generated (FULL does not help).
	ErrReplicaIdentity = errors.New("dbsync: table has no usable replica identity")
	// ErrAlreadyRunning: Start, Run, GetMessages, Forward or SkipBacklog was called on
	// a Syncer that is running.
	ErrAlreadyRunning = errors.New("dbsync: syncer is already running")
	// ErrClosed: a method of a Syncer that reads or changes the slot or the catalog
	// (Start, Run, GetMessages, Forward, SkipBacklog, Setup, Teardown,
	// TeardownWithResult, Status, ConfirmedFlushLSN, CurrentFlushLSN, TableInfo,
	// CheckReplicaIdentity) was called after Close, and did nothing; Refresh and
	// Snapshot under way when Close was called, or called after it, fail with
	// ErrRefreshAbandoned wrapping it. Make a new one.
	ErrClosed = errors.New("dbsync: syncer is closed")
	// ErrConfig: an option or environment variable has an invalid value, or a call
	// asks for what the configuration cannot do: a Refresh query the server refuses or
	// that dbsync cannot match with changes (docs/SNAPSHOTS.md, "API"), a table name
	// that names no table, a table the publication does not carry (or carries with a
	// row filter), Refresh or Snapshot with an EventsProcessor, Run on a pool of one
	// connection, a session whose client_encoding is not UTF8 (Run, GetMessages), a
	// write of dbsync's (setup, a watermark) in a read-only session (SQLSTATE 25006:
	// default_transaction_read_only on for the role or the database), a slot to create
	// on a server whose max_replication_slots are all in use (SQLSTATE 53400), a
	// connection string the driver refuses when it connects (pgx's parse errors and
	// its refusal of an exec mode whose cache is off, through WithDB; a setting the
	// server does not know, 42704, such as a key of pgx's given to lib/pq). The
	// message says which and how to fix it.
	ErrConfig = errors.New("dbsync: invalid configuration")
	// ErrRefreshAbandoned: the Syncer stopped (Stop, a cancelled Run context, a handler
	// error under StopOnHandlerError) before the selection's high watermark was
	// delivered, the caller's context ended first, or the server cut the selection's
	// SELECT short (statement_timeout, a lock timeout, a deadlock). No refresh row of it is
	// guaranteed to have been delivered; run the Refresh (or Snapshot, which resumes at
	// the chunk) again with a running Syncer.
	ErrRefreshAbandoned = errors.New("dbsync: refresh selection abandoned")
	// ErrSnapshotProgress: a Snapshot chunk's refresh rows were delivered, but its
	// progress could not be written to the control schema's snapshot_progress table
	// (the server's error is in the chain: a privilege, a constraint, a full disk, a
	// lost session). Snapshot stops there. Call Snapshot again once the table can be
	// written: it resumes after the last recorded chunk and delivers the unrecorded
	// ones again (at-least-once). It is also joined to the ErrRefreshAbandoned of a
	// Snapshot whose table changed between chunks when the reset of the table's
	// progress failed, or found no answer within 5 s (a server that does not answer,
	// another session holding the row locked): the next Snapshot may then resume the
	// table instead of reading it from the start; the message gives the DELETE that
	// makes it start over (TestSnapshotProgressResetBounded).
	ErrSnapshotProgress = errors.New("dbsync: snapshot progress not recorded")
	// ErrNoPrimaryKey: the table has neither a primary key nor a replica identity index
	// (REPLICA IDENTITY USING INDEX), or its key holds a generated column (which
	// pgoutput does not send), so rows cannot be matched with changes (or chunked).
	// Add one (ALTER TABLE ... ADD PRIMARY KEY).
	ErrNoPrimaryKey = errors.New("dbsync: table has no primary key")
	// ErrCtrlSchemaNotEmpty: Teardown found objects dbsync did not create in the
	// control schema, or depending on its tables (a view, a column of a type defined
	// in the schema; the server's detail names them), or the schema is public,
	// information_schema or pg_*, and dropped none of it (it never drops with
	// CASCADE). Fix: point DBSYNC_CTRL_NAMESPACE (WithCtrlNamespace) at dbsync's own
	// schema, or move or drop the other objects and run teardown again.
	ErrCtrlSchemaNotEmpty = errors.New("dbsync: control schema holds objects dbsync did not create")
	// ErrEncoding: PostgreSQL could not convert a value of a change (or of a selected
	// row) to the connection's client_encoding, UTF8 (SQLSTATE 22021
	// character_not_in_repertoire or 22P05 untranslatable_character). pgoutput
	// converts every text value it sends to the client encoding, which dbsync needs to
	// be UTF8 (lib/pq asks for it; Run refuses a pgx session in another with
	// ErrConfig). The usual cause is a SQL_ASCII database holding bytes that are
	// not UTF-8, which PostgreSQL stores unchecked. The slot cannot be read past that
	// change (the peek fails as a whole, so the changes before it in the same poll are
	// not delivered either, and nothing is forwarded): store valid UTF-8 from now on,
	// and move the slot past that transaction yourself, which loses it to dbsync: in
	// a session with SET client_encoding = 'SQL_ASCII', pg_logical_slot_peek_binary_changes
	// shows the lsn of its COMMIT row ('C'), and pg_replication_slot_advance(slot,
	// that lsn) skips it (TestSQLASCIIEncodingError does exactly this).
	ErrEncoding = errors.New("dbsync: text not convertible to the client encoding")
	// ErrStatementCancelled: the server cancelled a statement of GetMessages or
	// Forward (SQLSTATE 57014 query_canceled) while the call's context was live:
	// another session ran pg_cancel_backend on it, or a statement_timeout of the
	// role, the database or the connection string ran out (dbsync runs the peek
	// and the advance of GetMessages and Forward with statement_timeout off:
	// untimed.go). The slot is where the call left it: nothing the call did not
	// finish was forwarded. Call again; for a statement_timeout, raise it for dbsync's
	// role (ALTER ROLE ... SET statement_timeout). Run retries such a poll itself
	// (logged as a warning), and returns it only after 10 polls in a row were
	// cancelled (TestRunStatementTimeoutNoProgress). Setup (NewSyncer),
	// CheckReplicaIdentity, TableInfo, Status, ConfirmedFlushLSN, CurrentFlushLSN,
	// SkipBacklog, Teardown and TeardownWithResult return it too for a statement of theirs the
	// server cancelled (a statement_timeout of dbsync's role shorter than their
	// catalog reads or lock waits: TestStatementTimeoutCallsNamed,
	// TestStatementTimeoutSlotCallsNamed, TestStatementTimeoutCurrentFlushLSNNamed);
	// the message names the call to make again.
	// Refresh and Snapshot return ErrRefreshAbandoned instead. A caller's own
	// cancellation (its context ended) is not this error.
	ErrStatementCancelled = errors.New("dbsync: statement cancelled by the server")
)

// serverError returns the SQLSTATE and primary message of a server error in err's
// chain, from lib/pq (*pq.Error) or pgx (*pgconn.PgError, also what pgx's stdlib
// returns); ok is false when err holds neither.
func serverError(err error) (code, message string, ok bool) {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return string(pqErr.Code), pqErr.Message, true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code, pgErr.Message, true
	}
	return "", "", false
}

// hasSQLState tells whether err holds a server error with one of the SQLSTATEs.
func hasSQLState(err error, codes ...string) bool {
	code, _, ok := serverError(err)
	if !ok {
		return false
	}
	for _, c := range codes {
		if code == c {
			return true
		}
	}
	return false
}

// classify maps a server error to the named errors above, keeping the original error
// in the chain (errors.As with *pq.Error or *pgconn.PgError still works). Unknown
// errors pass through, prefixed with what. Where one SQLSTATE covers several cases it
// tells them apart by the message's English text; a server that reports in another
// language (lc_messages) is handled for the slot functions by Syncer.diagnose.
func classify(err error, what string) error {
	if err == nil {
		return nil
	}
	if why := connSettingsError(err); why != "" {
		return fmt.Errorf("%w: %s: %s: %w", ErrConfig, what, why, err)
	}
	code, msg, ok := serverError(err)
	if !ok {
		return err
	}
	var named error
	switch code {
	case "55000":
		switch {
		case contains(msg, "wal_level"):
			named = ErrWALLevel
		case contains(msg, "can no longer get changes"), contains(msg, "cannot be advanced"), contains(msg, "has been invalidated"):
			named = ErrSlotInvalidated
		case contains(msg, "recovery is in progress"):
			// A WAL function (pg_current_wal_flush_lsn) on a standby.
			named = ErrInRecovery
		}
	case "42501":
		// The slot functions' message (PostgreSQL 15: "must be superuser or
		// replication role to use replication slots"; 16: "permission denied to use
		// replication slots"). Any other 42501 ("permission denied for table x",
		// "must be owner of publication p", which may name an object called
		// "replication...") is another privilege.
		if contains(msg, "replication slots") || contains(msg, "replication role") {
			named = ErrReplicationPrivilege
		} else {
			named = ErrInsufficientPrivilege
		}
	case "42704":
		if contains(msg, "replication slot") {
			named = ErrSlotMissing
		} else if contains(msg, "publication") {
			named = ErrPublicationMissing
		}
	case "55006":
		named = ErrSlotInUse
	case "0A000":
		if contains(msg, "recovery") {
			named = ErrInRecovery
		}
	case "22021", "22P05":
		named = ErrEncoding
	case "53400":
		// configuration_limit_exceeded; for a slot's creation (setup, a split poll's
		// temporary copy) "all replication slots are in use", whose hint lib/pq drops
		// (TestSetupAllSlotsInUse).
		if contains(msg, "replication slots") {
			return fmt.Errorf("%w: %s: all of the server's replication slots are in use (max_replication_slots): drop one no longer used (SELECT pg_drop_replication_slot(slot_name) for one in pg_replication_slots), or raise max_replication_slots and restart the server: %w", ErrConfig, what, err)
		}
	case "25006":
		// read_only_sql_transaction: a write (setup's DDL, a watermark, snapshot
		// progress) in a session the role's or database's default_transaction_read_only
		// makes read only (TestReadOnlyRoleNamed).
		return fmt.Errorf("%w: %s: the session is read only, but dbsync writes its control tables and watermarks; turn default_transaction_read_only off for dbsync's role (ALTER ROLE ... SET default_transaction_read_only = off, or options='-c default_transaction_read_only=off' in the connection string), or connect to the primary: %w", ErrConfig, what, err)
	}
	if named == nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return wrapNamed(named, what, err)
}

// errCancelled names a server error 57014 (query_canceled) that ended call while ctx
// was live ErrStatementCancelled, saying what to do; any other error, and one of a
// call whose context ended (lib/pq has the server cancel the statement then), is
// returned unchanged.
func errCancelled(ctx context.Context, call string, err error) error {
	if !cancelledByServer(ctx, err) {
		return err
	}
	return fmt.Errorf("%w: %s: another session cancelled a statement of the call (pg_cancel_backend), or a statement_timeout of dbsync's role, the database or the connection string ran out; the slot is where the call left it (nothing it did not finish was forwarded): call %s again, and for a statement_timeout raise it for dbsync's role (ALTER ROLE ... SET statement_timeout): %w",
		ErrStatementCancelled, call, call, err)
}

// cancelledByServer tells whether err is a server error 57014 (query_canceled) not
// yet named ErrStatementCancelled, of a call whose context is live: the server
// cancelled the statement (statement_timeout, pg_cancel_backend), not lib/pq for the
// caller's ended context.
func cancelledByServer(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && !errors.Is(err, ErrStatementCancelled) && hasSQLState(err, "57014")
}

// errCancelledCall is errCancelled for the other calls (Status, TableInfo, Setup,
// SkipBacklog, Teardown, ...): a server error 57014 that ended call while ctx was live
// is ErrStatementCancelled, saying to raise statement_timeout for dbsync's role;
// anything else is returned unchanged.
func errCancelledCall(ctx context.Context, call string, err error) error {
	if !cancelledByServer(ctx, err) {
		return err
	}
	return fmt.Errorf("%w: %s: a statement_timeout of dbsync's role, the database or the connection string ran out (or another session cancelled the statement with pg_cancel_backend); raise statement_timeout for dbsync's role (ALTER ROLE ... SET statement_timeout, or options='-c statement_timeout=...' in the connection string) and call %s again: %w",
		ErrStatementCancelled, call, call, err)
}

// connSettingsError says what to fix when err is a driver's refusal of the
// connection string's settings as it connects, "" otherwise: pgx's parse error
// (*pgconn.ParseConfigError, which hides the password), pgx's refusal of an exec mode
// whose cache is disabled (statement_cache_capacity=0 or description_cache_capacity=0
// with the mode that needs it: pgx's own words, it has no error type for them), or
// the server's refusal of a setting lib/pq sent it as the session started (lib/pq
// sends a key it does not know, such as pgx's default_query_exec_mode, as a server
// setting: FATAL 42704 "unrecognized configuration parameter").
func connSettingsError(err error) string {
	var parseErr *pgconn.ParseConfigError
	if errors.As(err, &parseErr) {
		return "pgx cannot parse the connection string; fix the setting it names"
	}
	if msg := err.Error(); contains(msg, "with disabled statement cache") || contains(msg, "with disabled description cache") {
		return "pgx refuses the connection string's settings: its default_query_exec_mode needs the cache that statement_cache_capacity or description_cache_capacity turns off; raise the capacity, or use default_query_exec_mode=exec or simple_protocol"
	}
	if code, msg, ok := serverError(err); ok && code == "42704" && contains(msg, "configuration parameter") && startupRefused(err) {
		return "the server refuses a setting of the connection string (lib/pq, which WithPGConnStr and $POSTGRES_* connect with, sends every key it does not know to the server as a setting: a key of pgx's, such as default_query_exec_mode or statement_cache_capacity, is one); remove it, or open the pool with pgx's driver and pass it with WithDB"
	}
	return ""
}

// startupRefused tells whether the server error in err's chain ended the session
// (severity FATAL: as it started, for a connection string's setting), not a statement
// of it (ERROR: a query's current_setting or SET of an unknown setting).
func startupRefused(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Fatal()
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.SeverityUnlocalized == "FATAL" || pgErr.Severity == "FATAL"
	}
	return false
}

// wrapNamed wraps err in named with what failed and what to do about it.
func wrapNamed(named error, what string, err error) error {
	remedy := ""
	switch named {
	case ErrWALLevel:
		remedy = "set wal_level = logical in postgresql.conf and restart PostgreSQL: "
	case ErrSlotInvalidated:
		remedy = "drop and re-create the slot, then rebuild consumers with a snapshot: "
	case ErrReplicationPrivilege:
		remedy = "grant it with ALTER ROLE ... REPLICATION (or use a superuser): "
	case ErrInsufficientPrivilege:
		remedy = "grant the role the privilege the server names, or have the object's owner (or a superuser) run the statement (README, \"PostgreSQL requirements\"): "
	case ErrSlotInUse:
		remedy = "make sure only one process drives this slot: "
	case ErrInRecovery:
		remedy = "connect to the primary: "
	case ErrEncoding:
		remedy = "a value is not valid in the client encoding UTF8 (a SQL_ASCII database holding other bytes?) and dbsync cannot read past it; store valid UTF-8, and skip that transaction with pg_replication_slot_advance to its COMMIT's lsn, found by peeking the slot with client_encoding SQL_ASCII (see dbsync.ErrEncoding): "
	}
	return fmt.Errorf("%w: %s: %s%w", named, what, remedy, err)
}

// serverDetail returns the DETAIL of a server error in err's chain ("" if none).
func serverDetail(err error) string {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Detail
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Detail
	}
	return ""
}

// driverError returns the server error in err's chain as the driver made it
// (*pq.Error or *pgconn.PgError), without what dbsync wrapped around it; nil if none.
func driverError(err error) error {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr
	}
	return nil
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
