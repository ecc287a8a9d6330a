package dbsync

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// rlsSetup is a database with a table t (rows 1, 2, 3) that a REPLICATION role may
// read, published by a publication the role owns, and that role's Syncer (on a pool
// of the given driver) running with a cacheHandler.
type rlsSetup struct {
	d    *pgtest.Database
	role string // quoted
	s    *Syncer
	h    *cacheHandler
	pgx  bool
}

func newRLSSetup(t *testing.T, driver string, stmts ...string) *rlsSetup {
	t.Helper()
	d := pgtest.NewDatabase(t)
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'x'), (2, 'y'), (3, 'y')`,
		`GRANT SELECT ON t TO `+role, `GRANT CREATE ON DATABASE `+pq.QuoteIdentifier(d.Name)+` TO `+role,
		`CREATE PUBLICATION `+slot+`_pub FOR TABLE t`, `ALTER PUBLICATION `+slot+`_pub OWNER TO `+role)
	for i := range stmts {
		stmts[i] = strings.ReplaceAll(stmts[i], "{role}", role)
	}
	execAll(t, d.DB, stmts...)
	db, err := sql.Open(driver, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	h := newCacheHandler()
	s, _ := startSyncer(t, dsn, slot, h, WithDB(db))
	return &rlsSetup{d: d, role: role, s: s, h: h, pgx: driver == "pgx"}
}

func (r *rlsSetup) watermarks(t *testing.T) string {
	return queryStrings(t, r.d.DB, `SELECT count(*)::text FROM dbsync_ctrl.dbsync_wmtable`)[0]
}

// requireRLSRefused: Snapshot and Refresh (a whole-table query and one of a row the
// policy hides) fail with ErrInsufficientPrivilege naming the table, row-level
// security and the fixes in want, before any watermark is written and with nothing
// delivered; no selection silently misses rows.
func (r *rlsSetup) requireRLSRefused(t *testing.T, want ...string) {
	t.Helper()
	ctx := context.Background()
	before, events := r.watermarks(t), r.h.eventList()
	check := func(err error, what string) {
		t.Helper()
		require.ErrorIs(t, err, ErrInsufficientPrivilege, what)
		require.NotErrorIs(t, err, ErrReplicationPrivilege, what)
		require.ErrorContains(t, err, `"public"."t"`, what)
		require.ErrorContains(t, err, "row-level security", what)
		for _, w := range want {
			require.ErrorContains(t, err, w, what)
		}
		require.Equal(t, before, r.watermarks(t), "no watermark written: %s", what)
	}
	check(r.s.Snapshot(ctx, "t"), "Snapshot")
	for _, q := range []string{`SELECT * FROM t`, `SELECT id, v FROM t WHERE id IN (2, 3)`} {
		stats, err := r.s.RefreshContext(ctx, q)
		check(err, q)
		require.Equal(t, RefreshStats{}, stats, q)
	}
	catchUp(t, r.s)
	require.Equal(t, events, r.h.eventList(), "nothing delivered")
}

// requireAllRows: Snapshot and Refresh now read every row of t.
func (r *rlsSetup) requireAllRows(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, r.s.Snapshot(ctx, "t"))
	stats, err := r.s.RefreshContext(ctx, `SELECT id, v FROM t WHERE id IN (2, 3)`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
	catchUp(t, r.s)
	require.Equal(t, []string{`refresh public.t ["1"]`, `refresh public.t ["2"]`, `refresh public.t ["3"]`,
		`refresh public.t ["2"]`, `refresh public.t ["3"]`}, r.h.eventList())
	require.Empty(t, mismatches(r.h.tableRows("public.t"), dbRows(t, r.d.DB, "t")))
	require.Equal(t, r.pgx, r.s.pgconnSelects.Load() > 0, "selections on pgx's own connection")
}

// TestSelectionRowLevelSecurity: logical decoding ignores row-level security, but
// selections are SELECTs as dbsync's role: on a table with RLS enabled and a policy
// that shows the role only row 1, a Snapshot "completed" with rows 2 and 3 missing
// (a cache built from it lacked them for good) and a Refresh of rows 2 and 3 read
// nothing and returned nil. Both are refused instead (ErrInsufficientPrivilege naming
// the table and the fixes), through lib/pq and through pgx (whose selections run on
// its own connection), before any watermark; with BYPASSRLS every row is read.
func TestSelectionRowLevelSecurity(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			r := newRLSSetup(t, driver, `ALTER TABLE t ENABLE ROW LEVEL SECURITY`,
				`CREATE POLICY only_x ON t FOR SELECT TO {role} USING (v = 'x')`)
			r.requireRLSRefused(t, "ALTER ROLE "+r.role+" BYPASSRLS", `ALTER TABLE "public"."t" DISABLE ROW LEVEL SECURITY`)
			execAll(t, r.d.DB, `ALTER ROLE `+r.role+` BYPASSRLS`)
			r.requireAllRows(t)
		})
	}
}

// TestSelectionRowLevelSecurityPolicyForRole: a policy that shows the role every row
// is still refused (dbsync cannot tell which rows a policy hides, and row_security off
// refuses any query a policy applies to, as for pg_dump); disabling row-level security
// on the table, which the error also names, lets the selections run.
func TestSelectionRowLevelSecurityPolicyForRole(t *testing.T) {
	r := newRLSSetup(t, "pgx", `ALTER TABLE t ENABLE ROW LEVEL SECURITY`,
		`CREATE POLICY only_x ON t FOR SELECT USING (v = 'x')`,
		`CREATE POLICY dbsync_reads_all ON t FOR SELECT TO {role} USING (true)`)
	r.requireRLSRefused(t, "a policy that shows the role every row does not help")
	execAll(t, r.d.DB, `ALTER TABLE t DISABLE ROW LEVEL SECURITY`)
	r.requireAllRows(t)
}

// TestSelectionRowLevelSecurityForcedOwner: the role owns the table, which applies
// its policies to its owner too (FORCE ROW LEVEL SECURITY): refused likewise, the
// error naming NO FORCE; after it every row is read.
func TestSelectionRowLevelSecurityForcedOwner(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			r := newRLSSetup(t, driver, `ALTER TABLE t OWNER TO {role}`, `ALTER TABLE t ENABLE ROW LEVEL SECURITY`,
				`ALTER TABLE t FORCE ROW LEVEL SECURITY`, `CREATE POLICY only_x ON t FOR SELECT USING (v = 'x')`)
			r.requireRLSRefused(t, `ALTER TABLE "public"."t" NO FORCE ROW LEVEL SECURITY`)
			execAll(t, r.d.DB, `ALTER TABLE t NO FORCE ROW LEVEL SECURITY`)
			r.requireAllRows(t)
		})
	}
}

// TestSelectionRowLevelSecurityEnabledMidway: RLS enabled while a Snapshot runs, after
// its privilege check (here: once its first chunk of one row was read). The later
// chunks then read nothing, and the Snapshot "completed" with row 1 only. The
// selections (the chunk bound's query and the chunk's SELECT) run with row_security
// off, so the server refuses instead of filtering: ErrInsufficientPrivilege naming
// the table; only the first chunk was delivered. (Chunk range planning likewise.)
func TestSelectionRowLevelSecurityEnabledMidway(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			r := newRLSSetup(t, driver)
			var once sync.Once
			r.s.win.afterSelect = func() {
				once.Do(func() {
					execAll(t, r.d.DB, `ALTER TABLE t ENABLE ROW LEVEL SECURITY`, `CREATE POLICY only_x ON t FOR SELECT USING (v = 'x')`)
				})
			}
			r.s.SnapshotChunkSize = 1
			err := r.s.Snapshot(context.Background(), "t")
			require.ErrorIs(t, err, ErrInsufficientPrivilege)
			require.ErrorContains(t, err, `"public"."t"`)
			require.ErrorContains(t, err, "row-level security")
			require.ErrorContains(t, err, "ALTER ROLE "+r.role+" BYPASSRLS")
			catchUp(t, r.s)
			require.Equal(t, []string{`refresh public.t ["1"]`}, r.h.eventList())

			// The selection's own SELECT (after a check that passed) is refused likewise,
			// on either transport.
			ctx := context.Background()
			qt, err := resolveTable(ctx, r.s.db, "t")
			require.NoError(t, err)
			info, err := r.s.tableInfoByName(ctx, qt)
			require.NoError(t, err)
			rows, _, _, err := r.s.selectRows(ctx, info, []string{"id", "v"}, refreshQuery(info, []string{"id", "v"}, `SELECT * FROM t`+"\n"))
			require.Nil(t, rows)
			require.ErrorIs(t, err, ErrInsufficientPrivilege)
			require.NotErrorIs(t, err, ErrConfig)
			require.ErrorContains(t, err, `selection on public.t: row-level security policies of "public"."t" apply to role`)
			require.ErrorContains(t, err, "query would be affected by row-level security policy")
			require.Equal(t, r.pgx, r.s.pgconnSelects.Load() > 0, "selections on pgx's own connection")
			// So is the query that plans chunk ranges (WithSnapshotParallel), which would
			// otherwise find its bound among the rows the policy shows.
			bound, err := r.s.chunkBound(ctx, info, nil, 2)
			require.Nil(t, bound)
			require.ErrorIs(t, err, ErrInsufficientPrivilege)
			require.ErrorContains(t, err, `find the next snapshot chunk's key range in public.t: row-level security policies of "public"."t" apply to role`)
		})
	}
}

