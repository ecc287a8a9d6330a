package dbsync

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/lib/pq"
)

// setupLockKey serialises concurrent setups of syncers on one database
// (pg_advisory_xact_lock), so two processes starting at once cannot race on DDL.
const setupLockKey = 0x64627379 // "dbsy"

// Setup checks the server and creates what the Syncer needs, idempotently: it checks
// wal_level and the role's replication privilege, creates the control schema and the
// watermark table (and marks them as dbsync's with a COMMENT when the role owns them:
// ensureCtrlMarkers), creates the publication for ForTables when it is missing (otherwise
// requires it to exist), adds the watermark table (and ForTables tables) to it, and
// warns (a log line at level Warn) when the publication does not publish every kind
// of change (publish = '...' without update, delete or truncate: those changes of its
// tables never reach the Syncer), sets REPLICA IDENTITY FULL on WithReplicaIdentityFull
// tables, reports published tables
// whose updates/deletes cannot be captured or whose key holds a generated column
// (CheckReplicaIdentity: a warning, or
// ErrReplicaIdentity with WithStrictReplicaIdentity), and creates the pgoutput slot
// when it is missing. NewSyncer calls it unless WithSetup(false).
//
// Errors: ErrWALLevel, ErrReplicationPrivilege, ErrConfig (a ForTables table does not
// exist, or a table of the watermark or snapshot progress table's name in the control
// schema lacks the columns or key dbsync creates it with), ErrInsufficientPrivilege (the role may
// not create the control schema or its tables, or change the publication: the message
// names the GRANT or the owner's statement; no slot is created), ErrPublicationMissing
// (with the CREATE PUBLICATION statement to run), ErrSlotMismatch (a slot of that name is not a logical
// pgoutput slot of this database, or is another session's temporary slot, or was
// created with two_phase = true), ErrSlotInvalidated (the slot exists
// but PostgreSQL invalidated it: wal_status lost), or the server's error; when ctx
// ended first, the error wraps ctx.Err() too (creating the slot waits for the
// transactions open in the cluster: see watchSlotCreation; it runs with
// statement_timeout off, so a statement_timeout of the role does not cut it short);
// ErrStatementCancelled when the server cancelled another of its statements (a
// statement_timeout of dbsync's role shorter than its catalog reads: raise it);
// ErrClosed after Close.
func (s *Syncer) Setup(ctx context.Context) (err error) {
	if err := s.checkOpen("Setup"); err != nil {
		return err
	}
	defer s.unstickAfter(ctx)() // lib/pq on a server that does not answer: sockets.go
	defer func() {
		if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (setup ended by its context: %w)", err, ctx.Err())
		}
		err = errCancelledCall(ctx, "Setup", err)
	}()
	if err := s.checkServer(ctx); err != nil {
		return err
	}
	if err := s.setupCatalog(ctx); err != nil {
		return err
	}
	if err := s.warnUnpublishedOperations(ctx); err != nil {
		return err
	}
	if err := s.ensureReplicaIdentity(ctx); err != nil {
		return err
	}
	return s.ensureSlot(ctx)
}

func (s *Syncer) checkServer(ctx context.Context) error {
	var walLevel string
	var canReplicate bool
	var role string
	err := s.db.QueryRowContext(ctx, `SELECT pg_catalog.current_setting('wal_level'), r.rolsuper OR r.rolreplication, r.rolname
		FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user`).Scan(&walLevel, &canReplicate, &role)
	if err != nil {
		return classify(err, "check server settings")
	}
	if walLevel != "logical" {
		return fmt.Errorf("%w: wal_level is %q; set wal_level = logical in postgresql.conf and restart PostgreSQL", ErrWALLevel, walLevel)
	}
	if !canReplicate {
		return fmt.Errorf("%w: role %q has neither SUPERUSER nor REPLICATION; run ALTER ROLE %s REPLICATION",
			ErrReplicationPrivilege, role, pq.QuoteIdentifier(role))
	}
	return nil
}

