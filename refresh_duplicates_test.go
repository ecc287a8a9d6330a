package dbsync

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRefreshQueryReturnsKeyTwice: a Refresh query whose join returns each row
// twice delivers each key once: the selection is keyed by record ID, and a later row
// with a key replaces the earlier one at the earlier one's place. Identical rows
// (a join that repeats them) lose nothing; rows that differ under one key (the
// query computes a column per joined row) deliver the last one the query returned.
// RefreshStats.Selected counts keys, not result rows.
func TestRefreshQueryReturnsKeyTwice(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`,
		`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 5) g`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"))

	stats, err := s.RefreshContext(ctx, `SELECT i.* FROM items i CROSS JOIN generate_series(1, 2) g ORDER BY i.id DESC, g`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 5, Emitted: 5}, stats)
	require.Equal(t, []string{`["5"]`, `["4"]`, `["3"]`, `["2"]`, `["1"]`}, h.refreshKeys, "each key once, in the order first returned")
	require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))

	h.mu.Lock()
	h.refreshKeys = nil
	h.mu.Unlock()
	stats, err = s.RefreshContext(ctx, `SELECT i.id, i.v || '-' || g AS v FROM items i CROSS JOIN generate_series(1, 2) g ORDER BY i.id, g`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 5, Emitted: 5}, stats)
	require.Equal(t, []string{`["1"]`, `["2"]`, `["3"]`, `["4"]`, `["5"]`}, h.refreshKeys)
	rows := h.tableRows("public.items")
	for id := 1; id <= 5; id++ {
		k := `["` + string(rune('0'+id)) + `"]`
		require.Equal(t, "v"+string(rune('0'+id))+"-2", rows[k]["v"], "the last row returned for %s", k)
	}
}