// TestSelectionRowLevelSecurityCtrlTables: an administrator created the control
// tables and enabled row-level security on them with policies that let the role
// insert and read watermarks but not delete them: the watermarks piled up
// silently. Refresh and Snapshot refuse instead, before writing, naming the
// statement that turns RLS off for the table.
func TestSelectionRowLevelSecurityCtrlTables(t *testing.T) {
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
		`CREATE PUBLICATION `+pub+` FOR TABLE t, dbsync_ctrl.dbsync_wmtable`,
		`ALTER TABLE dbsync_ctrl.dbsync_wmtable ENABLE ROW LEVEL SECURITY`,
		`CREATE POLICY wm_ins ON dbsync_ctrl.dbsync_wmtable FOR INSERT WITH CHECK (true)`,
		`CREATE POLICY wm_sel ON dbsync_ctrl.dbsync_wmtable FOR SELECT USING (true)`)
	h := newCacheHandler()
	s, _ := startSyncer(t, dsn, slot, h)
	wm := func() string {
		return queryStrings(t, d.DB, `SELECT count(*)::text FROM dbsync_ctrl.dbsync_wmtable`)[0]
	}
	_, err := s.RefreshContext(ctx, `SELECT * FROM t`)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.ErrorContains(t, err, "row-level security")
	require.Equal(t, "0", wm(), "nothing written")
	requireStatement(t, d, err, `ALTER TABLE "dbsync_ctrl"."dbsync_wmtable" DISABLE ROW LEVEL SECURITY`)

	execAll(t, d.DB, `ALTER TABLE dbsync_ctrl.snapshot_progress ENABLE ROW LEVEL SECURITY`)
	err = s.Snapshot(ctx, "t")
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	requireStatement(t, d, err, `ALTER TABLE "dbsync_ctrl"."snapshot_progress" DISABLE ROW LEVEL SECURITY`)
	require.NoError(t, s.Snapshot(ctx, "t"))
	_, err = s.RefreshContext(ctx, `SELECT * FROM t`)
	require.NoError(t, err)
	catchUp(t, s)
	waitFor(t, 10*time.Second, func() bool { return wm() == "0" }, "watermarks deleted")
	require.Empty(t, mismatches(h.tableRows("public.t"), dbRows(t, d.DB, "t")))
}

