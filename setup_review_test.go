package dbsync

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestSetupWarnsPublicationSkipsOperations: an existing publication that does not
// publish every kind of change (publish = 'insert') loses the UPDATEs, DELETEs and
// TRUNCATEs of its tables for the Syncer: setup warns once, naming what is missing and
// the statement that publishes it. A publication publishing all four gets no warning.
func TestSetupWarnsPublicationSkipsOperations(t *testing.T) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	pub := pq.QuoteIdentifier(slot + "_pub")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `CREATE PUBLICATION `+pub+` FOR TABLE t WITH (publish = 'insert')`)
	var logs bytes.Buffer
	h := newCacheHandler()
	s, stop := startSyncer(t, d.DSN(), slot, h, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	execAll(t, d.DB, `INSERT INTO t VALUES (1, 'a')`, `UPDATE t SET v = 'b'`, `DELETE FROM t`)
	catchUp(t, s)
	require.NoError(t, stop())
	require.Equal(t, []string{`insert public.t ["1"]`}, h.eventList(), "the publication's choice: only INSERTs reach the slot")
	out := logs.String()
	require.Equal(t, 1, strings.Count(out, "level=WARN"), out)
	require.Contains(t, out, `publication `+slot+`_pub does not publish UPDATE, DELETE, TRUNCATE`)
	require.Contains(t, out, `ALTER PUBLICATION `+strings.ReplaceAll(pub, `"`, `\"`)+` SET (publish = 'insert, update, delete, truncate')`)

	// Publishing everything: setup warns no more.
	execAll(t, d.DB, `ALTER PUBLICATION `+pub+` SET (publish = 'insert, update, delete, truncate')`)
	logs.Reset()
	_, stop = startSyncer(t, d.DSN(), slot, h, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	require.NoError(t, stop())
	require.Empty(t, logs.String())
}

// TestSetupRejectsForeignCtrlTables: a table of the watermark table's or the snapshot
// progress table's name already in the control schema, but not with the columns and
// key dbsync creates them with, is refused by setup with ErrConfig naming the table
// and what it lacks, before any slot is created. (Setup once took such a table as its
// own: Refresh then failed with advice to republish columns the table did not have,
// and Snapshot with the server's "column does not exist".) Dropping it lets setup
// create dbsync's.
func TestSetupRejectsForeignCtrlTables(t *testing.T) {
	for _, c := range []struct {
		name, table, ddl, want string
		cols                   []string
	}{
		{"watermark", "dbsync_wmtable", `CREATE TABLE dbsync_ctrl.dbsync_wmtable (id int)`,
			`table "dbsync_ctrl"."dbsync_wmtable" is not the watermark table dbsync creates: it lacks column selection_id text, column wm_type text, column created_at timestamp with time zone, a unique key on (selection_id, wm_type)`,
			[]string{"id"}},
		{"watermark without key", "dbsync_wmtable", `CREATE TABLE dbsync_ctrl.dbsync_wmtable (selection_id text, wm_type varchar, created_at timestamptz)`,
			`table "dbsync_ctrl"."dbsync_wmtable" is not the watermark table dbsync creates: it lacks column wm_type text, a unique key on (selection_id, wm_type)`,
			[]string{"selection_id", "wm_type", "created_at"}},
		{"progress", "snapshot_progress", `CREATE TABLE dbsync_ctrl.snapshot_progress (slot_name text PRIMARY KEY, x int)`,
			`table "dbsync_ctrl"."snapshot_progress" is not the snapshot progress table dbsync creates: it lacks column table_name text, column key_columns text[], column last_key text[], column chunk_size integer, column chunks_done bigint, column rows_done bigint, column started_at timestamp with time zone, column updated_at timestamp with time zone, column finished_at timestamp with time zone, a unique key on (slot_name, table_name)`,
			[]string{"slot_name", "x"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			slot := pgtest.Ident(t, "slot")
			execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`, `CREATE SCHEMA dbsync_ctrl`, c.ddl)
			opts := []SyncerOpt{WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(slot + "_pub"), ForTables("t")}
			_, err := NewSyncer(opts...)
			require.ErrorIs(t, err, ErrConfig)
			require.ErrorContains(t, err, c.want)
			require.ErrorContains(t, err, `drop it (DROP TABLE "dbsync_ctrl".`+pq.QuoteIdentifier(c.table)+`) for setup to create dbsync's, or choose another control schema (WithCtrlNamespace / DBSYNC_CTRL_NAMESPACE)`)
			require.Equal(t, 0, slotCount(t, d), "no slot created")
			require.Equal(t, c.cols, queryStrings(t, d.DB, `SELECT attname FROM pg_attribute WHERE attrelid = ('dbsync_ctrl.'||$1)::regclass
				AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, c.table), "the table is left as it was")

			execAll(t, d.DB, `DROP TABLE dbsync_ctrl.`+c.table)
			s, err := NewSyncer(opts...)
			require.NoError(t, err)
			s.Close()
			require.Equal(t, 1, slotCount(t, d))
		})
	}
}

// TestTeardownCtrlSchemaPublishedBySchema: a publication FOR TABLES IN SCHEMA that
// names the control schema publishes the watermark table without holding it by
// itself, so ALTER PUBLICATION ... DROP TABLE cannot take it out (42704, "is not part
// of the publication"). Teardown once ran it anyway and failed every time with
// ErrPublicationMissing although the publication exists, keeping the control schema
// for good. Teardown drops the tables and the schema, which takes the schema out of
// the publication; the publication and its other schema stay.
func TestTeardownCtrlSchemaPublishedBySchema(t *testing.T) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	pub := slot + "_pub"
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`, `CREATE SCHEMA dbsync_ctrl`,
		`CREATE PUBLICATION `+pq.QuoteIdentifier(pub)+` FOR TABLES IN SCHEMA public, dbsync_ctrl`)
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub), ForTables("t"))
	require.NoError(t, err)
	defer s.Close()
	published := func() []string {
		return queryStrings(t, d.DB, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, pub)
	}
	require.Equal(t, []string{"dbsync_ctrl.dbsync_wmtable", "dbsync_ctrl.snapshot_progress", "public.t"}, published())
	res, err := s.TeardownWithResult(t.Context())
	require.NoError(t, err)
	require.Equal(t, TeardownResult{SlotDropped: true, CtrlSchemaDropped: true}, res)
	require.Equal(t, []string{"public.t"}, published())
	require.Equal(t, []string{"public"}, queryStrings(t, d.DB, `SELECT n.nspname FROM pg_publication_namespace pn
		JOIN pg_publication p ON p.oid = pn.pnpubid JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = $1`, pub))
	res, err = s.TeardownWithResult(t.Context())
	require.NoError(t, err)
	require.Equal(t, TeardownResult{}, res)
}

// TestSetupPartitionPublishedViaRoot: ForTables names a partition whose partitioned
// table the publication holds with publish_via_partition_root = true, so the
// partition's changes are published (under the partitioned table). Setup leaves the
// publication as it is: it once ran ALTER PUBLICATION ... ADD TABLE of the partition,
// which a role owning the publication but not the partition may not run, failing with
// ErrInsufficientPrivilege for a statement nothing needed.
func TestSetupPartitionPublishedViaRoot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	pub := pq.QuoteIdentifier(slot + "_pub")
	execAll(t, d.DB, `CREATE TABLE root (id int PRIMARY KEY) PARTITION BY RANGE (id)`,
		`CREATE TABLE p1 PARTITION OF root FOR VALUES FROM (0) TO (100)`,
		`GRANT SELECT ON root, p1 TO `+role, `CREATE SCHEMA dbsync_ctrl AUTHORIZATION `+role,
		`CREATE PUBLICATION `+pub+` FOR TABLE root WITH (publish_via_partition_root = true)`,
		`ALTER PUBLICATION `+pub+` OWNER TO `+role)
	s, err := NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(slot+"_pub"), ForTables("p1"))
	require.NoError(t, err)
	s.Close()
	require.Equal(t, []string{"dbsync_ctrl.dbsync_wmtable", "root"}, queryStrings(t, d.DB,
		`SELECT prrelid::regclass::text FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1 ORDER BY 1`, slot+"_pub"))
	require.Equal(t, 1, slotCount(t, d))
}

// TestSetupCreatePublicationNeedsDatabaseCreate: a role owning the ForTables table
// but without CREATE on the database may not create the publication (PostgreSQL
// needs both). The error once told to have "a role owning the tables" run the CREATE
// PUBLICATION, which the role itself is; it names the GRANT CREATE ON DATABASE that
// lets the role run it, and after that grant setup creates the publication.
func TestSetupCreatePublicationNeedsDatabaseCreate(t *testing.T) {
	d := pgtest.NewDatabase(t)
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`, `ALTER TABLE t OWNER TO `+role, `CREATE SCHEMA dbsync_ctrl AUTHORIZATION `+role)
	opts := []SyncerOpt{WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(slot + "_pub"), ForTables("t")}
	_, err := NewSyncer(opts...)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.Equal(t, 0, slotCount(t, d))
	requireStatement(t, d, err, `GRANT CREATE ON DATABASE `+pq.QuoteIdentifier(d.Name)+` TO `+role)
	s, err := NewSyncer(opts...)
	require.NoError(t, err)
	s.Close()
	require.Equal(t, []string{"dbsync_ctrl.dbsync_wmtable", "public.t"}, queryStrings(t, d.DB,
		`SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, slot+"_pub"))
	require.Equal(t, 1, slotCount(t, d))
}

