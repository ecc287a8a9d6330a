package dbsync

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestSnapshotReadsOnlyTheTable: a table with an inheritance child. The child's
// rows are not the parent's: their changes arrive under the child's relation OID, so
// a window over the parent cannot see them. A snapshot of the parent reads the
// parent's own rows (FROM ONLY), so a child row changed inside its window gets no
// (stale) refresh row under the parent's name; the child is snapshotted by name.
func TestSnapshotReadsOnlyTheTable(t *testing.T) {
	for _, parallel := range []int{1, 2} {
		t.Run(map[int]string{1: "keyset", 2: "planned"}[parallel], func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE parent (id int PRIMARY KEY, v text)`,
				`CREATE TABLE child (PRIMARY KEY (id)) INHERITS (parent)`,
				`INSERT INTO parent VALUES (1, 'p1'), (2, 'p2'), (3, 'p3')`,
				`INSERT INTO child VALUES (10, 'c10'), (11, 'c11')`)
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("parent", "child"),
				WithSnapshotChunkSize(2), WithSnapshotParallel(parallel))
			// Chunks read at once (planned) call the hook from their own goroutines.
			var selects atomic.Int32
			s.win.afterSelect = func() {
				if selects.Add(1) == 1 { // inside the first chunk's window
					execAll(t, d.DB, `UPDATE child SET v = 'new10' WHERE id = 10`)
				}
			}
			require.NoError(t, s.Snapshot(context.Background(), "parent"))
			catchUp(t, s)
			want := []string{`update public.child ["10"]`,
				`refresh public.parent ["1"]`, `refresh public.parent ["2"]`, `refresh public.parent ["3"]`}
			if parallel == 1 {
				require.Equal(t, want, h.eventList())
			} else { // chunks read at once are handed over in either order
				require.Positive(t, s.chunkBounds.Load())
				require.ElementsMatch(t, want, h.eventList())
			}
			require.Equal(t, map[string]StringMap{
				`["1"]`: {"id": int32(1), "v": "p1"}, `["2"]`: {"id": int32(2), "v": "p2"}, `["3"]`: {"id": int32(3), "v": "p3"},
			}, h.tableRows("public.parent"))
			require.Equal(t, map[string]StringMap{`["10"]`: {"id": int32(10), "v": "new10"}}, h.tableRows("public.child"))

			// The child by name.
			s.win.afterSelect = nil
			require.NoError(t, s.Snapshot(context.Background(), "child"))
			require.Equal(t, []string{`refresh public.child ["10"]`, `refresh public.child ["11"]`}, h.eventList()[4:])

			// A Refresh query reads what it says: without ONLY it reads both tables
			// and is refused, naming them; with ONLY it reads the parent.
			_, err := s.RefreshContext(context.Background(), `SELECT * FROM parent`)
			require.ErrorIs(t, err, ErrConfig)
			require.Contains(t, err.Error(), "public.child, public.parent")
			require.Contains(t, err.Error(), "FROM ONLY")
			stats, err := s.RefreshContext(context.Background(), `SELECT * FROM ONLY parent WHERE id > 1`)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
		})
	}
}

// partitionedTable creates root (id, v) partitioned by range of id into p1 (ids
// below 100, rows 1 and 2) and p2 (rows 101 and 102).
const partitionedTable = `CREATE TABLE root (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE p1 PARTITION OF root FOR VALUES FROM (0) TO (100);
CREATE TABLE p2 PARTITION OF root FOR VALUES FROM (100) TO (200);
INSERT INTO root VALUES (1, 'a'), (2, 'b'), (101, 'c'), (102, 'd')`

// TestSnapshotPartitionedPerPartition: with the publication's default
// publish_via_partition_root = false, changes of a partitioned table's rows arrive
// under their partitions' OIDs and names. A snapshot of the partitioned table could
// not be matched with them: it is refused with ErrConfig naming the partitions, which
// are snapshotted by name. A Refresh query on the partitioned table that reads one
// partition is that partition's.
func TestSnapshotPartitionedPerPartition(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, partitionedTable)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("root"))
	ctx := context.Background()
	err := s.Snapshot(ctx, "root")
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "public.root is a partitioned table")
	require.Contains(t, err.Error(), "snapshot (or refresh) its partitions instead: public.p1, public.p2")
	require.Contains(t, err.Error(), "publish_via_partition_root = true")

	selects := 0
	s.win.afterSelect = func() {
		if selects++; selects == 1 { // inside p1's window
			execAll(t, d.DB, `UPDATE root SET v = 'new' WHERE id = 2`)
		}
	}
	require.NoError(t, s.Snapshot(ctx, "p1", "p2"))
	s.win.afterSelect = nil
	catchUp(t, s)
	require.Equal(t, []string{`update public.p1 ["2"]`, `refresh public.p1 ["1"]`,
		`refresh public.p2 ["101"]`, `refresh public.p2 ["102"]`}, h.eventList())

	stats, err := s.RefreshContext(ctx, `SELECT * FROM root WHERE id > 100`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
	require.Equal(t, []string{`refresh public.p2 ["101"]`, `refresh public.p2 ["102"]`}, h.eventList()[4:])
	_, err = s.RefreshContext(ctx, `SELECT * FROM root`)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "public.p1, public.p2")
}

// TestSnapshotPartitionedViaRoot: a publication with publish_via_partition_root =
// true publishes the partitions' changes under the partitioned table's OID and name,
// so the partitioned table is snapshotted (and refreshed) whole: its rows are its
// partitions'. A partition row changed inside the window gets no refresh row. A
// partition cannot be snapshotted on its own then (its changes carry the root's OID):
// ErrConfig naming the root.
func TestSnapshotPartitionedViaRoot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, partitionedTable)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` FOR TABLE root WITH (publish_via_partition_root = true)`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), slot, h, ForTables("root"), WithSnapshotChunkSize(3))
	ctx := context.Background()
	selects := 0
	s.win.afterSelect = func() {
		if selects++; selects == 1 { // inside the first chunk's window (1, 2, 101)
			execAll(t, d.DB, `UPDATE root SET v = 'new' WHERE id = 101`)
		}
	}
	require.NoError(t, s.Snapshot(ctx, "root"))
	s.win.afterSelect = nil
	catchUp(t, s)
	require.Equal(t, []string{`update public.root ["101"]`,
		`refresh public.root ["1"]`, `refresh public.root ["2"]`, `refresh public.root ["102"]`}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.root"), dbRows(t, d.DB, "root")))

	err := s.Snapshot(ctx, "p2")
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "public.p2 is a partition of public.root")
	require.Contains(t, err.Error(), "snapshot or refresh public.root instead")

	// A Refresh query that reads partitions is the root's.
	stats, err := s.RefreshContext(ctx, `SELECT * FROM root WHERE id <> 2 ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 3}, stats)
	require.Equal(t, []string{`refresh public.root ["1"]`, `refresh public.root ["101"]`, `refresh public.root ["102"]`}, h.eventList()[4:])
}

// TestSetupPartitionedTableTwice: ForTables naming a partitioned table, against the
// publication an earlier setup created for it. pg_publication_tables lists the
// partitions, not the partitioned table (publish_via_partition_root = false), so
// setup used to try ALTER PUBLICATION ... ADD TABLE again and fail with 42710
// ("already member of publication"); it now also looks at pg_publication_rel.
func TestSetupPartitionedTableTwice(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, partitionedTable)
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
	for i := range 2 {
		s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub), ForTables("root"))
		require.NoError(t, err, "setup %d", i+1)
		require.NoError(t, s.Close())
	}
	require.Equal(t, []string{"p1", "p2"}, queryStrings(t, d.DB,
		`SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public' ORDER BY 1`, pub))
}
