package dbsync

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRefreshQueryKeyCastChangesText: a Refresh row's record ID is made from the key
// columns' text as the query returns them. A cast that prints the key otherwise than
// changes do (numeric 1.5 as numeric(10,3) is 1.500, varchar(2) cuts 'c10' short)
// delivered the row under another record ID: the window did not drop it for a change
// inside it, and the consumer kept a second row with the stale value, never updated
// or deleted (Refresh returned nil). Such a query is refused (ErrConfig) before
// anything is written; casts that keep the text (to text, an integer to a wider
// integer type) are still taken, and the consumer ends equal to the table.
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
		`SELECT k::text AS k, v FROM padded`, // 'ab', where changes send 'ab  '
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
