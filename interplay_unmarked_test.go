package dbsync

import (
	"context"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestUnownedUnmarkedCtrlTablesDelivered: control tables an older setup left without
// the marker, which the Syncer's role does not own, stay unmarked (setup warns), and
// a Syncer of another control schema sharing the publication cannot tell them from a
// user's tables: it delivers their rows (here B's watermarks) as changes, until their
// owner marks them, as setup's warning says how. ensureCtrlMarkers' doc said such
// Syncers told them by their columns alone, and hid their rows.
func TestUnownedUnmarkedCtrlTablesDelivered(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	execAll(t, d.DB, `CREATE TABLE mk_items (id int PRIMARY KEY, v text)`, `INSERT INTO mk_items VALUES (1, 'seed')`,
		`CREATE PUBLICATION mk_pub FOR ALL TABLES`)
	rec := &recorder{}
	a := newTestSyncer(t, d, WithReplicationSlot("um_a"), WithPublication("mk_pub"), WithCtrlNamespace("ctrl_a"), WithMessageHandler(rec))
	b := newTestSyncer(t, d, WithReplicationSlot("um_b"), WithPublication("mk_pub"), WithCtrlNamespace("ctrl_b"))
	require.NoError(t, b.Close())
	role, dsn := limitedRole(t, d, "REPLICATION")
	// As an older setup left them, owned by another role than B's.
	execAll(t, d.DB, `COMMENT ON TABLE ctrl_b.dbsync_wmtable IS NULL`, `COMMENT ON TABLE ctrl_b.snapshot_progress IS NULL`,
		`GRANT USAGE, CREATE ON SCHEMA ctrl_b TO `+role, `GRANT ALL ON ALL TABLES IN SCHEMA ctrl_b TO `+role,
		`GRANT SELECT ON mk_items TO `+role)
	b = newTestSyncer(t, d, WithPGConnStr(dsn), WithReplicationSlot("um_b"), WithPublication("mk_pub"), WithCtrlNamespace("ctrl_b"), WithMessageHandler(&recorder{}))
	require.Equal(t, []string{"none"}, queryStrings(t, d.DB, `SELECT COALESCE(obj_description('ctrl_b.dbsync_wmtable'::regclass, 'pg_class'), 'none')`))
	rb := runInBackground(b)
	stats, err := b.RefreshContext(ctx, `SELECT * FROM mk_items`)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Emitted)
	require.NoError(t, rb.stop(t))
	ra := runInBackground(a)
	catchUp(t, a)
	require.NoError(t, ra.stop(t))
	got := nonEmptyTx(rec.snapshot())
	require.Len(t, got, 10, "%q", got)
	for i, prefix := range []string{"BEGIN", "INSERT ctrl_b.dbsync_wmtable selection_id=", "COMMIT",
		"BEGIN", "INSERT ctrl_b.dbsync_wmtable selection_id=", "COMMIT",
		"BEGIN", "DELETE ctrl_b.dbsync_wmtable selection_id=", "DELETE ctrl_b.dbsync_wmtable selection_id=", "COMMIT"} {
		require.True(t, strings.HasPrefix(got[i], prefix), "%d: %q", i, got)
	}
	require.Contains(t, got[1], ",wm_type=low,")
	require.Contains(t, got[4], ",wm_type=high,")

	// Marked by its owner as the warning says, its rows are dbsync's again.
	execAll(t, d.DB, `COMMENT ON TABLE ctrl_b.dbsync_wmtable IS 'dbsync control table: watermark table; do not edit'`)
	rec2 := &recorder{}
	a2 := newTestSyncer(t, d, WithReplicationSlot("um_a"), WithPublication("mk_pub"), WithCtrlNamespace("ctrl_a"), WithMessageHandler(rec2))
	rb = runInBackground(b)
	stats, err = b.RefreshContext(ctx, `SELECT * FROM mk_items`)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Emitted)
	require.NoError(t, rb.stop(t))
	ra = runInBackground(a2)
	catchUp(t, a2)
	require.NoError(t, ra.stop(t))
	require.Empty(t, nonEmptyTx(rec2.snapshot()))
}
