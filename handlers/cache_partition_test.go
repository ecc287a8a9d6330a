package handlers

import (
	"testing"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestCachePartitionsViaRootPostgres: with publish_via_partition_root = true every
// partition's changes arrive under the partitioned table, but PostgreSQL 15's pgoutput
// sends each partition's RELATION message too, before the root's change. The Cache
// made a table of each such message, so after catching up it listed public.p1 and
// public.p2 with no rows (Snapshot, Len 0, a TableInfo) while SELECT * FROM p1 had
// rows: tables it never holds rows of. Only p, which the changes name, is cached.
// With publish_via_partition_root = false the partitions are the tables changes name
// (and TRUNCATE p truncates each of them), and p is not cached.
func TestCachePartitionsViaRootPostgres(t *testing.T) {
	for _, root := range []bool{true, false} {
		t.Run(map[bool]string{true: "via_root", false: "per_partition"}[root], func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			pub, slot := pgtest.Ident(t, "pub"), pgtest.Ident(t, "slot")
			_, err := d.DB.Exec(`CREATE TABLE p (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
				CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);
				CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10) TO (20);
				CREATE PUBLICATION ` + pub + ` FOR TABLE p WITH (publish_via_partition_root = ` + map[bool]string{true: "true", false: "false"}[root] + `)`)
			require.NoError(t, err)
			c := NewCache()
			s, err := dbsync.NewSyncer(testSyncerOpts(t, d, c)...)
			require.NoError(t, err)
			defer s.Close()
			runErr, cancel := runInBackground(s)
			defer cancel()
			for _, q := range []string{
				`INSERT INTO p VALUES (1, 'a'), (11, 'b')`,
				`UPDATE p SET id = 12 WHERE id = 1`, // moves the row to p2
				`TRUNCATE p`,
				`INSERT INTO p VALUES (3, 'd'), (13, 'e')`,
				`UPDATE p SET v = 'f' WHERE id = 3`,
			} {
				_, err := d.DB.Exec(q)
				require.NoError(t, err, q)
			}
			waitCaughtUp(t, d, slot, runErr)
			want := map[string]map[string]dbsync.StringMap{
				"public.p1": {`["3"]`: {"id": int32(3), "v": "f"}},
				"public.p2": {`["13"]`: {"id": int32(13), "v": "e"}},
			}
			if root {
				want = map[string]map[string]dbsync.StringMap{"public.p": {
					`["3"]`:  {"id": int32(3), "v": "f"},
					`["13"]`: {"id": int32(13), "v": "e"},
				}}
			}
			require.Equal(t, want, c.Snapshot())
			cancel()
			require.NoError(t, <-runErr)
		})
	}
}
