package dbsync

import (
	"context"
	"fmt"
	"sort"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// partitionedKeysDDL is a table partitioned by an enum (declared in the reverse of
// its labels' text order) with a key of that enum and citext, whose extension is in a
// schema off the search_path: its chunks, bounds and re-reads must compare with the
// types' own B-tree operators (enum order, case-insensitive), named with their
// schemas, through the partitioned table and through each partition.
var partitionedKeysDDL = []string{
	`CREATE SCHEMA ext`, `CREATE EXTENSION citext SCHEMA ext`, `CREATE SCHEMA app`,
	`CREATE TYPE app.mood AS ENUM ('e5', 'e4', 'e3', 'e2', 'e1')`,
	`CREATE TABLE pt (m app.mood, k ext.citext, v int, PRIMARY KEY (m, k)) PARTITION BY LIST (m)`,
	`CREATE TABLE pt_a PARTITION OF pt FOR VALUES IN ('e5', 'e4')`,
	`CREATE TABLE pt_b PARTITION OF pt FOR VALUES IN ('e3', 'e2', 'e1')`,
	`INSERT INTO pt SELECT m::app.mood, k, 0 FROM unnest('{e1,e2,e3,e4,e5}'::text[]) m, unnest('{a,B,c,D,e}'::text[]) k`,
}

// partKeysOrder is the refresh events of table for moods ms in key order (enum, then
// citext: a B c D e).
func partKeysOrder(table string, ms ...string) []string {
	var out []string
	for _, m := range ms {
		for _, k := range []string{"a", "B", "c", "D", "e"} {
			out = append(out, fmt.Sprintf(`refresh %s ["%s","%s"]`, table, m, k))
		}
	}
	return out
}

// TestPartitionedEnumCitextKeys: Snapshot (keyset and planned chunks) and Refresh of a
// partitioned table with an enum and citext key, published via the root and per
// partition, deliver every row once (in key order when one chunk is read at a time),
// and leave the consumer's copy equal
// to the table.
func TestPartitionedEnumCitextKeys(t *testing.T) {
	for _, viaRoot := range []bool{true, false} {
		for _, parallel := range []int{1, 2} {
			t.Run(fmt.Sprintf("viaRoot=%v/parallel=%d", viaRoot, parallel), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, partitionedKeysDDL...)
				slot := pgtest.Ident(t, "slot")
				if viaRoot {
					execAll(t, d.DB, `CREATE PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` FOR TABLE pt WITH (publish_via_partition_root = true)`)
				}
				h := newCacheHandler()
				s, _ := startSyncer(t, d.DSN(), slot, h, ForTables("pt"), WithSnapshotChunkSize(4), WithSnapshotParallel(parallel))
				ctx := context.Background()
				var want []string
				if viaRoot {
					require.NoError(t, s.Snapshot(ctx, "pt"))
					want = partKeysOrder("public.pt", "e5", "e4", "e3", "e2", "e1")
				} else {
					require.NoError(t, s.Snapshot(ctx, "pt_b", "pt_a"))
					want = append(partKeysOrder("public.pt_b", "e3", "e2", "e1"), partKeysOrder("public.pt_a", "e5", "e4")...)
				}
				catchUp(t, s)
				got := h.eventList()
				require.Len(t, got, len(want))
				if parallel > 1 {
					// Chunks read at once are handed over in the order their high
					// watermarks reach the log (docs/SNAPSHOTS.md): every row once.
					got = append([]string(nil), got...)
					want = append([]string(nil), want...)
					sort.Strings(got)
					sort.Strings(want)
				}
				require.Equal(t, want, got)

				// A Refresh whose window sees a row updated: the row's change is
				// delivered, its selected row dropped.
				table, query := "public.pt", `SELECT * FROM pt WHERE m = 'e2'`
				if !viaRoot {
					table, query = "public.pt_b", `SELECT * FROM pt_b WHERE m = 'e2'`
				}
				selects := 0
				s.win.afterSelect = func() {
					if selects++; selects == 1 {
						execAll(t, d.DB, `UPDATE pt SET v = 1 WHERE m = 'e2' AND k = 'c'`)
					}
				}
				stats, err := s.RefreshContext(ctx, query)
				s.win.afterSelect = nil
				require.NoError(t, err)
				require.Equal(t, RefreshStats{Selected: 5, Emitted: 4}, stats)
				catchUp(t, s)
				require.Equal(t, []string{fmt.Sprintf(`update %s ["e2","c"]`, table),
					fmt.Sprintf(`refresh %s ["e2","a"]`, table), fmt.Sprintf(`refresh %s ["e2","B"]`, table),
					fmt.Sprintf(`refresh %s ["e2","D"]`, table), fmt.Sprintf(`refresh %s ["e2","e"]`, table)},
					h.eventList()[len(want):])
				if viaRoot {
					require.Empty(t, mismatches(h.tableRows("public.pt"), dbRows(t, d.DB, "pt")))
				} else {
					require.Empty(t, mismatches(h.tableRows("public.pt_a"), dbRows(t, d.DB, "pt_a")))
					require.Empty(t, mismatches(h.tableRows("public.pt_b"), dbRows(t, d.DB, "pt_b")))
				}
			})
		}
	}
}
