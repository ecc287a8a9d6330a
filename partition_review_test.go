package dbsync

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestCheckReplicaIdentityPartitionsViaRoot: with publish_via_partition_root = true,
// pg_publication_tables lists the partitioned table, not its partitions, but
// PostgreSQL checks and logs each partition's own replica identity. The check
// looked at the partitioned table alone, so it reported nothing for:
//   - REPLICA IDENTITY FULL on the partitioned table only (ALTER TABLE does not pass
//     it on), partitions without a key: every UPDATE failed on the primary (55000);
//   - a partition (two levels down) with REPLICA IDENTITY USING INDEX of an index of
//     its own: its DELETEs reach the slot as the root's rows without the root's key
//     (id NULL) and stop a consumer that makes record IDs with ErrNoKey.
func TestCheckReplicaIdentityPartitionsViaRoot(t *testing.T) {
	t.Run("full_on_root_only", func(t *testing.T) {
		d := pgtest.NewDatabase(t)
		slot := pgtest.Ident(t, "slot")
		execAll(t, d.DB, `CREATE TABLE root (id int, v text) PARTITION BY RANGE (id);
			CREATE TABLE p1 PARTITION OF root FOR VALUES FROM (0) TO (100);
			CREATE TABLE p2 PARTITION OF root FOR VALUES FROM (100) TO (200);
			ALTER TABLE root REPLICA IDENTITY FULL;
			INSERT INTO root VALUES (1, 'a')`,
			`CREATE PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` FOR TABLE root WITH (publish_via_partition_root = true)`)
		s := newTestSyncer(t, d, WithReplicationSlot(slot), WithPublication(slot+"_pub"))
		problems, err := s.CheckReplicaIdentity(context.Background())
		require.NoError(t, err)
		require.Equal(t, []ReplicaIdentityProblem{
			{Schema: "public", Table: "p1", ReplicaIdentity: 'd'},
			{Schema: "public", Table: "p2", ReplicaIdentity: 'd'},
		}, problems)
		require.Equal(t, `table public.p1 has no primary key and REPLICA IDENTITY DEFAULT: its UPDATEs and DELETEs cannot be captured (and fail on the primary); add a primary key or run ALTER TABLE "public"."p1" REPLICA IDENTITY FULL (or dbsync.WithReplicaIdentityFull)`,
			problems[0].String())
		// What the report says: the partition's UPDATEs fail, and its fix works.
		_, err = d.DB.Exec(`UPDATE root SET v = 'b' WHERE id = 1`)
		require.ErrorContains(t, err, `cannot update table "p1" because it does not have a replica identity`)
		execAll(t, d.DB, problems[0].Fix(), problems[1].Fix(), `UPDATE root SET v = 'b' WHERE id = 1`)
		problems, err = s.CheckReplicaIdentity(context.Background())
		require.NoError(t, err)
		require.Empty(t, problems)
	})
	t.Run("partition_index", func(t *testing.T) {
		d := pgtest.NewDatabase(t)
		slot := pgtest.Ident(t, "slot")
		execAll(t, d.DB, `CREATE TABLE root (id int PRIMARY KEY, code int NOT NULL, v text) PARTITION BY RANGE (id);
			CREATE TABLE mid PARTITION OF root FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (id);
			CREATE TABLE leaf PARTITION OF mid FOR VALUES FROM (0) TO (50);
			CREATE TABLE p2 PARTITION OF root FOR VALUES FROM (100) TO (200);
			CREATE UNIQUE INDEX leaf_code ON leaf (code);
			ALTER TABLE leaf REPLICA IDENTITY USING INDEX leaf_code;
			INSERT INTO root VALUES (1, 11, 'a'), (101, 111, 'b')`,
			`CREATE PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` FOR TABLE root WITH (publish_via_partition_root = true)`)
		s := newTestSyncer(t, d, WithReplicationSlot(slot), WithPublication(slot+"_pub"))
		problems, err := s.CheckReplicaIdentity(context.Background())
		require.NoError(t, err)
		require.Equal(t, []ReplicaIdentityProblem{
			{Schema: "public", Table: "leaf", ReplicaIdentity: 'i', PublishedAs: "public.root", MissingKey: "id", hasPK: true},
		}, problems)
		require.Equal(t, `table public.leaf is a partition whose changes are published under public.root (publish_via_partition_root = true), and its replica identity index lacks public.root's key column "id": its DELETEs and key-changing UPDATEs reach the slot without that column's old value, so they get no record ID (ErrNoKey); run ALTER TABLE "public"."leaf" REPLICA IDENTITY DEFAULT (its primary key is public.root's) or ALTER TABLE "public"."leaf" REPLICA IDENTITY FULL`,
			problems[0].String())
		// Under the partitions' own names (publish_via_partition_root = false) the
		// leaf's changes carry its own key: nothing to report.
		execAll(t, d.DB, `ALTER PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` SET (publish_via_partition_root = false)`)
		problems, err = s.CheckReplicaIdentity(context.Background())
		require.NoError(t, err)
		require.Empty(t, problems)
	})
}

// TestReplicaIdentityFullPartitioned: WithReplicaIdentityFull naming a partitioned
// table. ALTER TABLE ... REPLICA IDENTITY does not reach partitions, and PostgreSQL
// uses the partition's own, so setup used to set FULL on the partitioned table alone:
// its partitions (without a key here) kept DEFAULT, every UPDATE failed on the
// primary (55000), and setup warned about them, both with and without
// publish_via_partition_root. Setup now sets FULL on every member of the partition
// tree (every level), and the changes carry the whole old row.
func TestReplicaIdentityFullPartitioned(t *testing.T) {
	for _, viaRoot := range []bool{false, true} {
		t.Run(map[bool]string{false: "per_partition", true: "via_root"}[viaRoot], func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			slot := pgtest.Ident(t, "slot")
			execAll(t, d.DB, `CREATE TABLE root (id int, v text) PARTITION BY RANGE (id);
				CREATE TABLE mid PARTITION OF root FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (id);
				CREATE TABLE leaf PARTITION OF mid FOR VALUES FROM (0) TO (50);
				CREATE TABLE p2 PARTITION OF root FOR VALUES FROM (100) TO (200);
				INSERT INTO root VALUES (1, 'a'), (101, 'b')`)
			if viaRoot {
				execAll(t, d.DB, `CREATE PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` FOR TABLE root WITH (publish_via_partition_root = true)`)
			}
			h := &changeRecorder{}
			s, _ := startSyncer(t, d.DSN(), slot, h, ForTables("root"), WithReplicaIdentityFull("root"), WithStrictReplicaIdentity(true))
			require.Equal(t, []string{"leaf f", "mid f", "p2 f", "root f"}, queryStrings(t, d.DB,
				`SELECT relname || ' ' || relreplident::text FROM pg_class WHERE relname IN ('root', 'mid', 'leaf', 'p2') ORDER BY 1`))
			execAll(t, d.DB, `UPDATE root SET v = 'x' WHERE id IN (1, 101)`)
			catchUp(t, s)
			h.mu.Lock()
			defer h.mu.Unlock()
			require.NoError(t, h.err)
			want := []string{"RELATION public.leaf (id:integer,v:text) key=[]", "UPDATE leaf ",
				"RELATION public.p2 (id:integer,v:text) key=[]", "UPDATE p2 "}
			if viaRoot { // PostgreSQL 15's pgoutput sends the partition's RELATION too
				want = []string{"RELATION public.root (id:integer,v:text) key=[]", "RELATION public.leaf (id:integer,v:text) key=[]", "UPDATE root ",
					"RELATION public.root (id:integer,v:text) key=[]", "RELATION public.p2 (id:integer,v:text) key=[]", "UPDATE root "}
			}
			require.Equal(t, want, h.events)
			require.Equal(t, StringMap{"id": int32(1), "v": "a"}, h.changes[0].Old)
			require.Equal(t, StringMap{"id": int32(101), "v": "b"}, h.changes[1].Old)
		})
	}
}

