package dbsync

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// limitedRole creates a LOGIN role named after the test (attrs: e.g. "REPLICATION"),
// dropped with what it owns at cleanup, and returns its quoted name and a DSN of d as it.
func limitedRole(t *testing.T, d *pgtest.Database, attrs string) (quoted, dsn string) {
	t.Helper()
	role := pgtest.Ident(t, "role")
	quoted = pq.QuoteIdentifier(role)
	execAll(t, d.DB, fmt.Sprintf(`CREATE ROLE %s LOGIN NOSUPERUSER %s`, quoted, attrs))
	t.Cleanup(func() {
		d.DB.Exec(`DROP OWNED BY ` + quoted)
		d.DB.Exec(`DROP ROLE ` + quoted)
	})
	return quoted, fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", d.Server.Host, d.Server.Port, role, d.Name)
}

// slotCount is the number of replication slots of d's database.
func slotCount(t *testing.T, d *pgtest.Database) int {
	t.Helper()
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n))
	return n
}

// requireStatement checks that err names stmt (on a line of its own, or inline) and
// runs it as the administrator: the statement the error tells to run must fix it.
func requireStatement(t *testing.T, d *pgtest.Database, err error, stmt string) {
	t.Helper()
	require.ErrorContains(t, err, stmt)
	execAll(t, d.DB, stmt)
}