// warnUnpublishedOperations logs a warning when the publication does not publish
// INSERT, UPDATE, DELETE or TRUNCATE (CREATE PUBLICATION ... WITH (publish = '...')):
// pgoutput leaves those changes of its tables out of the slot, so the Syncer never
// sees them, which a consumer keeping a copy of the tables would not otherwise notice.
// (Without INSERT no watermark arrives either: Refresh and Snapshot fail with ErrConfig,
// checkPublishedForSelection.) The publication's choice is kept.
func (s *Syncer) warnUnpublishedOperations(ctx context.Context) error {
	var ins, upd, del, trunc bool
	err := s.db.QueryRowContext(ctx, `SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) $1`,
		s.publication).Scan(&ins, &upd, &del, &trunc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // setupCatalog reported it
	}
	if err != nil {
		return classify(err, "look up publication "+s.publication)
	}
	var missing []string
	for _, op := range []struct {
		name string
		on   bool
	}{{"INSERT", ins}, {"UPDATE", upd}, {"DELETE", del}, {"TRUNCATE", trunc}} {
		if !op.on {
			missing = append(missing, op.name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	s.log.Warn("dbsync: publication "+s.publication+" does not publish "+strings.Join(missing, ", ")+
		": those changes of its tables never reach the Syncer; if that is not intended, run ALTER PUBLICATION "+
		pq.QuoteIdentifier(s.publication)+" SET (publish = 'insert, update, delete, truncate')",
		"publication", s.publication, "unpublished", missing)
	return nil
}

// txBeginner is a *sql.DB or a *sql.Conn.
type txBeginner interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}

// beginCatalogTx begins a transaction on db holding the advisory lock that setup and
// teardown take for the catalog objects they change (what names the step in errors);
// it is rolled back when the lock cannot be taken.
func beginCatalogTx(ctx context.Context, db txBeginner, what string) (*sql.Tx, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, classify(err, "begin "+what)
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_catalog.pg_advisory_xact_lock($1)`, setupLockKey); err != nil {
		_ = tx.Rollback()
		return nil, classify(err, "lock "+what)
	}
	return tx, nil
}

// setupCatalog creates the control schema, watermark table and publication in one
// transaction under an advisory lock.
func (s *Syncer) setupCatalog(ctx context.Context) error { return s.setupCatalogOn(ctx, s.db) }

// setupCatalogOn is setupCatalog on db (a *sql.DB, or ensureSlot's connection).
func (s *Syncer) setupCatalogOn(ctx context.Context, db txBeginner) (err error) {
	tx, err := beginCatalogTx(ctx, db, "setup")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = s.ensureCtrlTables(ctx, tx); err != nil {
		return err
	}
	if err = s.checkCtrlTables(ctx, tx); err != nil {
		return err
	}
	if err = s.ensureProgressRelationOID(ctx, tx); err != nil {
		return err
	}
	if err = s.ensureCtrlMarkers(ctx, tx); err != nil {
		return err
	}
	pubErr := s.ensurePublication(ctx, tx)
	var denied *publicationDeniedError
	if pubErr != nil && !errors.As(pubErr, &denied) {
		return pubErr
	}
	// A publication statement the role may not run was rolled back to its savepoint;
	// the control schema and tables are committed, so that the statement the error
	// names for the owner (it names the watermark table) can run. No slot is created.
	if err = tx.Commit(); err != nil {
		return classify(err, "commit setup")
	}
	return pubErr
}

// ensureCtrlTables creates the control schema and its two tables when they are
// missing, and runs no DDL when they exist: CREATE SCHEMA IF NOT EXISTS needs CREATE
// on the database, and CREATE TABLE IF NOT EXISTS CREATE on the schema, even when the
// object exists, which a role using a control schema an administrator created lacks.
// A role that may not create them gets ErrInsufficientPrivilege with the GRANT (or
// the administrator's statement) that lets it.
func (s *Syncer) ensureCtrlTables(ctx context.Context, tx *sql.Tx) error {
	var schemaOwner sql.NullString
	var haveWM, haveProgress bool
	var role, database string
	if err := tx.QueryRowContext(ctx, `SELECT (SELECT pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace WHERE nspname OPERATOR(pg_catalog.=) $1),
		EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2),
		EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $3),
		current_user, pg_catalog.current_database()`,
		s.ctrlNamespace, s.wmTableName, snapshotProgressTable).Scan(&schemaOwner, &haveWM, &haveProgress, &role, &database); err != nil {
		return classify(err, "look up control schema "+s.ctrlNamespace)
	}
	ns, r := pq.QuoteIdentifier(s.ctrlNamespace), pq.QuoteIdentifier(role)
	if !schemaOwner.Valid {
		if _, err := tx.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+ns); err != nil {
			if hasSQLState(err, "42501") {
				return fmt.Errorf("%w: role %q may not create the control schema %s in database %q: run GRANT CREATE ON DATABASE %s TO %s, or have an administrator run CREATE SCHEMA %s AUTHORIZATION %s (dbsync then creates its tables in it): %w",
					ErrInsufficientPrivilege, role, ns, database, pq.QuoteIdentifier(database), r, ns, r, err)
			}
			return classify(err, "create control schema "+s.ctrlNamespace)
		}
	}
	if haveWM && haveProgress {
		return nil
	}
	ddl := strings.NewReplacer("{{ns}}", ns, "{{wm}}", pq.QuoteIdentifier(s.wmTableName)).Replace(sqlText("setup_ctrl.sql"))
	if _, err := tx.ExecContext(ctx, ddl); err != nil {
		if hasSQLState(err, "42501") {
			return fmt.Errorf("%w: role %q may not create the watermark and snapshot progress tables in the control schema %s (owned by %q): run GRANT USAGE, CREATE ON SCHEMA %s TO %s, or ALTER SCHEMA %s OWNER TO %s: %w",
				ErrInsufficientPrivilege, role, ns, schemaOwner.String, ns, r, ns, r, err)
		}
		return classify(err, "create the watermark and snapshot progress tables in "+s.ctrlNamespace)
	}
	return nil
}

// ctrlColumn is a column dbsync's control tables are created with (sql/setup_ctrl.sql),
// its type as format_type names it (in messages) and the type's OID, which is what is
// compared: format_type prints a pg_catalog type qualified (pg_catalog.text) when the
// session's search_path holds another type of that name before pg_catalog.
type ctrlColumn struct {
	name, typ string
	oid       int64
}

// ctrlTableShape is what dbsync needs of a control table: its columns and unique key.
type ctrlTableShape struct {
	what string
	cols []ctrlColumn
	key  []string
}

// wmTableShape and progressTableShape are the watermark and snapshot progress tables
// as dbsync reads and writes them. relation_oid is left out: ensureProgressRelationOID
// adds it to a progress table created before it existed.
var (
	wmTableShape = ctrlTableShape{"watermark table",
		[]ctrlColumn{{"selection_id", "text", pgtype.TextOID}, {"wm_type", "text", pgtype.TextOID}, {"created_at", "timestamp with time zone", pgtype.TimestamptzOID}},
		[]string{"selection_id", "wm_type"}}
	progressTableShape = ctrlTableShape{"snapshot progress table", []ctrlColumn{{"slot_name", "text", pgtype.TextOID}, {"table_name", "text", pgtype.TextOID},
		{"key_columns", "text[]", pgtype.TextArrayOID}, {"last_key", "text[]", pgtype.TextArrayOID}, {"chunk_size", "integer", pgtype.Int4OID}, {"chunks_done", "bigint", pgtype.Int8OID},
		{"rows_done", "bigint", pgtype.Int8OID}, {"started_at", "timestamp with time zone", pgtype.TimestamptzOID}, {"updated_at", "timestamp with time zone", pgtype.TimestamptzOID},
		{"finished_at", "timestamp with time zone", pgtype.TimestamptzOID}}, []string{"slot_name", "table_name"}}
)

// checkCtrlTables checks that the watermark and snapshot progress tables in the
// control schema have the columns (name and type) and the unique key dbsync creates
// them with: a table of that name made by something else would otherwise be taken
// for dbsync's, and fail Refresh and Snapshot later with misleading errors. It runs
// before anything alters the tables (ensureProgressRelationOID) or creates a slot.
//
// Errors: ErrConfig naming the table and what it lacks.
func (s *Syncer) checkCtrlTables(ctx context.Context, tx *sql.Tx) error {
	for _, c := range []struct {
		name  string
		shape ctrlTableShape
	}{{s.wmTableName, wmTableShape}, {snapshotProgressTable, progressTableShape}} {
		q, shape := qualifiedTable{s.ctrlNamespace, c.name}, c.shape
		var cols, keys []string
		var types []int64
		// Column type OIDs; unique keys (non-partial unique indexes, key
		// columns only) as their sorted column names joined by commas: what ON
		// CONFLICT (...) infers its arbiter from.
		if err := tx.QueryRowContext(ctx, `SELECT
			ARRAY(SELECT a.attname::pg_catalog.text FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped ORDER BY a.attnum),
			ARRAY(SELECT a.atttypid::pg_catalog.int8 FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped ORDER BY a.attnum),
			ARRAY(SELECT (SELECT pg_catalog.string_agg(a.attname::pg_catalog.text, ',' ORDER BY a.attname::pg_catalog.text) FROM pg_catalog.unnest((i.indkey::pg_catalog.int2[])[0:i.indnkeyatts OPERATOR(pg_catalog.-) 1]) k(n)
					JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.=) k.n)
				FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisunique AND i.indpred IS NULL AND 0 OPERATOR(pg_catalog.<>) ALL (i.indkey::pg_catalog.int2[]))
			FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
			WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2`, q.schema, q.name).Scan(pq.Array(&cols), pq.Array(&types), pq.Array(&keys)); err != nil {
			return classify(err, "check the columns of "+q.schema+"."+q.name)
		}
		have := make(map[string]int64, len(cols))
		for i, c := range cols {
			have[c] = types[i]
		}
		var lacks []string
		for _, c := range shape.cols {
			if have[c.name] != c.oid {
				lacks = append(lacks, "column "+c.name+" "+c.typ)
			}
		}
		key := append([]string(nil), shape.key...)
		slices.Sort(key)
		if !slices.Contains(keys, strings.Join(key, ",")) {
			lacks = append(lacks, "a unique key on ("+strings.Join(shape.key, ", ")+")")
		}
		if len(lacks) > 0 {
			return fmt.Errorf("%w: table %s is not the %s dbsync creates: it lacks %s; drop it (DROP TABLE %s) for setup to create dbsync's, or choose another control schema (WithCtrlNamespace / %s)",
				ErrConfig, q.quoted(), shape.what, strings.Join(lacks, ", "), q.quoted(), EnvCtrlNamespace)
		}
	}
	return nil
}

// ensureProgressRelationOID adds the relation_oid column to a snapshot_progress table
// created before it existed (sql/setup_ctrl.sql creates it with the column). Rows
// without it (NULL) never resume: their snapshot starts over, as it cannot be told
// whether the table was dropped and created again since. ALTER TABLE only when the
// column is missing: it needs ownership, which a Syncer of another role sharing the
// control schema may lack.
func (s *Syncer) ensureProgressRelationOID(ctx context.Context, tx *sql.Tx) error {
	var has bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
		WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2 AND a.attname OPERATOR(pg_catalog.=) 'relation_oid' AND NOT a.attisdropped)`,
		s.ctrlNamespace, snapshotProgressTable).Scan(&has); err != nil {
		return classify(err, "check the columns of "+s.ctrlNamespace+"."+snapshotProgressTable)
	}
	if has {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "ALTER TABLE "+pq.QuoteIdentifier(s.ctrlNamespace)+"."+snapshotProgressTable+
		" ADD COLUMN IF NOT EXISTS relation_oid pg_catalog.oid"); err != nil {
		return classify(err, "add column relation_oid to "+s.ctrlNamespace+"."+snapshotProgressTable+
			" (created by an older dbsync; its owner can run ALTER TABLE ... ADD COLUMN relation_oid oid)")
	}
	return nil
}

