package dbsync

import (
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
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
	execAll(t, d.DB, `ALTER PUBLICATION `+pq.QuoteIdentifier(pub)+` SET (publish_via_partition_root = true)`)
	snapshotWaitsForOpenWriter(t, d, s, pub, "w1")
	require.Equal(t, map[string]StringMap{
		`["0"]`: {"id": int32(0), "v": "o"},
		`["1"]`: {"id": int32(1), "v": "p"},
		`["2"]`: {"id": int32(2), "v": "q"},
	}, h.tableRows("public.w"))
}
