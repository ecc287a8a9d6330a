package dbsync

import (
	"context"
	"fmt"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSnapshotProgressPruneSharedCtrlSchema: two Syncers on their own slots share one
// control schema (one snapshot_progress table) and snapshot at the same time; each
// start's prune forgets only its own slot's rows of dropped tables: the other's
// progress, of tables live and dropped, stays, and each gets exactly its table's rows.
func TestSnapshotProgressPruneSharedCtrlSchema(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ta (id int PRIMARY KEY)`, `CREATE TABLE tb (id int PRIMARY KEY)`,
		`CREATE TABLE gone_a (id int PRIMARY KEY)`, `CREATE TABLE gone_b (id int PRIMARY KEY)`,
		`INSERT INTO ta SELECT generate_series(1, 50)`, `INSERT INTO tb SELECT generate_series(101, 150)`,
		`INSERT INTO gone_a VALUES (1)`, `INSERT INTO gone_b VALUES (1)`)
	ha, hb := newCacheHandler(), newCacheHandler()
	a, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "a"), ha, WithCtrlNamespace("shared_ctl"), ForTables("ta", "gone_a"), WithSnapshotChunkSize(7))
	b, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "b"), hb, WithCtrlNamespace("shared_ctl"), ForTables("tb", "gone_b"), WithSnapshotChunkSize(7))
	ctx := context.Background()
	require.NoError(t, a.Snapshot(ctx, "gone_a"))
	require.NoError(t, b.Snapshot(ctx, "gone_b"))
	execAll(t, d.DB, `DROP TABLE gone_a`, `DROP TABLE gone_b`)
	progress := func() []string {
		return queryStrings(t, d.DB, `SELECT slot_name || ' ' || table_name || ' ' || rows_done || ' ' || (finished_at IS NOT NULL) FROM shared_ctl.snapshot_progress ORDER BY 1`)
	}
	require.Equal(t, []string{a.ReplicationSlot() + " public.gone_a 1 true", b.ReplicationSlot() + " public.gone_b 1 true"}, progress())

	// A's start prunes gone_a (its slot's) while B snapshots, and B's prunes gone_b.
	errs := make(chan error, 2)
	go func() { errs <- a.Snapshot(ctx, "ta") }()
	go func() { errs <- b.Snapshot(ctx, "tb") }()
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	catchUp(t, a)
	catchUp(t, b)
	require.Equal(t, []string{a.ReplicationSlot() + " public.ta 50 true", b.ReplicationSlot() + " public.tb 50 true"}, progress())
	want := func(table string, from int) []string {
		out := []string{fmt.Sprintf(`refresh public.gone_%s ["1"]`, table[1:])}
		for i := from; i < from+50; i++ {
			out = append(out, fmt.Sprintf(`refresh public.%s ["%d"]`, table, i))
		}
		return out
	}
	// One chunk at a time: in key order.
	require.Equal(t, want("ta", 1), ha.eventList())
	require.Equal(t, want("tb", 101), hb.eventList())
}