// ctrlTableMarker begins the comment (COMMENT ON TABLE) setup puts on the watermark
// and snapshot progress tables it creates or finds: what tells a relation of another
// Syncer's control schema apart from a user's table of the same columns in the slot
// (Syncer.isControlTable).
const ctrlTableMarker = "dbsync control table"

// ensureCtrlMarkers puts the ctrlTableMarker comment on the watermark and snapshot
// progress tables that lack it: tables setup created, and those an older dbsync
// created without it. COMMENT ON needs ownership: a table the role does not own (a
// control schema shared with a Syncer of another role, or created by an
// administrator) is left as it is, with a log line at level Warn naming the COMMENT
// for its owner to run (a setup of its owner's marks it too). Until it is marked,
// other Syncers sharing its publication cannot tell it from a user's table of the
// same columns and deliver its rows (this Syncer's watermarks) to their handlers as
// changes (isControlTable; TestAdminCtrlUnmarkedWarningNamesComment,
// TestUnownedUnmarkedCtrlTablesDelivered).
func (s *Syncer) ensureCtrlMarkers(ctx context.Context, tx *sql.Tx) error {
	for _, c := range []struct{ name, what string }{{s.wmTableName, "watermark table"}, {snapshotProgressTable, "snapshot progress table"}} {
		var marked, owner bool
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(pg_catalog.starts_with(pg_catalog.obj_description(c.oid, 'pg_class'), $3), false),
			pg_catalog.pg_has_role(c.relowner, 'USAGE')
			FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
			WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2`, s.ctrlNamespace, c.name, ctrlTableMarker).Scan(&marked, &owner); err != nil {
			return classify(err, "look up the comment of "+s.ctrlNamespace+"."+c.name)
		}
		if marked {
			continue
		}
		q := qualifiedTable{s.ctrlNamespace, c.name}
		if !owner {
			s.log.Warn("dbsync: cannot mark "+q.quoted()+" as dbsync's "+c.what+" (the role does not own it): until its owner runs the statement, Syncers of other control schemas sharing the publication deliver its rows as changes",
				"schema", s.ctrlNamespace, "table", c.name, "statement", "COMMENT ON TABLE "+q.quoted()+" IS "+pq.QuoteLiteral(ctrlTableMarker))
			continue
		}
		if _, err := tx.ExecContext(ctx, "COMMENT ON TABLE "+q.quoted()+" IS "+pq.QuoteLiteral(ctrlTableMarker+": "+c.what+"; do not edit")); err != nil {
			return classify(err, "comment on "+s.ctrlNamespace+"."+c.name)
		}
	}
	return nil
}

// qualifiedTable is a table's schema and name, unquoted.
type qualifiedTable struct{ schema, name string }

func (q qualifiedTable) quoted() string {
	return pq.QuoteIdentifier(q.schema) + "." + pq.QuoteIdentifier(q.name)
}

// resolveTable turns a ForTables name into schema and table: a name containing a
// double quote is parsed as SQL (parse_ident); "schema.table" splits at the first dot;
// a bare name is looked up on the search_path. The table must exist, and no part of
// the name may be over 63 bytes (ErrConfig).
func resolveTable(ctx context.Context, q queryer, name string) (qualifiedTable, error) {
	ts, err := resolveTables(ctx, q, []string{name})
	if err != nil {
		return qualifiedTable{}, err
	}
	return ts[0], nil
}

// queryer is a *sql.DB, *sql.Conn or *sql.Tx.
type queryer interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// resolveTables is resolveTable of every name, in the order given, in at most two
// queries whatever their number (a publication of thousands of tables is set up
// without a round trip per table). The error is the first name's, in names' order,
// that resolveTable would fail.
func resolveTables(ctx context.Context, q queryer, names []string) ([]qualifiedTable, error) {
	parts := make([][]string, len(names))
	var quoted []string
	for i, name := range names {
		switch {
		case strings.Contains(name, `"`):
			quoted = append(quoted, name)
		case strings.Contains(name, "."):
			j := strings.Index(name, ".")
			parts[i] = []string{name[:j], name[j+1:]}
		default:
			parts[i] = []string{name}
		}
	}
	if len(quoted) > 0 {
		parsed, bad, badErr, err := parseIdents(ctx, q, quoted)
		if err != nil {
			return nil, err
		}
		k := 0
		for i, name := range names {
			if strings.Contains(name, `"`) {
				if k == bad {
					// The names before it are resolved first: the error is the first
					// bad name's in names' order.
					if _, err := resolveTables(ctx, q, names[:i]); err != nil {
						return nil, err
					}
					return nil, badErr
				}
				parts[i] = parsed[k]
				k++
			}
		}
	}
	schemas, tables := make([]sql.NullString, len(names)), make([]string, len(names))
	for i, name := range names {
		for _, p := range parts[i] {
			// PostgreSQL cuts a longer name to 63 bytes (to_regclass, parse_ident's
			// parts cast to name, a parameter compared with relname), which would name
			// the table called by its first 63 bytes.
			if len(p) > maxIdentifierBytes {
				return nil, fmt.Errorf("%w: table name %q: %q is %d bytes, and PostgreSQL cuts names to 63 bytes, so it would name another table; give the name as the catalog has it (at most 63 bytes)", ErrConfig, name, p, len(p))
			}
		}
		switch len(parts[i]) {
		case 1:
			tables[i] = parts[i][0]
		case 2:
			schemas[i] = sql.NullString{String: parts[i][0], Valid: true}
			tables[i] = parts[i][1]
		default:
			return nil, fmt.Errorf("%w: table name %q has %d parts; give \"table\" or \"schema.table\"", ErrConfig, name, len(parts[i]))
		}
	}
	out := make([]qualifiedTable, len(names))
	if len(names) == 0 {
		return out, nil
	}
	// A bare name on the search_path (to_regclass), a schema-qualified one by its
	// catalog names; every name in one query, in the order given (ordinality).
	rows, err := q.QueryContext(ctx, `SELECT u.i, n.nspname, c.relname, c.relkind::pg_catalog.text
		FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY u(s, r, i)
		LEFT JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) CASE WHEN u.s IS NULL THEN pg_catalog.to_regclass(pg_catalog.quote_ident(u.r))
			ELSE (SELECT c2.oid FROM pg_catalog.pg_class c2 JOIN pg_catalog.pg_namespace n2 ON n2.oid OPERATOR(pg_catalog.=) c2.relnamespace
				WHERE n2.nspname OPERATOR(pg_catalog.=) u.s AND c2.relname OPERATOR(pg_catalog.=) u.r) END
		LEFT JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
		ORDER BY u.i`, pq.Array(schemas), pq.Array(tables))
	if err != nil {
		return nil, classify(err, "resolve table "+names[0])
	}
	defer rows.Close()
	kinds := make([]sql.NullString, len(names))
	for rows.Next() {
		var i int
		var schema, table, kind sql.NullString
		if err := rows.Scan(&i, &schema, &table, &kind); err != nil {
			return nil, fmt.Errorf("resolve tables: %w", err)
		}
		if i < 1 || i > len(names) {
			return nil, fmt.Errorf("resolve tables: row %d of %d names", i, len(names))
		}
		out[i-1], kinds[i-1] = qualifiedTable{schema.String, table.String}, kind
	}
	if err := rows.Err(); err != nil {
		return nil, classify(err, "resolve table "+names[0])
	}
	for i, name := range names {
		if !kinds[i].Valid {
			return nil, fmt.Errorf("%w: table %q does not exist", ErrConfig, name)
		}
		// to_regclass finds any relation, and a view, an index or a sequence shares the
		// tables' namespace: only a table or a partitioned table has rows and changes.
		if k := kinds[i].String; k != "r" && k != "p" {
			what, ok := relkindNames[k]
			if !ok {
				what = "a relation of relkind " + strconv.Quote(k)
			}
			return nil, fmt.Errorf("%w: %q is %s, not a table", ErrConfig, name, what)
		}
	}
	return out, nil
}