// TestLeastPrivilegeSetupFollowsHints: a role with REPLICATION only (no CREATE on the
// database), tables it may only read and a publication an administrator created.
// Every step that needs more fails with ErrInsufficientPrivilege (not
// ErrReplicationPrivilege) naming the statement that fixes it, creates no slot (no WAL
// retained), and running that statement lets the next setup go on; then Run, Refresh,
// Snapshot, Status and Teardown work, Teardown's last step again by a statement its
// error names.
func TestLeastPrivilegeSetupFollowsHints(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	pub := slot + "_pub"
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'a'), (2, 'b')`,
		`GRANT SELECT ON t TO `+role, `CREATE PUBLICATION `+pub+` FOR TABLE t`)
	opts := []SyncerOpt{WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(pub)}

	_, err := NewSyncer(opts...)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.NotErrorIs(t, err, ErrReplicationPrivilege)
	require.Zero(t, slotCount(t, d))
	require.Empty(t, queryStrings(t, d.DB, `SELECT nspname FROM pg_namespace WHERE nspname = 'dbsync_ctrl'`))
	requireStatement(t, d, err, `GRANT CREATE ON DATABASE `+pq.QuoteIdentifier(d.Name)+` TO `+role)

	_, err = NewSyncer(opts...)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.Zero(t, slotCount(t, d), "no slot while setup is incomplete")
	requireStatement(t, d, err, `ALTER PUBLICATION "`+pub+`" ADD TABLE "dbsync_ctrl"."dbsync_wmtable"`)

	h := newCacheHandler()
	s, stop := startSyncer(t, dsn, slot, h)
	execAll(t, d.DB, `INSERT INTO t VALUES (3, 'c')`)
	catchUp(t, s)
	require.Contains(t, h.eventList(), `insert public.t ["3"]`)
	requireRefreshAndSnapshot(t, ctx, s, "t", "t")
	require.Empty(t, mismatches(h.tableRows("public.t"), dbRows(t, d.DB, "t")))
	st, err := s.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, slot, st.Slot)
	require.NoError(t, stop())

	td := teardownSyncer(t, dsn, slot)
	res, err := td.TeardownWithResult(ctx)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.True(t, res.SlotDropped)
	require.Zero(t, slotCount(t, d), "the slot is dropped even when the rest cannot be")
	requireStatement(t, d, err, `ALTER PUBLICATION "`+pub+`" DROP TABLE "dbsync_ctrl"."dbsync_wmtable"`)
	res, err = td.TeardownWithResult(ctx)
	require.NoError(t, err)
	require.True(t, res.CtrlSchemaDropped)
}

// ctrlDDL is what setup runs to create the control schema and its tables.
func ctrlDDL() string {
	return `CREATE SCHEMA dbsync_ctrl; ` + strings.NewReplacer("{{ns}}", "dbsync_ctrl", "{{wm}}", "dbsync_wmtable").Replace(sqlText("setup_ctrl.sql"))
}

// TestLeastPrivilegeAdminCreatedCtrl: an administrator created the control schema and
// its tables, granted the role what README lists and published the watermark table;
// the role may create nothing. Setup runs no DDL then (CREATE ... IF NOT EXISTS needs
// CREATE even for an object that exists), and Refresh and Snapshot work. Each
// privilege on the control objects the role then loses makes Refresh or Snapshot
// fail at once, before a watermark is written, with the GRANT that restores it.
func TestLeastPrivilegeAdminCreatedCtrl(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	pub := slot + "_pub"
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'a'), (2, 'b')`,
		`GRANT SELECT ON t TO `+role, ctrlDDL(),
		`GRANT USAGE ON SCHEMA dbsync_ctrl TO `+role,
		`GRANT SELECT, INSERT, DELETE ON dbsync_ctrl.dbsync_wmtable TO `+role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON dbsync_ctrl.snapshot_progress TO `+role,
		`CREATE PUBLICATION `+pub+` FOR TABLE t, dbsync_ctrl.dbsync_wmtable`)

	h := newCacheHandler()
	s, _ := startSyncer(t, dsn, slot, h)
	requireRefreshAndSnapshot(t, ctx, s, "t", "t")
	require.Empty(t, mismatches(h.tableRows("public.t"), dbRows(t, d.DB, "t")))

	wmRows := func() string {
		return queryStrings(t, d.DB, `SELECT count(*)::text FROM dbsync_ctrl.dbsync_wmtable`)[0]
	}
	for _, c := range []struct{ revoke, grant string }{
		{`REVOKE DELETE ON dbsync_ctrl.dbsync_wmtable FROM ` + role, `GRANT DELETE ON "dbsync_ctrl"."dbsync_wmtable" TO ` + role},
		{`REVOKE INSERT ON dbsync_ctrl.dbsync_wmtable FROM ` + role, `GRANT INSERT ON "dbsync_ctrl"."dbsync_wmtable" TO ` + role},
		{`REVOKE USAGE ON SCHEMA dbsync_ctrl FROM ` + role, `GRANT USAGE ON SCHEMA "dbsync_ctrl" TO ` + role},
	} {
		execAll(t, d.DB, c.revoke)
		before := wmRows()
		_, err := s.RefreshContext(ctx, `SELECT * FROM t`)
		require.ErrorIs(t, err, ErrInsufficientPrivilege, c.revoke)
		require.Equal(t, before, wmRows(), "nothing written: %s", c.revoke)
		requireStatement(t, d, err, c.grant)
		_, err = s.RefreshContext(ctx, `SELECT * FROM t`)
		require.NoError(t, err, c.grant)
	}
	execAll(t, d.DB, `REVOKE UPDATE ON dbsync_ctrl.snapshot_progress FROM `+role)
	err := s.Snapshot(ctx, "t")
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	requireStatement(t, d, err, `GRANT UPDATE ON "dbsync_ctrl"."snapshot_progress" TO `+role)
	require.NoError(t, s.Snapshot(ctx, "t"))
}

// TestSelectionWithoutSelectPrivilege: a published table the role may not read (named
// replication_log, which once made a 42501 look like a missing REPLICATION
// privilege). Its changes still reach the Syncer (pgoutput does not check SELECT);
// Refresh and Snapshot of it fail with ErrInsufficientPrivilege, not ErrConfig, and
// Snapshot's names the GRANT, which makes it work.
func TestSelectionWithoutSelectPrivilege(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE replication_log (id int PRIMARY KEY, v text)`, `INSERT INTO replication_log VALUES (1, 'a')`,
		`GRANT CREATE ON DATABASE `+pq.QuoteIdentifier(d.Name)+` TO `+role,
		`CREATE PUBLICATION `+slot+`_pub FOR TABLE replication_log`, `ALTER PUBLICATION `+slot+`_pub OWNER TO `+role)
	h := newCacheHandler()
	s, _ := startSyncer(t, dsn, slot, h)
	execAll(t, d.DB, `INSERT INTO replication_log VALUES (2, 'b')`)
	catchUp(t, s)
	require.Contains(t, h.eventList(), `insert public.replication_log ["2"]`)

	_, err := s.RefreshContext(ctx, `SELECT * FROM replication_log`)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.NotErrorIs(t, err, ErrConfig)
	require.NotErrorIs(t, err, ErrReplicationPrivilege)
	require.ErrorContains(t, err, "permission denied for table replication_log")
	require.ErrorContains(t, err, "GRANT SELECT ON")

	err = s.Snapshot(ctx, "replication_log")
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.NotErrorIs(t, err, ErrReplicationPrivilege)
	requireStatement(t, d, err, `GRANT SELECT ON "public"."replication_log" TO `+role)
	require.NoError(t, s.Snapshot(ctx, "replication_log"))
	_, err = s.RefreshContext(ctx, `SELECT * FROM replication_log`)
	require.NoError(t, err)
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.replication_log"), dbRows(t, d.DB, "replication_log")))
}

