package dbsync

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestUserTablesShapedLikeControlTablesDelivered: a user's tables that happen to have
// the columns of a dbsync watermark table (selection_id, wm_type, created_at), or to be
// named snapshot_progress with the progress table's columns, in a schema that is no
// control schema, are the user's: every change of them reaches the handler, exactly
// as written. Only tables setup created (and marked) are dbsync's.
func TestUserTablesShapedLikeControlTablesDelivered(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE SCHEMA app`,
		`CREATE TABLE app.audit_marks (selection_id text, wm_type text, created_at timestamptz, PRIMARY KEY (selection_id, wm_type))`,
		`CREATE TABLE app.snapshot_progress (slot_name text, table_name text, relation_oid oid, key_columns text[] NOT NULL, last_key text[],
			chunk_size int NOT NULL, chunks_done bigint NOT NULL DEFAULT 0, rows_done bigint NOT NULL DEFAULT 0,
			started_at timestamptz, updated_at timestamptz, finished_at timestamptz, PRIMARY KEY (slot_name, table_name))`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("app.audit_marks", "app.snapshot_progress"), WithMessageHandler(rec))
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB,
		`INSERT INTO app.audit_marks VALUES ('a', 'low', NULL)`,
		`UPDATE app.audit_marks SET wm_type = 'high'`,
		`DELETE FROM app.audit_marks`,
		`INSERT INTO app.snapshot_progress (slot_name, table_name, key_columns, chunk_size) VALUES ('s', 't', '{id}', 10)`,
		`DELETE FROM app.snapshot_progress`,
		`TRUNCATE app.audit_marks, app.snapshot_progress`)
	catchUp(t, s)
	require.Equal(t, []string{
		"BEGIN", "INSERT app.audit_marks selection_id=a,wm_type=low,created_at=NULL", "COMMIT",
		"BEGIN", "UPDATE app.audit_marks selection_id=a,wm_type=high,created_at=NULL old:selection_id=a,wm_type=low,created_at=NULL", "COMMIT",
		"BEGIN", "DELETE app.audit_marks selection_id=a,wm_type=high,created_at=NULL", "COMMIT",
		"BEGIN", "INSERT app.snapshot_progress slot_name=s,table_name=t,relation_oid=NULL,key_columns={id},last_key=NULL,chunk_size=10,chunks_done=0,rows_done=0,started_at=NULL,updated_at=NULL,finished_at=NULL", "COMMIT",
		"BEGIN", "DELETE app.snapshot_progress slot_name=s,table_name=t,relation_oid=NULL,key_columns=NULL,last_key=NULL,chunk_size=NULL,chunks_done=NULL,rows_done=NULL,started_at=NULL,updated_at=NULL,finished_at=NULL", "COMMIT",
		"BEGIN", "TRUNCATE app.audit_marks,app.snapshot_progress cascade=false restart=false", "COMMIT",
	}, nonEmptyTx(rec.snapshot()))
	_ = context.Background()
}

// TestCtrlMarkerAddedToOldTablesAndDroppedFallback: control tables created by a setup
// that did not mark them (an older dbsync) get the marker from the next setup, and a
// Syncer sharing the publication keeps hiding their rows. When that control schema
// was dropped before the other Syncer read its rows from the backlog (no relation of
// that OID to look up), its rows are still taken for dbsync's by their columns.
func TestCtrlMarkerAddedToOldTablesAndDroppedFallback(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	execAll(t, d.DB, `CREATE TABLE mk_items (id int PRIMARY KEY, v text)`, `INSERT INTO mk_items VALUES (1, 'seed')`,
		`CREATE PUBLICATION mk_pub FOR ALL TABLES`)
	rec := &recorder{}
	a := newTestSyncer(t, d, WithReplicationSlot("mk_a"), WithPublication("mk_pub"), WithCtrlNamespace("ctrl_a"), WithMessageHandler(rec))
	newB := func() *Syncer {
		return newTestSyncer(t, d, WithReplicationSlot("mk_b"), WithPublication("mk_pub"), WithCtrlNamespace("ctrl_b"), WithMessageHandler(&recorder{}))
	}
	comments := func() []string {
		return queryStrings(t, d.DB, `SELECT c.relname || ': ' || COALESCE(obj_description(c.oid, 'pg_class'), 'none') FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'ctrl_b' AND c.relkind = 'r' ORDER BY 1`)
	}
	b := newB()
	require.Equal(t, []string{"dbsync_wmtable: dbsync control table: watermark table; do not edit",
		"snapshot_progress: dbsync control table: snapshot progress table; do not edit"}, comments())
	require.NoError(t, b.Close())
	// As an older setup left them.
	execAll(t, d.DB, `COMMENT ON TABLE ctrl_b.dbsync_wmtable IS NULL`, `COMMENT ON TABLE ctrl_b.snapshot_progress IS NULL`)
	require.Equal(t, []string{"dbsync_wmtable: none", "snapshot_progress: none"}, comments())
	b = newB()
	require.Equal(t, []string{"dbsync_wmtable: dbsync control table: watermark table; do not edit",
		"snapshot_progress: dbsync control table: snapshot progress table; do not edit"}, comments())

	// B's Refresh and Snapshot write its watermark and progress rows; A reads them (live).
	rb := runInBackground(b)
	stats, err := b.RefreshContext(ctx, `SELECT * FROM mk_items`)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Emitted)
	require.NoError(t, b.Snapshot(ctx, "mk_items"))
	require.NoError(t, rb.stop(t))
	execAll(t, d.DB, `INSERT INTO mk_items VALUES (2, 'live')`)
	ra := runInBackground(a)
	catchUp(t, a)
	require.NoError(t, ra.stop(t))
	require.Equal(t, []string{"BEGIN", "INSERT public.mk_items id=2,v=live", "COMMIT"}, nonEmptyTx(rec.snapshot()))

	// Again, but B's control schema is dropped before A reads B's rows.
	rb = runInBackground(b)
	stats, err = b.RefreshContext(ctx, `SELECT * FROM mk_items WHERE id = 2`)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Emitted)
	require.NoError(t, rb.stop(t))
	require.NoError(t, b.Close())
	execAll(t, d.DB, `SELECT pg_drop_replication_slot('mk_b')`, `DROP SCHEMA ctrl_b CASCADE`, `INSERT INTO mk_items VALUES (3, 'after drop')`)
	a2 := newTestSyncer(t, d, WithReplicationSlot("mk_a"), WithPublication("mk_pub"), WithCtrlNamespace("ctrl_a"), WithMessageHandler(rec))
	ra = runInBackground(a2)
	defer ra.stop(t)
	catchUp(t, a2)
	require.Equal(t, []string{"BEGIN", "INSERT public.mk_items id=2,v=live", "COMMIT",
		"BEGIN", "INSERT public.mk_items id=3,v=after drop", "COMMIT"}, nonEmptyTx(rec.snapshot()))
}