// TestSnapshotEstimatePartitioned: a partitioned table snapshotted whole
// (publish_via_partition_root) reported Estimated -1 (unknown) in every progress
// report: a partitioned table's pg_class.reltuples stays -1 until ANALYZE is run on
// it by hand (autovacuum never analyzes partitioned tables), while its partitions'
// estimates are kept. The estimate is now the sum of its leaf partitions' (every
// level).
func TestSnapshotEstimatePartitioned(t *testing.T) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE root (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
		CREATE TABLE mid PARTITION OF root FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (id);
		CREATE TABLE leaf PARTITION OF mid FOR VALUES FROM (0) TO (100);
		CREATE TABLE p2 PARTITION OF root FOR VALUES FROM (100) TO (200);
		INSERT INTO root SELECT g, 'v' FROM generate_series(1, 149, 4) g;
		ANALYZE leaf, p2`,
		`CREATE PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` FOR TABLE root WITH (publish_via_partition_root = true)`)
	require.Equal(t, []string{"-1", "13", "25"}, queryStrings(t, d.DB,
		`SELECT reltuples::text FROM pg_class WHERE relname IN ('root', 'leaf', 'p2') ORDER BY 1`))
	var mu sync.Mutex
	var progress []SnapshotProgress
	s, _ := startSyncer(t, d.DSN(), slot, newCacheHandler(), WithSnapshotChunkSize(20),
		WithSnapshotProgress(func(p SnapshotProgress) { mu.Lock(); progress = append(progress, p); mu.Unlock() }))
	require.NoError(t, s.Snapshot(context.Background(), "root"))
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []SnapshotProgress{
		{Table: "public.root", Chunks: 1, Rows: 20, Estimated: 38, Emitted: 20},
		{Table: "public.root", Chunks: 2, Rows: 38, Estimated: 38, Emitted: 18, Done: true},
	}, progress)
}

