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

// TestRefreshQueryKeyCastChangesText: a Refresh row's record ID is made from the key
// columns' text as the query returns them. A cast that prints the key otherwise than
// changes do (numeric 1.5 as numeric(10,3) is 1.500, varchar(2) cuts 'c10' short)
// delivered the row under another record ID: the window did not drop it for a change
// inside it, and the consumer kept a second row with the stale value, never updated
// or deleted (Refresh returned nil). Such a query is refused (ErrConfig) before
// anything is written; casts that keep the text (to text, an integer to a wider
// integer type) are still taken, as is char(n) to text (the selection casts it back,
// padding it again), and the consumer ends equal to the table.
func TestRefreshQueryKeyCastChangesText(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id numeric PRIMARY KEY, v text)`, `INSERT INTO items VALUES (1.5, 'a')`,
		`CREATE TABLE codes (code varchar(10) PRIMARY KEY, v text)`, `INSERT INTO codes VALUES ('c10', 'a')`,
		`CREATE TABLE ints (id int PRIMARY KEY, v text)`, `INSERT INTO ints VALUES (16777217, 'a')`,
		`CREATE TABLE padded (k char(4) PRIMARY KEY, v text)`, `INSERT INTO padded VALUES ('ab', 'a')`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items", "codes", "ints", "padded"))
	s.win.afterSelect = func() {
		execAll(t, d.DB, `UPDATE items SET v = v || '+'`, `UPDATE codes SET v = v || '+'`, `UPDATE ints SET v = v || '+'`,
			`UPDATE padded SET v = v || '+'`)
	}
	ctx := context.Background()
	for _, q := range []string{
		`SELECT id::numeric(10,3) AS id, v FROM items`,
		`SELECT id::numeric(10,3)::text AS id, v FROM items`,
		`SELECT code::varchar(2) AS code, v FROM codes`,
		`SELECT id::float4 AS id, v FROM ints`,
	} {
		_, err := s.RefreshContext(ctx, q)
		require.ErrorIs(t, err, ErrConfig, q)
		require.Contains(t, err.Error(), "cast from", q)
	}
	require.Empty(t, h.eventList(), "nothing selected, nothing written")
	require.Equal(t, []string{"0"}, queryStrings(t, d.DB, `SELECT count(*)::text FROM dbsync_ctrl.dbsync_wmtable`))

	// Each row changes inside each window (the hook), so a window that matches the
	// row's changes with its refresh row drops it: nothing emitted, and the change
	// leaves the consumer with the table's value under the row's own record ID.
	for _, c := range []struct{ q, table, key string }{
		{`SELECT id::text AS id, v FROM items`, "items", `["1.5"]`},
		{`SELECT code::text AS code, v FROM codes`, "codes", `["c10"]`},
		{`SELECT id::bigint AS id, v FROM ints`, "ints", `["16777217"]`},
		{`SELECT id::text::integer AS id, v FROM ints`, "ints", `["16777217"]`},
		{`SELECT k, v FROM padded`, "padded", `["ab  "]`},
		// 'ab' as the query returns it, cast back to char(4) by the selection.
		{`SELECT k::text AS k, v FROM padded`, "padded", `["ab  "]`},
	} {
		stats, err := s.RefreshContext(ctx, c.q)
		require.NoError(t, err, c.q)
		require.Equal(t, RefreshStats{Selected: 1, Emitted: 0}, stats, c.q)
		catchUp(t, s)
		rows := h.tableRows("public." + c.table)
		require.Len(t, rows, 1, c.q)
		require.Contains(t, rows, c.key, c.q)
	}
	catchUp(t, s)
	for _, table := range []string{"items", "codes", "ints", "padded"} {
		require.Empty(t, mismatches(h.tableRows("public."+table), dbRows(t, d.DB, table)), table)
	}
}