// parseIdents splits names containing double quotes as SQL (parse_ident), all in one
// query. When parse_ident rejects one, the names are parsed one by one up to the first
// it rejects, whose index in names and error (ErrConfig) it returns with the names
// before it parsed. In a transaction (setup's) the queries run under a savepoint
// rolled back to, so that the rejection does not abort it.
func parseIdents(ctx context.Context, q queryer, names []string) (parsed [][]string, bad int, badErr error, err error) {
	tx, inTx := q.(*sql.Tx)
	savepoint := func(stmt string) error {
		if !inTx {
			return nil
		}
		_, err := tx.ExecContext(ctx, stmt)
		return err
	}
	if err := savepoint("SAVEPOINT dbsync_parse_ident"); err != nil {
		return nil, 0, nil, classify(err, "parse table names")
	}
	var all []string
	qerr := q.QueryRowContext(ctx, `SELECT COALESCE(pg_catalog.array_agg(pg_catalog.to_json(pg_catalog.parse_ident(n))::pg_catalog.text ORDER BY i), '{}')
		FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY u(n, i)`, pq.Array(names)).Scan(pq.Array(&all))
	if qerr == nil && len(all) == len(names) {
		if err := savepoint("RELEASE SAVEPOINT dbsync_parse_ident"); err != nil {
			return nil, 0, nil, classify(err, "parse table names")
		}
		out := make([][]string, len(names))
		for i, js := range all {
			if err := json.Unmarshal([]byte(js), &out[i]); err != nil {
				return nil, 0, nil, fmt.Errorf("parse table name %q: %w", names[i], err)
			}
		}
		return out, -1, nil, nil
	}
	if qerr == nil || !hasSQLState(qerr, "22023") {
		_ = savepoint("ROLLBACK TO SAVEPOINT dbsync_parse_ident")
		if qerr == nil {
			qerr = fmt.Errorf("parse_ident gave %d results for %d names", len(all), len(names))
		}
		return nil, 0, nil, classify(qerr, "parse table names")
	}
	if err := savepoint("ROLLBACK TO SAVEPOINT dbsync_parse_ident"); err != nil {
		return nil, 0, nil, classify(err, "parse table names")
	}
	out := make([][]string, len(names))
	bad = -1
	for i, name := range names {
		var arr pq.StringArray
		if err := q.QueryRowContext(ctx, `SELECT pg_catalog.parse_ident($1)`, name).Scan(&arr); err != nil {
			if !hasSQLState(err, "22023") { // not "string is not a valid identifier"
				_ = savepoint("ROLLBACK TO SAVEPOINT dbsync_parse_ident")
				return nil, 0, nil, classify(err, "parse table name "+name)
			}
			bad, badErr = i, fmt.Errorf("%w: table name %q: %w", ErrConfig, name, err)
			break
		}
		out[i] = arr
	}
	stmt := "RELEASE SAVEPOINT dbsync_parse_ident"
	if bad >= 0 {
		stmt = "ROLLBACK TO SAVEPOINT dbsync_parse_ident"
	}
	if err := savepoint(stmt); err != nil {
		return nil, 0, nil, classify(err, "parse table names")
	}
	return out, bad, badErr, nil
}