// TestPartitionAttachDetachNotDecoded pins what README and docs/SNAPSHOTS.md say of
// a row moved to another partition (a DELETE and an INSERT, in both modes) and of
// partitions created, attached or detached while syncing: none of it is decoded. Per
// partition, a new partition's changes arrive under its own name (the publication
// covers it), an attached table's rows only when changed after; via the root, the
// same under the partitioned table's name. Either way a detached partition's changes
// no longer arrive at all (the publication named the partitioned table).
func TestPartitionAttachDetachNotDecoded(t *testing.T) {
	for _, viaRoot := range []bool{false, true} {
		t.Run(map[bool]string{false: "per_partition", true: "via_root"}[viaRoot], func(t *testing.T) {
			d, slot := newPartitionedDB(t, viaRoot)
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), slot, h)
			execAll(t, d.DB, `UPDATE root SET id = 150 WHERE id = 1`, // a move: DELETE and INSERT
				`CREATE TABLE p3 PARTITION OF root FOR VALUES FROM (200) TO (300)`, `INSERT INTO root VALUES (201, 'e')`,
				`CREATE TABLE x (id int NOT NULL, v text)`, `INSERT INTO x VALUES (301, 'f'), (302, 'g')`,
				`ALTER TABLE root ATTACH PARTITION x FOR VALUES FROM (300) TO (400)`, `UPDATE root SET v = 'f2' WHERE id = 301`,
				`ALTER TABLE root DETACH PARTITION p2`, `UPDATE p2 SET v = 'c2' WHERE id = 101`, `INSERT INTO p2 VALUES (103, 'h')`)
			catchUp(t, s)
			// Nothing of p2 after its DETACH: the publication named root, not p2.
			want := []string{`delete public.p1 ["1"]`, `insert public.p2 ["150"]`, `insert public.p3 ["201"]`, `update public.x ["301"]`}
			if viaRoot {
				want = []string{`delete public.root ["1"]`, `insert public.root ["150"]`, `insert public.root ["201"]`, `update public.root ["301"]`}
			}
			require.Equal(t, want, h.eventList())
		})
	}
}

