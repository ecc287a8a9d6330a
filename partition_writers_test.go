package dbsync

import (
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSnapshotWaitsForWritersOfAddedPartition is TestSnapshotWaitsForWritersOfAddedTable
// for a partitioned table published via its root, written through a partition by
// name: such a writer locks the partition, not the partitioned table.
func TestSnapshotWaitsForWritersOfAddedPartition(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY)`,
		`CREATE TABLE w (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)`,
		`CREATE TABLE w1 PARTITION OF w FOR VALUES FROM (0) TO (100)`,
		`INSERT INTO w VALUES (0, 'o')`)
	h := newCacheHandler()
	slot := pgtest.Ident(t, "slot")
	s, _ := startSyncer(t, d.DSN(), slot, h, ForTables("a"))
	pub := slot + "_pub"
	execAll(t, d.DB, `ALTER PUBLICATION `+pub+` SET (publish_via_partition_root = true)`)
	ctx := context.Background()
	x, err := d.DB.Begin()
	require.NoError(t, err)
	defer x.Rollback()
	_, err = x.Exec(`INSERT INTO w1 VALUES (1, 'p')`)
	require.NoError(t, err)
	execAll(t, d.DB, `ALTER PUBLICATION `+pub+` ADD TABLE w`)

	waiting := make(chan int, 1)
	s.writersWaiting = func(table string, n int) {
		if table == "public.w" {
			waiting <- n
		}
	}
	snapDone := make(chan error, 1)
	go func() { snapDone <- s.Snapshot(ctx, "w") }()
	select {
	case n := <-waiting:
		require.Equal(t, 1, n, "transactions writing w")
	case err := <-snapDone:
		require.NoError(t, err)
		t.Error("Snapshot returned while a transaction that wrote w1 before w's ADD TABLE was open")
		snapDone <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("Snapshot neither waited nor returned")
	}
	_, err = x.Exec(`INSERT INTO w1 VALUES (2, 'q')`)
	require.NoError(t, err)
	require.NoError(t, x.Commit())
	require.NoError(t, <-snapDone)
	catchUp(t, s)
	require.Equal(t, map[string]StringMap{
		`["0"]`: {"id": int32(0), "v": "o"},
		`["1"]`: {"id": int32(1), "v": "p"},
		`["2"]`: {"id": int32(2), "v": "q"},
	}, h.tableRows("public.w"))
}
