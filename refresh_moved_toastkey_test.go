package dbsync

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRefreshRereadsRowMovedWithToastedKeyPart: as
// TestRefreshRereadsRowMovedWithUnchangedTOAST, with a key (k, n) whose text part k is
// stored out of line (2,400 bytes that do not compress). Inside the Refresh window an
// UPDATE moves a selected row to a new key by n alone, leaving k and the body
// unchanged: pgoutput sends both as unchanged TOAST in the new tuple (and k in the old
// key). The change gets its record ID from the old key (Change.Filled), but the texts
// of the new key, which the row is read again by, were taken from the new tuple
// alone, so they were unknown and the row was not read again (Emitted 2, Reread 0):
// the cache ended without its body. Now k's text comes from the old key. Text and binary formats.
func TestRefreshRereadsRowMovedWithToastedKeyPart(t *testing.T) {
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) { testRefreshRereadsRowMovedWithToastedKeyPart(t, binary) })
	}
}

func testRefreshRereadsRowMovedWithToastedKeyPart(t *testing.T, binary bool) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ck (k text, n int, body text, PRIMARY KEY (k, n))`,
		`ALTER TABLE ck ALTER COLUMN k SET STORAGE EXTERNAL`,
		`ALTER TABLE ck ALTER COLUMN body SET STORAGE EXTERNAL`,
		`INSERT INTO ck SELECT (SELECT string_agg(md5((i * 100 + g)::text), '' ORDER BY i) FROM generate_series(1, 75) i), g, repeat('x', 10000) || g
			FROM generate_series(1, 3) g`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("ck"), WithBinary(binary))
	hooked := 0
	s.win.afterSelect = func() {
		if hooked++; hooked == 1 {
			execAll(t, d.DB, `UPDATE ck SET n = 20 WHERE n = 2`)
		}
	}
	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM ck ORDER BY n`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 3, Reread: 1}, stats)
	catchUp(t, s)
	k := queryStrings(t, d.DB, `SELECT k FROM ck ORDER BY n`) // n: 1, 3, 20
	require.Len(t, k, 3)
	k2 := k[2]
	require.Len(t, k2, 2400)
	require.Equal(t, []string{
		`update public.ck ["` + k2 + `","20"]`,
		`refresh public.ck ["` + k[0] + `","1"]`,
		`refresh public.ck ["` + k[1] + `","3"]`,
		`refresh public.ck ["` + k2 + `","20"]`, // read again at its new key
	}, h.eventList())
	rows := h.tableRows("public.ck")
	require.Empty(t, mismatches(rows, dbRows(t, d.DB, "ck")))
	require.Equal(t, strings.Repeat("x", 10000)+"2", rows[`["`+k2+`","20"]`]["body"])
}
