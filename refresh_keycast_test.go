package dbsync

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRefreshKeyCastKeepsRecordIDs: docs/SNAPSHOTS.md lets a Refresh query return its
// key columns cast (id::text AS id). A cast that prints the value otherwise must not
// change the refresh rows' record IDs: char(n)::text drops the padding pgoutput sends
// ('ab' for 'ab   '), so the refresh row of a row was cached under another key than
// its changes, and a later DELETE left it in the cache. Both drivers, a composite key,
// rows of the query's own shape (the key column's value is the table's).
func TestRefreshKeyCastKeepsRecordIDs(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE codes (code char(5), n int, v text, PRIMARY KEY (code, n))`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("codes"), WithDB(db))
			execAll(t, d.DB, `INSERT INTO codes VALUES ('ab', 1, 'x'), ('abcde', 2, 'y')`)
			waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 2 }, "the inserts")
			fromChanges := h.tableRows("public.codes")
			h.mu.Lock()
			h.rows = map[string]StringMap{}
			h.mu.Unlock()
			stats, err := s.RefreshContext(context.Background(), `SELECT code::text AS code, n::text AS n, v FROM codes`)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
			require.Equal(t, fromChanges, h.tableRows("public.codes"), "refresh rows: the changes' keys and values")
			require.Equal(t, "ab   ", fromChanges[`["ab   ","1"]`]["code"])
			execAll(t, d.DB, `DELETE FROM codes`)
			waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 6 }, "the deletes")
			require.Equal(t, []string{
				`insert public.codes ["ab   ","1"]`, `insert public.codes ["abcde","2"]`,
				`refresh public.codes ["ab   ","1"]`, `refresh public.codes ["abcde","2"]`,
				`delete public.codes ["ab   ","1"]`, `delete public.codes ["abcde","2"]`,
			}, h.eventList())
			require.Empty(t, h.tableRows("public.codes"), "the deletes removed the refreshed rows")
		})
	}
}