// TestReplicaIdentityFullOnRootOnlyViaRoot: REPLICA IDENTITY FULL on a partitioned
// table published via the root, its partitions (with the primary key) left at
// DEFAULT. pgoutput marks the partition's old key as a whole old row ('O') of the
// root, its other columns NULL, so a key-changing UPDATE's unchanged TOASTed value
// was filled in from it as NULL (Change.Filled), and a DELETE's Change.Old read NULL,
// with nothing reported. CheckReplicaIdentity now reports such partitions, and its fix
// makes the old rows whole.
func TestReplicaIdentityFullOnRootOnlyViaRoot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE root (id int PRIMARY KEY, v text, w int) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF root FOR VALUES FROM (0) TO (100);
		CREATE TABLE p2 PARTITION OF root FOR VALUES FROM (100) TO (200);
		ALTER TABLE root REPLICA IDENTITY FULL;
		ALTER TABLE p1 ALTER COLUMN v SET STORAGE EXTERNAL;
		INSERT INTO root VALUES (1, repeat('x', 5000), 7), (2, 'short', 8), (3, repeat('y', 5000), 9)`,
		`CREATE PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` FOR TABLE root WITH (publish_via_partition_root = true)`)
	h := &changeRecorder{}
	s, _ := startSyncer(t, d.DSN(), slot, h)
	problems, err := s.CheckReplicaIdentity(context.Background())
	require.NoError(t, err)
	require.Equal(t, []ReplicaIdentityProblem{
		{Schema: "public", Table: "p1", ReplicaIdentity: 'd', PublishedAs: "public.root", PartialOldRow: true, hasPK: true},
		{Schema: "public", Table: "p2", ReplicaIdentity: 'd', PublishedAs: "public.root", PartialOldRow: true, hasPK: true},
	}, problems)
	require.Equal(t, `table public.p1 is a partition whose changes are published under public.root (publish_via_partition_root = true), which has REPLICA IDENTITY FULL while the partition does not: pgoutput sends the partition's old keys as whole old rows of public.root with its other columns NULL, so the old row of a DELETE or key-changing UPDATE (Change.Old) reads NULL there, and an unchanged TOASTed value of a key-changing UPDATE is filled in as NULL; run ALTER TABLE "public"."p1" REPLICA IDENTITY FULL (or dbsync.WithReplicaIdentityFull("public.root"), which sets every partition)`,
		problems[0].String())

	// What it reports: the old rows are not whole.
	execAll(t, d.DB, `UPDATE root SET id = 11 WHERE id = 1`, `DELETE FROM root WHERE id = 2`)
	catchUp(t, s)
	execAll(t, d.DB, problems[0].Fix(), problems[1].Fix())
	execAll(t, d.DB, `UPDATE root SET id = 13 WHERE id = 3`)
	catchUp(t, s)
	problems, err = s.CheckReplicaIdentity(context.Background())
	require.NoError(t, err)
	require.Empty(t, problems)

	h.mu.Lock()
	defer h.mu.Unlock()
	require.NoError(t, h.err)
	require.Len(t, h.changes, 3)
	require.Equal(t, StringMap{"id": int32(1), "v": nil, "w": nil}, h.changes[0].Old)
	require.Equal(t, StringMap{"id": int32(11), "v": nil, "w": int32(7)}, h.changes[0].New, "v filled in as NULL")
	require.Equal(t, StringMap{"id": int32(2), "v": nil, "w": nil}, h.changes[1].Old)
	require.Equal(t, StringMap{"id": int32(3), "v": strings.Repeat("y", 5000), "w": int32(9)}, h.changes[2].Old)
	require.Equal(t, StringMap{"id": int32(13), "v": strings.Repeat("y", 5000), "w": int32(9)}, h.changes[2].New)
	require.Equal(t, []string{"v"}, h.changes[2].Filled)
}

