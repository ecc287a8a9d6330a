package dbsync

import (
	"context"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// truncatingCache is cacheHandler that empties a table at its TRUNCATE.
type truncatingCache struct{ *cacheHandler }

func (c truncatingCache) HandleTruncateMessage(_ int, _ *pglogrepl.TruncateMessage, relns []*pglogrepl.RelationMessage, _ []*PGTableInfo) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range relns {
		tbl := r.Namespace + "." + r.RelationName
		for k := range c.rows {
			if strings.HasPrefix(k, tbl+"|") {
				delete(c.rows, k)
			}
		}
		c.events = append(c.events, "truncate "+tbl)
	}
	return nil
}

// TestRefreshMovedRowsAndTruncateInWindow: inside a Refresh window a selected row is
// moved (unchanged TOASTed body) twice, the table is truncated, a row is inserted
// with its body and moved without it. The TRUNCATE empties the selection and ends
// the moves' tracking: nothing is emitted or read again, and the consumer ends equal
// to the table (the row inserted after the TRUNCATE has its body from its insert).
func TestRefreshMovedRowsAndTruncateInWindow(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE docs (id int PRIMARY KEY, n int, body text)`,
		`ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL`,
		`INSERT INTO docs SELECT g, 0, repeat('x', 10000) || g FROM generate_series(1, 3) g`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), truncatingCache{h}, ForTables("docs"))
	hooked := 0
	s.win.afterSelect = func() {
		if hooked++; hooked == 1 {
			execAll(t, d.DB, `UPDATE docs SET id = 20 WHERE id = 2`, `UPDATE docs SET id = 30 WHERE id = 20`,
				`TRUNCATE docs`, `INSERT INTO docs VALUES (1, 0, repeat('y', 10000))`,
				`UPDATE docs SET id = 10 WHERE id = 1`)
		}
	}
	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM docs ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 0}, stats)
	catchUp(t, s)
	require.Equal(t, []string{
		`update public.docs ["20"]`,
		`update public.docs ["30"]`,
		`truncate public.docs`,
		`insert public.docs ["1"]`,
		`update public.docs ["10"]`,
	}, h.eventList())
	rows := h.tableRows("public.docs")
	require.Empty(t, mismatches(rows, dbRows(t, d.DB, "docs")))
	require.Equal(t, strings.Repeat("y", 10000), rows[`["10"]`]["body"])
}