// TestSelectionRowLevelSecurityDefaultDeny: RLS enabled without a policy for the role
// hides every row; the planner then drops the table from a Refresh query's plan, and
// the Refresh failed with ErrConfig saying the query reads no table ("WHERE false"),
// which sent the user looking at the query. It is refused as row-level security
// (ErrInsufficientPrivilege naming the table and BYPASSRLS), as is the Snapshot.
func TestSelectionRowLevelSecurityDefaultDeny(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			r := newRLSSetup(t, driver, `ALTER TABLE t ENABLE ROW LEVEL SECURITY`)
			before := r.watermarks(t)
			_, err := r.s.RefreshContext(context.Background(), `SELECT * FROM t`)
			require.ErrorIs(t, err, ErrInsufficientPrivilege)
			require.NotErrorIs(t, err, ErrConfig)
			require.ErrorContains(t, err, "Refresh query: row-level security policies apply to role "+r.role)
			require.ErrorContains(t, err, "ALTER ROLE "+r.role+" BYPASSRLS")
			require.ErrorContains(t, err, `query would be affected by row-level security policy for table "t"`)
			require.Equal(t, before, r.watermarks(t))
			// A query whose plan keeps the table, and a Snapshot: the privilege check.
			_, err = r.s.RefreshContext(context.Background(), `SELECT id, v FROM t WHERE id IN (2, 3)`)
			require.ErrorIs(t, err, ErrInsufficientPrivilege)
			require.ErrorContains(t, err, `row-level security policies of "public"."t" apply to role `+r.role)
			err = r.s.Snapshot(context.Background(), "t")
			require.ErrorIs(t, err, ErrInsufficientPrivilege)
			require.ErrorContains(t, err, `Snapshot of public.t: nothing was written: row-level security policies of "public"."t" apply to role `+r.role)
			require.Equal(t, before, r.watermarks(t))
			catchUp(t, r.s)
			require.Empty(t, r.h.eventList())
		})
	}
}
