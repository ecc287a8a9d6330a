package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSearchPathShadowsKeyOperators: selections compare key columns (a Snapshot's
// chunk bounds, Refresh's and re-reads' key lists) with =, > and <=. A schema on the
// role's search_path holding exact-match operators for the key's type, which
// pg_catalog lacks for varchar (it has text's), took them over even with pg_catalog
// searched first (search_path = app): Snapshot failed with "shadowed varchar >", and
// a planted function ran with dbsync's role. Keys of built-in types now compare with
// OPERATOR(pg_catalog.op). A Snapshot in chunks of 2, a Refresh by keys and a Refresh
// of the whole table through the shadowing role give every row.
func TestSearchPathShadowsKeyOperators(t *testing.T) {
	for _, key := range []string{"varchar(10)", "varchar(10), n varchar(10)"} {
		t.Run(key, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			cols, pk := "k varchar(10), v int", "k"
			if key != "varchar(10)" {
				cols, pk = "k varchar(10), n varchar(10), v int", "k, n"
			}
			execAll(t, d.DB, `CREATE SCHEMA app`, fmt.Sprintf(`CREATE TABLE items (%s, PRIMARY KEY (%s))`, cols, pk))
			for i, op := range []string{"=", ">", "<=", "<", ">=", "<>"} {
				execAll(t, d.DB,
					fmt.Sprintf(`CREATE FUNCTION app.shadow_vop%d(varchar, varchar) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'shadowed varchar %s'; END$$`, i, op),
					fmt.Sprintf(`CREATE OPERATOR app.%s (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = app.shadow_vop%d)`, op, i))
			}
			if key == "varchar(10)" {
				execAll(t, d.DB, `INSERT INTO items SELECT 'k' || g, g FROM generate_series(1, 5) g`)
			} else {
				execAll(t, d.DB, `INSERT INTO items SELECT 'k' || g, 'n' || g, g FROM generate_series(1, 5) g`)
			}
			dsn := settingsRole(t, d, "role", [][2]string{{"search_path", "app"}})
			h := newCacheHandler()
			s, err := NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
				ForTables("public.items"), WithMessageHandler(h), WithSnapshotChunkSize(2))
			require.NoError(t, err)
			t.Cleanup(func() { s.Close() })
			r := runInBackground(s)
			t.Cleanup(r.cancel)
			ctx := context.Background()
			require.NoError(t, s.Snapshot(ctx, "public.items"))
			require.NoError(t, r.stop(t))
			require.Len(t, h.refreshKeys, 5)
			require.Len(t, h.tableRows("public.items"), 5)

			// The re-reads' key lists (a Snapshot's moved rows, a Refresh's rows touched
			// in its window), run as the selection would, through the shadowing role.
			info, err := s.TableInfo(ctx, "public.items")
			require.NoError(t, err)
			db, err := sql.Open("postgres", dsn)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			keys := [][]string{{"k2"}, {"k4"}}
			if len(info.PrimaryKey) == 2 {
				keys = [][]string{{"k2", "n2"}, {"k4", "n4"}}
			}
			for _, q := range []selQuery{keysQuery(info, []string{"v"}, keys),
				refreshKeysQuery(info, []string{"k", "v"}, `SELECT * FROM public.items`, keys)} {
				require.Equal(t, []string{"2", "4"}, queryStrings(t, db, `SELECT v::text FROM (`+q.build(formPlain)+`) AS x ORDER BY 1`, q.args...))
			}
		})
	}
}