// TestSetupSlotCreatedElsewhereMeanwhile: the slot setup lock is per database, so a
// slot of the same name created in another database (another dbsync setting up
// there) between setup's look-up and its pg_create_logical_replication_slot makes
// the creation fail with 42710. Setup once returned that raw server error; it looks
// the slot up again and refuses it like one found at first: ErrSlotMismatch naming
// the other database. The other database's slot is left alone.
func TestSetupSlotCreatedElsewhereMeanwhile(t *testing.T) {
	d := pgtest.NewDatabase(t)
	other := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`)
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(slot+"_pub"), ForTables("t"), WithSetup(false))
	require.NoError(t, err)
	defer s.Close()
	s.beforeSlotCreate = func() {
		execAll(t, other.DB, `SELECT pg_create_logical_replication_slot('`+slot+`', 'pgoutput')`)
	}
	err = s.Setup(t.Context())
	require.ErrorIs(t, err, ErrSlotMismatch)
	require.ErrorContains(t, err, `slot "`+slot+`" is a logical slot with plugin "pgoutput" on database "`+other.Name+`"`)
	require.Equal(t, []string{other.Name}, queryStrings(t, d.DB, `SELECT database FROM pg_replication_slots WHERE slot_name = $1`, slot))
	execAll(t, d.DB, `SELECT pg_drop_replication_slot('`+slot+`')`)
}

// TestAdminCreatedCtrlWatermarkTablePublished follows README ("Without superuser"): an
// administrator created the control schema and its tables with the grants README
// lists, and the role owns the publication. Setup may not add the watermark table,
// which the role does not own, to the publication: ErrInsufficientPrivilege names
// the ALTER PUBLICATION README tells the administrator to run, and no slot is
// created; after it setup succeeds.
func TestAdminCreatedCtrlWatermarkTablePublished(t *testing.T) {
	d := pgtest.NewDatabase(t)
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	pub := slot + "_pub"
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`, `GRANT SELECT ON t TO `+role, ctrlDDL(),
		`GRANT USAGE ON SCHEMA dbsync_ctrl TO `+role,
		`GRANT SELECT, INSERT, DELETE ON dbsync_ctrl.dbsync_wmtable TO `+role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON dbsync_ctrl.snapshot_progress TO `+role,
		`CREATE PUBLICATION `+pq.QuoteIdentifier(pub)+` FOR TABLE t`, `ALTER PUBLICATION `+pq.QuoteIdentifier(pub)+` OWNER TO `+role)
	opts := []SyncerOpt{WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(pub)}
	_, err := NewSyncer(opts...)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.Equal(t, 0, slotCount(t, d))
	requireStatement(t, d, err, `ALTER PUBLICATION `+pq.QuoteIdentifier(pub)+` ADD TABLE "dbsync_ctrl"."dbsync_wmtable"`)
	s, err := NewSyncer(opts...)
	require.NoError(t, err)
	s.Close()
	require.Equal(t, 1, slotCount(t, d))
}

// TestSetupRefusesTwoPhaseSlot: a pgoutput slot of the name created with two_phase =
// true (as a subscription WITH (two_phase = true) creates it) makes pgoutput send
// prepared transactions as BEGIN PREPARE/PREPARE messages, which dbsync does not read:
// setup once accepted it, and Run then stopped for good at the first PREPARE
// TRANSACTION with ErrMalformedMessage ("type 'b' ... not supported", seen on a cluster
// with max_prepared_transactions). Setup refuses it with ErrSlotMismatch, and
// Teardown does not drop it (dbsync never creates such a slot).
func TestSetupRefusesTwoPhaseSlot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`, `SELECT pg_create_logical_replication_slot('`+slot+`', 'pgoutput', false, true)`)
	t.Cleanup(func() { d.DB.Exec(`SELECT pg_drop_replication_slot('` + slot + `')`) })
	_, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(slot+"_pub"), ForTables("t"))
	require.ErrorIs(t, err, ErrSlotMismatch)
	require.ErrorContains(t, err, `slot "`+slot+`" was created with two_phase = true`)
	res, err := teardownSyncer(t, d.DSN(), slot).TeardownWithResult(t.Context())
	require.ErrorIs(t, err, ErrSlotMismatch)
	require.ErrorContains(t, err, `slot "`+slot+`" was created with two_phase = true`)
	require.Equal(t, TeardownResult{}, res)
	require.Equal(t, []string{"true"}, queryStrings(t, d.DB, `SELECT two_phase::text FROM pg_replication_slots WHERE slot_name = $1`, slot))
}