// TestSetupForTablesNotOwned: ForTables and WithReplicaIdentityFull name tables the
// role does not own. Creating the publication, adding a table to it and setting the
// replica identity need ownership: each fails with ErrInsufficientPrivilege naming the
// statement an owner must run (the CREATE PUBLICATION with the watermark table, which
// setup committed so that it can), no slot is created, and after the statement setup
// succeeds.
func TestSetupForTablesNotOwned(t *testing.T) {
	d := pgtest.NewDatabase(t)
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	pub := slot + "_pub"
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`, `CREATE TABLE u (v text)`, `GRANT SELECT ON t, u TO `+role,
		`GRANT CREATE ON DATABASE `+pq.QuoteIdentifier(d.Name)+` TO `+role)
	opts := []SyncerOpt{WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(pub), ForTables("t")}

	_, err := NewSyncer(opts...)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.Zero(t, slotCount(t, d))
	requireStatement(t, d, err, `CREATE PUBLICATION "`+pub+`" FOR TABLE "public"."t", "dbsync_ctrl"."dbsync_wmtable"`)
	execAll(t, d.DB, `ALTER PUBLICATION `+pub+` OWNER TO `+role)

	// The role owns the publication now, not u.
	opts = append(opts, ForTables("t", "u"), WithReplicaIdentityFull("u"))
	_, err = NewSyncer(opts...)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.Zero(t, slotCount(t, d))
	requireStatement(t, d, err, `ALTER PUBLICATION "`+pub+`" ADD TABLE "public"."u"`)
	_, err = NewSyncer(opts...)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.Zero(t, slotCount(t, d))
	requireStatement(t, d, err, `ALTER TABLE "public"."u" REPLICA IDENTITY FULL`)
	s, err := NewSyncer(opts...)
	require.NoError(t, err)
	s.Close()
	require.Equal(t, 1, slotCount(t, d))
}

// TestForAllTablesPublicationNonSuperuser: a FOR ALL TABLES publication (only a
// superuser creates one) used by a role with REPLICATION and CREATE on the database:
// setup adds nothing to it, and Run, Refresh, Snapshot and Teardown work.
func TestForAllTablesPublicationNonSuperuser(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'a')`, `GRANT SELECT ON t TO `+role,
		`GRANT CREATE ON DATABASE `+pq.QuoteIdentifier(d.Name)+` TO `+role, `CREATE PUBLICATION `+slot+`_pub FOR ALL TABLES`)
	h := newCacheHandler()
	s, stop := startSyncer(t, dsn, slot, h)
	execAll(t, d.DB, `INSERT INTO t VALUES (2, 'b')`)
	requireRefreshAndSnapshot(t, ctx, s, "t", "t")
	require.Contains(t, h.eventList(), `insert public.t ["2"]`)
	require.Empty(t, mismatches(h.tableRows("public.t"), dbRows(t, d.DB, "t")))
	require.NoError(t, stop())
	requireTeardownAll(t, ctx, dsn, slot)
}

// teardownSyncer is a Syncer without setup on startSyncer's slot and publication.
func teardownSyncer(t *testing.T, dsn, slot string) *Syncer {
	t.Helper()
	s, err := NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(slot+"_pub"), WithSetup(false))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestReadmeLeastPrivilege runs README's least-privilege recipe ("PostgreSQL
// requirements", the sql block starting "-- as a superuser") as written, with the role,
// tables and publication renamed for the test, and checks that setup then succeeds as
// that role with nothing more, and that Run, Refresh, Snapshot and Teardown work.
func TestReadmeLeastPrivilege(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)```sql\n\\s*-- as a superuser\n(.*?)```").FindSubmatch(readme)
	require.NotNil(t, m, "README's least-privilege sql block")
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	role := pgtest.Ident(t, "role")
	slot := pgtest.Ident(t, "slot")
	t.Cleanup(func() {
		d.DB.Exec(`DROP OWNED BY ` + role)
		d.DB.Exec(`DROP ROLE IF EXISTS ` + role)
	})
	execAll(t, d.DB, `CREATE TABLE t1 (id int PRIMARY KEY, v text)`, `CREATE TABLE t2 (id int PRIMARY KEY)`,
		`INSERT INTO t1 VALUES (1, 'a')`)
	recipe := regexp.MustCompile(`\bapp\b`).ReplaceAllString(string(m[1]), role)
	recipe = strings.ReplaceAll(recipe, "dbsync_mypub", slot+"_pub")
	for _, stmt := range strings.Split(recipe, ";") {
		if stmt = strings.TrimSpace(stmt); stmt != "" {
			execAll(t, d.DB, stmt)
		}
	}
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", d.Server.Host, d.Server.Port, role, d.Name)
	h := newCacheHandler()
	s, stop := startSyncer(t, dsn, slot, h)
	execAll(t, d.DB, `INSERT INTO t1 VALUES (2, 'b')`)
	requireRefreshAndSnapshot(t, ctx, s, "t1", "t1", "t2")
	require.Contains(t, h.eventList(), `insert public.t1 ["2"]`)
	require.Empty(t, mismatches(h.tableRows("public.t1"), dbRows(t, d.DB, "t1")))
	require.NoError(t, stop())
	requireTeardownAll(t, ctx, dsn, slot)
}

// requireRefreshAndSnapshot refreshes every row of table, then snapshots tables, and
// waits until s caught up with both.
func requireRefreshAndSnapshot(t *testing.T, ctx context.Context, s *Syncer, table string, tables ...string) {
	t.Helper()
	_, err := s.RefreshContext(ctx, `SELECT * FROM `+table)
	require.NoError(t, err)
	require.NoError(t, s.Snapshot(ctx, tables...))
	catchUp(t, s)
}

// requireTeardownAll: a teardown of startSyncer's slot drops the slot and the control
// schema.
func requireTeardownAll(t *testing.T, ctx context.Context, dsn, slot string) {
	t.Helper()
	res, err := teardownSyncer(t, dsn, slot).TeardownWithResult(ctx)
	require.NoError(t, err)
	require.True(t, res.SlotDropped)
	require.True(t, res.CtrlSchemaDropped)
}
