package dbsync

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRefreshWithTransactionsOpenAcrossTheWindow: transactions that began (and wrote)
// before the low watermark and commit at different places of a Refresh window. A, open
// across the whole window, commits after the high watermark: its row is refreshed with
// the value before A (the SELECT could not see it), then A's update follows. B commits
// between the SELECT and the high watermark: its row is dropped, B's update gives the
// value. C deletes a row and inserts it again under the same key, committing inside
// the window: dropped, the consumer gets the delete and the insert. D moves a row into
// the selected range inside the window (a key-changing update): not selected, its
// update carries it. The cache ends equal to the table.
func TestRefreshWithTransactionsOpenAcrossTheWindow(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`,
		`INSERT INTO items SELECT g, 'old' || g FROM generate_series(1, 5) g`, `INSERT INTO items VALUES (100, 'far')`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"))
	ctx := context.Background()
	open := func(stmts ...string) func() {
		tx, err := d.DB.BeginTx(ctx, nil)
		require.NoError(t, err)
		for _, q := range stmts {
			_, err := tx.Exec(q)
			require.NoError(t, err)
		}
		return func() { require.NoError(t, tx.Commit()) }
	}
	commitA := open(`UPDATE items SET v = 'A' WHERE id = 1`)
	commitB := open(`UPDATE items SET v = 'B' WHERE id = 2`)
	commitC := open(`DELETE FROM items WHERE id = 3`, `INSERT INTO items VALUES (3, 'C')`)
	commitD := open(`UPDATE items SET id = 6 WHERE id = 100`)
	s.win.afterSelect = func() { commitB(); commitC(); commitD() }
	stats, err := s.RefreshContext(ctx, `SELECT id, v FROM items WHERE id <= 10 ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 5, Emitted: 3}, stats)
	commitA()
	catchUp(t, s)
	require.Equal(t, []string{
		`update public.items ["2"]`,
		`delete public.items ["3"]`, `insert public.items ["3"]`,
		`update public.items ["6"]`,
		`refresh public.items ["1"]`, `refresh public.items ["4"]`, `refresh public.items ["5"]`,
		`update public.items ["1"]`,
	}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))
}
