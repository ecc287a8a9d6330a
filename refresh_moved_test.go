package dbsync

import (
	"context"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRefreshRereadsRowMovedWithUnchangedTOAST: inside a Refresh window an UPDATE moves
// a selected row to a new key without touching its out-of-line body (pgoutput sends
// the body as unchanged). DBLog drops the old key from the selection, and the
// consumer, which never saw the row, gets it at the new key without its body. The
// dropped row's last change left columns unknown, like an update in place
// (TestRefreshRereadsRowsWithUnchangedTOAST), so it must be read again, at its new
// key. Before, it was not (Reread 0): the cache ended without the body of row 20
// while Refresh of the whole table returned nil.
func TestRefreshRereadsRowMovedWithUnchangedTOAST(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE docs (id int PRIMARY KEY, n int, body text)`,
		`ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL`,
		`INSERT INTO docs SELECT g, 0, repeat('x', 10000) || g FROM generate_series(1, 4) g`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("docs"))
	hooked := 0
	s.win.afterSelect = func() {
		if hooked++; hooked == 1 {
			// Row 2 moves twice (to 20, then 30); row 4 moves to 40 and is then
			// updated with its body, which leaves nothing unknown.
			execAll(t, d.DB, `UPDATE docs SET id = 20 WHERE id = 2`, `UPDATE docs SET id = 30, n = 1 WHERE id = 20`,
				`UPDATE docs SET id = 40 WHERE id = 4`, `UPDATE docs SET body = 'short' WHERE id = 40`)
		}
	}
	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM docs ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 4, Emitted: 3, Reread: 1}, stats)
	catchUp(t, s)
	require.Equal(t, []string{
		`update public.docs ["20"]`,
		`update public.docs ["30"]`,
		`update public.docs ["40"]`,
		`update public.docs ["40"]`,
		`refresh public.docs ["1"]`,
		`refresh public.docs ["3"]`,
		`refresh public.docs ["30"]`, // read again at its new key
	}, h.eventList())
	rows := h.tableRows("public.docs")
	require.Empty(t, mismatches(rows, dbRows(t, d.DB, "docs")))
	require.Equal(t, strings.Repeat("x", 10000)+"2", rows[`["30"]`]["body"])
}