// relkindNames names pg_class.relkind values other than tables for errors.
var relkindNames = map[string]string{
	"v": "a view", "m": "a materialized view", "i": "an index", "I": "a partitioned index",
	"S": "a sequence", "f": "a foreign table", "c": "a composite type", "t": "a TOAST table",
}

func (s *Syncer) ensurePublication(ctx context.Context, tx *sql.Tx) error {
	wm := qualifiedTable{s.ctrlNamespace, s.wmTableName}
	tables, err := resolveTables(ctx, tx, s.tableNames)
	if err != nil {
		return err
	}
	var allTables bool
	err = tx.QueryRowContext(ctx, `SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) $1`, s.publication).Scan(&allTables)
	if errors.Is(err, sql.ErrNoRows) {
		if len(tables) == 0 {
			return fmt.Errorf("%w: publication %q does not exist and no tables were given to create it for; create it with\n  CREATE PUBLICATION %s FOR TABLE <table>, ...;\nor pass dbsync.ForTables(...)",
				ErrPublicationMissing, s.publication, pq.QuoteIdentifier(s.publication))
		}
		list := make([]string, 0, len(tables)+1)
		for _, t := range append(tables, wm) {
			list = append(list, t.quoted())
		}
		stmt := "CREATE PUBLICATION " + pq.QuoteIdentifier(s.publication) + " FOR TABLE " + strings.Join(list, ", ")
		if err := s.execPublication(ctx, tx, stmt); err != nil {
			if hasSQLState(err, "42501") {
				return s.publicationDenied(ctx, tx, []string{stmt}, err)
			}
			return classify(err, "create publication "+s.publication)
		}
		s.log.Info("dbsync: created publication", "publication", s.publication, "tables", len(list))
		return nil
	}
	if err != nil {
		return classify(err, "look up publication "+s.publication)
	}
	if allTables {
		return nil
	}
	// Each table once: a table named twice (t, public.t) is added once.
	var all []qualifiedTable
	for _, t := range append(tables, wm) {
		if !slices.Contains(all, t) {
			all = append(all, t)
		}
	}
	in, err := s.inPublication(ctx, tx, all)
	if err != nil {
		return err
	}
	var denied []string
	var firstErr error
	for i, t := range all {
		if in[i] {
			continue
		}
		stmt := "ALTER PUBLICATION " + pq.QuoteIdentifier(s.publication) + " ADD TABLE " + t.quoted()
		if err := s.execPublication(ctx, tx, stmt); err != nil {
			if hasSQLState(err, "42501") {
				// Go on: the error names every statement the owner must run.
				denied, firstErr = append(denied, stmt), cmp.Or(firstErr, err)
				continue
			}
			return classify(err, "add "+t.schema+"."+t.name+" to publication "+s.publication)
		}
		s.log.Info("dbsync: added table to publication", "publication", s.publication, "schema", t.schema, "table", t.name)
	}
	if len(denied) > 0 {
		return s.publicationDenied(ctx, tx, denied, firstErr)
	}
	return nil
}

