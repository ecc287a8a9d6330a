package dbsync

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestReadmeAdminCreatedCtrlSharedPublication follows README's paragraph on control
// tables an administrator creates ("PostgreSQL requirements") literally: the schema
// and tables from sql/setup_ctrl.sql, the grants, the COMMENT marking both, the
// watermark table added to the publication. A Syncer of a role that owns none of it,
// with WithSetup(false) (its slot created by the administrator), shares the
// publication with a Syncer of another control schema; each Refreshes and
// Snapshots, and neither handler gets the other's watermark or progress rows: each
// sees its own refresh rows and the live insert, exactly.
func TestReadmeAdminCreatedCtrlSharedPublication(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	role, dsn := limitedRole(t, d, "REPLICATION")
	slotA, slotB := pgtest.Ident(t, "a"), pgtest.Ident(t, "b")
	pub := pgtest.Ident(t, "pub")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'a'), (2, 'b')`,
		`GRANT SELECT ON t TO `+role, ctrlDDL(),
		`GRANT USAGE ON SCHEMA dbsync_ctrl TO `+role,
		`GRANT SELECT, INSERT, DELETE ON dbsync_ctrl.dbsync_wmtable TO `+role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON dbsync_ctrl.snapshot_progress TO `+role,
		`COMMENT ON TABLE dbsync_ctrl.dbsync_wmtable IS 'dbsync control table'`,
		`COMMENT ON TABLE dbsync_ctrl.snapshot_progress IS 'dbsync control table'`,
		`CREATE PUBLICATION `+pub+` FOR TABLE t`,
		`ALTER PUBLICATION `+pub+` ADD TABLE dbsync_ctrl.dbsync_wmtable`,
		`SELECT pg_create_logical_replication_slot('`+slotA+`', 'pgoutput')`)
	recA, cA := &recorder{}, newCacheHandler()
	a, err := NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(slotA), WithPublication(pub), WithSetup(false),
		WithMessageHandler(multiHandler{recA, cA}), WithSnapshotChunkSize(1), WithPollBackoff(5*time.Millisecond, 2, 50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	recB, cB := &recorder{}, newCacheHandler()
	b := newTestSyncer(t, d, WithReplicationSlot(slotB), WithPublication(pub), WithCtrlNamespace("ctrl_b"),
		WithMessageHandler(multiHandler{recB, cB}), WithSnapshotChunkSize(1))
	require.Equal(t, []string{"ctrl_b.dbsync_wmtable", "dbsync_ctrl.dbsync_wmtable", "public.t"}, queryStrings(t, d.DB,
		`SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, pub))
	ra, rb := runInBackground(a), runInBackground(b)
	defer ra.stop(t)
	defer rb.stop(t)

	stats, err := a.RefreshContext(ctx, `SELECT * FROM t WHERE id = 1`)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Emitted)
	require.NoError(t, a.Snapshot(ctx, "t"))
	stats, err = b.RefreshContext(ctx, `SELECT * FROM t WHERE id = 2`)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Emitted)
	require.NoError(t, b.Snapshot(ctx, "t"))
	execAll(t, d.DB, `INSERT INTO t VALUES (3, 'c')`)
	catchUp(t, a)
	catchUp(t, b)
	for name, r := range map[string]*recorder{"A": recA, "B": recB} {
		require.Equal(t, []string{"BEGIN", "INSERT public.t id=3,v=c", "COMMIT"}, nonEmptyTx(r.snapshot()), name)
	}
	require.Equal(t, []string{`refresh public.t ["1"]`, `refresh public.t ["1"]`, `refresh public.t ["2"]`, `insert public.t ["3"]`}, cA.eventList())
	require.Equal(t, []string{`refresh public.t ["2"]`, `refresh public.t ["1"]`, `refresh public.t ["2"]`, `insert public.t ["3"]`}, cB.eventList())
}

// TestAdminCtrlUnmarkedWarningNamesComment: control tables an administrator created
// without the COMMENT README asks for, used by a role that does not own them: its
// setup cannot mark them and warns. The warning said "its owner's setup does", but an
// administrator runs no setup: until the owner runs the COMMENT, a Syncer of another
// control schema sharing the publication delivers this Syncer's watermark rows as
// changes. The warning names the statement for the owner to run, and once it is run
// the other Syncer delivers none of them.
func TestAdminCtrlUnmarkedWarningNamesComment(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	role, dsn := limitedRole(t, d, "REPLICATION")
	pub := pgtest.Ident(t, "pub")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'a')`,
		`GRANT SELECT ON t TO `+role, ctrlDDL(),
		`GRANT USAGE ON SCHEMA dbsync_ctrl TO `+role,
		`GRANT SELECT, INSERT, DELETE ON dbsync_ctrl.dbsync_wmtable TO `+role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON dbsync_ctrl.snapshot_progress TO `+role,
		`CREATE PUBLICATION `+pub+` FOR TABLE t, dbsync_ctrl.dbsync_wmtable`)
	var logs bytes.Buffer
	a, err := NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(pgtest.Ident(t, "a")), WithPublication(pub),
		WithMessageHandler(&recorder{}), WithPollBackoff(5*time.Millisecond, 2, 50*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	for _, stmt := range []string{
		`COMMENT ON TABLE "dbsync_ctrl"."dbsync_wmtable" IS 'dbsync control table'`,
		`COMMENT ON TABLE "dbsync_ctrl"."snapshot_progress" IS 'dbsync control table'`,
	} {
		require.Contains(t, logs.String(), strconv.Quote(stmt), "the warning names the statement for the owner")
		execAll(t, d.DB, stmt)
	}
	recB := &recorder{}
	b := newTestSyncer(t, d, WithReplicationSlot(pgtest.Ident(t, "b")), WithPublication(pub), WithCtrlNamespace("ctrl_b"), WithMessageHandler(recB))
	ra, rb := runInBackground(a), runInBackground(b)
	defer ra.stop(t)
	defer rb.stop(t)
	stats, err := a.RefreshContext(ctx, `SELECT * FROM t`)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Emitted)
	execAll(t, d.DB, `INSERT INTO t VALUES (2, 'b')`)
	catchUp(t, a)
	catchUp(t, b)
	require.Equal(t, []string{"BEGIN", "INSERT public.t id=2,v=b", "COMMIT"}, nonEmptyTx(recB.snapshot()))
}

// TestCtrlMarkedWhileOtherSyncerRuns: the administrator runs the COMMENT that setup's
// warning names while a Syncer of another control schema sharing the publication
// runs and has already delivered watermark rows of the unmarked table (as README
// says it does). Its later watermark rows are not delivered: the mark is looked up
// again, not kept as first found for as long as the Syncer runs.
func TestCtrlMarkedWhileOtherSyncerRuns(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	pub := pgtest.Ident(t, "pub")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'a')`,
		ctrlDDL(), `CREATE PUBLICATION `+pub+` FOR TABLE t, dbsync_ctrl.dbsync_wmtable`)
	a := newTestSyncer(t, d, WithReplicationSlot(pgtest.Ident(t, "a")), WithPublication(pub), WithMessageHandler(&recorder{}))
	// As an administrator left them: created without the marker.
	execAll(t, d.DB, `COMMENT ON TABLE dbsync_ctrl.dbsync_wmtable IS NULL`)
	recB := &recorder{}
	b := newTestSyncer(t, d, WithReplicationSlot(pgtest.Ident(t, "b")), WithPublication(pub), WithCtrlNamespace("ctrl_b"), WithMessageHandler(recB))
	ra, rb := runInBackground(a), runInBackground(b)
	defer ra.stop(t)
	defer rb.stop(t)
	_, err := a.RefreshContext(ctx, `SELECT * FROM t`)
	require.NoError(t, err)
	catchUp(t, b)
	wmRows := 0
	for _, l := range recB.snapshot() {
		if strings.HasPrefix(l, "INSERT dbsync_ctrl.dbsync_wmtable ") || strings.HasPrefix(l, "DELETE dbsync_ctrl.dbsync_wmtable ") {
			wmRows++
		}
	}
	require.Equal(t, 4, wmRows, "unmarked: the low and high watermarks' inserts and deletes delivered: %v", recB.snapshot())
	execAll(t, d.DB, `COMMENT ON TABLE "dbsync_ctrl"."dbsync_wmtable" IS 'dbsync control table'`)
	recB.mu.Lock()
	recB.lines = nil
	recB.mu.Unlock()
	_, err = a.RefreshContext(ctx, `SELECT * FROM t`)
	require.NoError(t, err)
	execAll(t, d.DB, `INSERT INTO t VALUES (2, 'b')`)
	catchUp(t, a)
	catchUp(t, b)
	require.Equal(t, []string{"BEGIN", "INSERT public.t id=2,v=b", "COMMIT"}, nonEmptyTx(recB.snapshot()))
}