// TestReplicaIdentityPartitionedWithoutKeyViaRoot: a partitioned table without a
// primary key, published via the root, whose partitions have their own. PostgreSQL
// checks the partitions' replica identity, not its own, so their UPDATEs and
// DELETEs work and are captured, without a record ID. The report said they "cannot
// be captured (and fail on the primary)"; it now says what happens.
func TestReplicaIdentityPartitionedWithoutKeyViaRoot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE root (id int, v text) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF root (PRIMARY KEY (id)) FOR VALUES FROM (0) TO (100);
		CREATE TABLE p2 PARTITION OF root (PRIMARY KEY (id)) FOR VALUES FROM (100) TO (200);
		INSERT INTO root VALUES (1, 'a'), (101, 'b')`,
		`CREATE PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` FOR TABLE root WITH (publish_via_partition_root = true)`)
	h := &changeRecorder{}
	s, _ := startSyncer(t, d.DSN(), slot, h)
	problems, err := s.CheckReplicaIdentity(context.Background())
	require.NoError(t, err)
	require.Len(t, problems, 1)
	require.Equal(t, `table public.root is a partitioned table whose partitions' changes are published under it (publish_via_partition_root = true), and it has no primary key and REPLICA IDENTITY DEFAULT: its partitions' UPDATEs and DELETEs are captured but carry no key of it, so they get no record ID (Change.Key "") and Refresh and Snapshot refuse it; give it a primary key, or run dbsync.WithReplicaIdentityFull("public.root") (REPLICA IDENTITY FULL on it and every partition) for whole old rows`,
		problems[0].String())

	execAll(t, d.DB, `UPDATE root SET v = 'x' WHERE id = 1`, `DELETE FROM root WHERE id = 101`)
	catchUp(t, s)
	require.ErrorIs(t, s.Snapshot(context.Background(), "root"), ErrNoPrimaryKey)
	h.mu.Lock()
	defer h.mu.Unlock()
	require.NoError(t, h.err)
	require.Equal(t, []string{"RELATION public.root (id:integer,v:text) key=[]", "RELATION public.p1 (id:integer,v:text) key=[id]", "UPDATE root ",
		"RELATION public.root (id:integer,v:text) key=[]", "RELATION public.p2 (id:integer,v:text) key=[id]", "DELETE root "}, h.events)
	require.Equal(t, StringMap{"id": int32(101)}, h.changes[1].Old)
}

// TestSnapshotPartitionMoveInWindow: a row moved to another partition inside a
// snapshot window arrives as a DELETE and an INSERT (under the partitions' names, or
// the root's via the root); the window drops the moved row's refresh row, and a later
// chunk (or the other partition's snapshot) reads it at its new key. The consumer
// ends equal to the tables, in both modes.
func TestSnapshotPartitionMoveInWindow(t *testing.T) {
	for _, viaRoot := range []bool{false, true} {
		t.Run(map[bool]string{false: "per_partition", true: "via_root"}[viaRoot], func(t *testing.T) {
			d, slot := newPartitionedDB(t, viaRoot)
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), slot, h, WithSnapshotChunkSize(3), WithSnapshotParallel(1))
			selects := 0
			s.win.afterSelect = func() {
				if selects++; selects == 1 { // inside the first chunk's window
					execAll(t, d.DB, `UPDATE root SET id = 150 WHERE id = 2`)
				}
			}
			tables, want := []string{"p1", "p2"}, []string{`delete public.p1 ["2"]`, `insert public.p2 ["150"]`, `refresh public.p1 ["1"]`,
				`refresh public.p2 ["101"]`, `refresh public.p2 ["102"]`, `refresh public.p2 ["150"]`}
			if viaRoot {
				tables, want = []string{"root"}, []string{`delete public.root ["2"]`, `insert public.root ["150"]`, `refresh public.root ["1"]`,
					`refresh public.root ["101"]`, `refresh public.root ["102"]`, `refresh public.root ["150"]`}
			}
			require.NoError(t, s.Snapshot(context.Background(), tables...))
			s.win.afterSelect = nil
			catchUp(t, s)
			require.Equal(t, want, h.eventList())
			for _, tbl := range tables {
				require.Empty(t, mismatches(h.tableRows("public."+tbl), dbRows(t, d.DB, tbl)), tbl)
			}
			require.Len(t, dbRows(t, d.DB, "root"), 4)
		})
	}
}

// newPartitionedDB creates partitionedTable in a new database and a publication of
// root for the slot named after the test, publishing via the root or per partition.
func newPartitionedDB(t *testing.T, viaRoot bool) (*pgtest.Database, string) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, partitionedTable,
		`CREATE PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` FOR TABLE root WITH (publish_via_partition_root = `+map[bool]string{false: "false", true: "true"}[viaRoot]+`)`)
	return d, slot
}