// inPublication tells for each of tables whether the publication already publishes
// its changes, in one query whatever their number (one per table read
// pg_publication_tables, every table of the publication, once per table: a setup of
// 2,000 tables took seconds). pg_publication_tables lists a partitioned table's
// partitions, not the table itself, unless the publication publishes via the root:
// pg_publication_rel says whether the table was added itself. With
// publish_via_partition_root it lists the partitioned table and not its partitions,
// whose changes it publishes under it: a partition one of whose ancestors it lists is
// in. (jit off, as in CheckReplicaIdentity: the planner cannot know how many rows the
// publication's functions return.)
func (s *Syncer) inPublication(ctx context.Context, tx *sql.Tx, tables []qualifiedTable) ([]bool, error) {
	if _, err := tx.ExecContext(ctx, `SET LOCAL jit = off`); err != nil {
		return nil, classify(err, "read publication tables")
	}
	schemas, names := make([]string, len(tables)), make([]string, len(tables))
	for i, t := range tables {
		schemas[i], names[i] = t.schema, t.name
	}
	rows, err := tx.QueryContext(ctx, `WITH listed AS MATERIALIZED (
			SELECT pg_catalog.format('%I.%I', pt.schemaname, pt.tablename)::pg_catalog.regclass::pg_catalog.oid AS relid
			FROM pg_catalog.pg_publication_tables pt WHERE pt.pubname OPERATOR(pg_catalog.=) $1
			UNION SELECT pr.prrelid FROM pg_catalog.pg_publication_rel pr
			JOIN pg_catalog.pg_publication p ON p.oid OPERATOR(pg_catalog.=) pr.prpubid WHERE p.pubname OPERATOR(pg_catalog.=) $1),
		want AS (SELECT u.i, pg_catalog.format('%I.%I', u.s, u.r)::pg_catalog.regclass::pg_catalog.oid AS relid
			FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[])) WITH ORDINALITY u(s, r, i))
		SELECT w.i, w.relid OPERATOR(pg_catalog.=) ANY (SELECT relid FROM listed)
			OR EXISTS (SELECT 1 FROM pg_catalog.pg_partition_ancestors(w.relid) a(relid)
				WHERE a.relid OPERATOR(pg_catalog.=) ANY (SELECT relid FROM listed))
		FROM want w ORDER BY w.i`, s.publication, pq.Array(schemas), pq.Array(names))
	if err != nil {
		return nil, classify(err, "read publication tables")
	}
	defer rows.Close()
	in := make([]bool, len(tables))
	for rows.Next() {
		var i int
		var ok bool
		if err := rows.Scan(&i, &ok); err != nil {
			return nil, fmt.Errorf("read publication tables: %w", err)
		}
		if i >= 1 && i <= len(in) {
			in[i-1] = ok
		}
	}
	return in, classify(rows.Err(), "read publication tables")
}

// execPublication runs a CREATE or ALTER PUBLICATION statement of setup in tx under a
// savepoint, rolled back to when the statement fails, so that tx can go on (and
// commit the control schema) after a statement the role may not run.
func (s *Syncer) execPublication(ctx context.Context, tx *sql.Tx, stmt string) error {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT dbsync_publication"); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, stmt); err != nil {
		if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT dbsync_publication"); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	_, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT dbsync_publication")
	return err
}

// publicationDeniedError is ErrInsufficientPrivilege for publication statements of
// setup the role may not run (42501: it does not own the publication, or a table
// added to it); setupCatalogOn commits the rest of setup before returning it.
type publicationDeniedError struct{ err error }

func (e *publicationDeniedError) Error() string { return e.err.Error() }
func (e *publicationDeniedError) Unwrap() error { return e.err }

// publicationDenied is the error of the publication statements stmts the role was
// refused (cause: the first refusal), naming them for the owner to run.
func (s *Syncer) publicationDenied(ctx context.Context, tx *sql.Tx, stmts []string, cause error) error {
	var role, database string
	var owner sql.NullString
	var dbCreate bool
	if err := tx.QueryRowContext(ctx, `SELECT current_user, pg_catalog.current_database(), pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE'),
		(SELECT pg_catalog.pg_get_userbyid(pubowner) FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) $1)`,
		s.publication).Scan(&role, &database, &dbCreate, &owner); err != nil {
		return classify(err, "look up the owner of publication "+s.publication)
	}
	who, grant := "a superuser (or a role owning the tables)", ""
	if owner.Valid {
		who = fmt.Sprintf("a superuser (or a role owning publication %q, owned by %q, and the tables added)", s.publication, owner.String)
	} else if !dbCreate {
		// CREATE PUBLICATION needs CREATE on the database besides owning the tables.
		who = "a superuser (or a role owning the tables with CREATE on the database)"
		grant = fmt.Sprintf("; or, when role %q owns the tables, let it create the publication with\n  GRANT CREATE ON DATABASE %s TO %s",
			role, pq.QuoteIdentifier(database), pq.QuoteIdentifier(role))
	}
	return &publicationDeniedError{fmt.Errorf("%w: role %q may not change publication %q: have %s run\n  %s%s;\nthen set up again (no replication slot was created; the control schema was): %w",
		ErrInsufficientPrivilege, role, s.publication, who, strings.Join(stmts, ";\n  "), grant, cause)}
}

// ensureSlot creates the pgoutput slot if missing, and rejects an existing slot that
// is not a logical pgoutput slot of this database or is temporary. The check and the creation run
// under a session advisory lock on one connection: a slot another syncer is still
// creating (building its initial snapshot) is listed in pg_replication_slots before
// its plugin is, and must not be mistaken for a foreign slot.
// (pg_create_logical_replication_slot cannot run in a transaction that wrote, so the
// transaction-level lock of setupCatalog cannot cover it.) Advisory locks are per
// database: a slot of the name created meanwhile for another database fails the
// creation (42710), and the slot is then looked up and judged again.
//
// Teardown decides under the same lock whether other slots still need the control
// schema and the watermark table: once this slot exists it sees it and keeps them. A
// teardown that ran between setupCatalog and here may have removed them, so they are
// checked (and set up again) under the lock.
func (s *Syncer) ensureSlot(ctx context.Context) (err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return classify(err, "connect for slot setup")
	}
	defer conn.Close()
	// The creation waits for every transaction open in the cluster with an xid
	// (watchSlotCreation), and the lock for another setup's creation: as long as the
	// longest of them, which a statement_timeout of the role must not cut short
	// (TestSlotCreationStatementTimeout). Set back after the unlock (defers run last
	// first).
	restore, err := s.untimedConn(ctx, conn)
	if err != nil {
		return classify(err, "turn statement_timeout off for slot setup")
	}
	defer restore()
	if _, err := conn.ExecContext(ctx, `SELECT pg_catalog.pg_advisory_lock($1)`, setupLockKey+1); err != nil {
		return classify(err, "lock slot setup")
	}
	defer func() {
		if uerr := unlockSetup(ctx, conn); uerr != nil && err == nil {
			err = classify(uerr, "unlock slot setup")
		}
	}()
	for attempt := 0; ; attempt++ {
		var plugin, slotType, database, walStatus sql.NullString
		var temporary, twoPhase sql.NullBool
		var pid sql.NullInt64
		var current string
		// two_phase through to_jsonb: PostgreSQL 13 has no such column (NULL there).
		err = conn.QueryRowContext(ctx, `SELECT s.plugin, s.slot_type, s.database, s.wal_status, s.temporary, s.active_pid,
			(pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.->>) 'two_phase')::pg_catalog.bool, pg_catalog.current_database()
			FROM (SELECT pg_catalog.current_database()) AS d(x)
			LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name OPERATOR(pg_catalog.=) $1`, s.replicationSlot).Scan(&plugin, &slotType, &database, &walStatus, &temporary, &pid, &twoPhase, &current)
		if err != nil {
			return classify(err, "look up replication slot")
		}
		if slotType.Valid {
			if slotType.String != "logical" || plugin.String != "pgoutput" || database.String != current {
				return fmt.Errorf("%w: slot %q is a %s slot with plugin %q on database %q; dbsync needs a logical pgoutput slot on %q: choose another name (WithReplicationSlot / %s) or drop it with SELECT pg_drop_replication_slot(%s)",
					ErrSlotMismatch, s.replicationSlot, slotType.String, plugin.String, database.String, current, EnvReplSlot, pq.QuoteLiteral(s.replicationSlot))
			}
			if temporary.Bool {
				// dbsync never creates a temporary slot under this name: it belongs to
				// another session and is dropped when that session ends, with the
				// position the Syncer reached (Run would then fail with ErrSlotMissing).
				return fmt.Errorf("%w: slot %q is a temporary slot of another session (backend PID %d): PostgreSQL drops it when that session ends, and the Syncer's position with it; choose another name (WithReplicationSlot / %s), or end that session and set up again",
					ErrSlotMismatch, s.replicationSlot, pid.Int64, EnvReplSlot)
			}
			if twoPhase.Bool {
				return s.errSlotTwoPhase()
			}
			if walStatus.String == "lost" {
				// The server removed WAL the slot still needed (max_slot_wal_keep_size):
				// the changes in it are gone for this slot, so reading on would skip them.
				return s.errSlotLost(nil)
			}
		} else {
			if s.beforeSlotCreate != nil {
				s.beforeSlotCreate()
			}
			stopWatch := s.watchSlotCreation(ctx, slotCreationWarnAfter)
			_, err := conn.ExecContext(ctx, `SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')`, s.replicationSlot)
			stopWatch()
			if err != nil {
				if hasSQLState(err, "42710") && attempt == 0 {
					// Created meanwhile outside this lock, which is per database (a
					// Syncer of another database): look at it as one found at first.
					continue
				}
				return classify(err, "create replication slot "+s.replicationSlot)
			}
			s.log.Info("dbsync: created replication slot", "slot", s.replicationSlot)
		}
		break
	}
	return s.recheckCatalog(ctx, conn)
}

// errSlotTwoPhase is ErrSlotMismatch for a slot created with two_phase = true, which
// dbsync never creates: pgoutput sends its prepared transactions at PREPARE TRANSACTION
// as BEGIN PREPARE / PREPARE messages (and COMMIT PREPARED without the changes), which
// dbsync does not read, so Run would stop at the first one.
func (s *Syncer) errSlotTwoPhase() error {
	return fmt.Errorf("%w: slot %q was created with two_phase = true (a subscription's WITH (two_phase = true) creates such slots): pgoutput sends its prepared transactions as PREPARE messages, which dbsync does not read; dbsync neither uses nor drops it: choose another name (WithReplicationSlot / %s), or drop it with SELECT pg_drop_replication_slot(%s) if nothing uses it",
		ErrSlotMismatch, s.replicationSlot, EnvReplSlot, pq.QuoteLiteral(s.replicationSlot))
}

// recheckCatalog sets up the control schema, the watermark table and its place in the
// publication again if they are missing: a Teardown of the last other slot may have
// removed them after setupCatalog. conn holds the slot setup lock.
func (s *Syncer) recheckCatalog(ctx context.Context, conn *sql.Conn) error {
	var ok bool
	// The catalog rather than to_regclass, which needs USAGE on the schema: the role
	// may use a control schema an administrator created, and Run does not need it.
	if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
			WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2)
		AND EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
			WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $3)
		AND COALESCE((SELECT p.puballtables OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt
			WHERE pt.pubname OPERATOR(pg_catalog.=) p.pubname AND pt.schemaname OPERATOR(pg_catalog.=) $1 AND pt.tablename OPERATOR(pg_catalog.=) $2)
			FROM pg_catalog.pg_publication p WHERE p.pubname OPERATOR(pg_catalog.=) $4), false)`,
		s.ctrlNamespace, s.wmTableName, snapshotProgressTable, s.publication).Scan(&ok); err != nil {
		return classify(err, "check control schema "+s.ctrlNamespace)
	}
	if ok {
		return nil
	}
	s.log.Info("dbsync: control schema or watermark table removed during setup (a concurrent teardown); setting them up again",
		"schema", s.ctrlNamespace, "table", s.wmTableName, "publication", s.publication)
	return s.setupCatalogOn(ctx, conn)
}
