package dbsync

import (
	"context"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestMovedRowsBoundedWhileSnapshotUnfinished: a Snapshot cancelled after its first
// chunk leaves the table's moved rows collected until one finishes it, which can be
// months away. A row moved again and again to new keys without its out-of-line body
// changing is one row to read again, at the key it has now: the set must not keep an
// entry for every key it ever had. The resumed Snapshot still reads the row again.
func TestMovedRowsBoundedWhileSnapshotUnfinished(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE moved (id int PRIMARY KEY, n int, body text)`,
		`ALTER TABLE moved ALTER COLUMN body SET STORAGE EXTERNAL`,
		`INSERT INTO moved SELECT i, i, repeat('b', 3000) || i FROM generate_series(1, 6) i`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("moved"),
		WithSnapshotChunkSize(2), WithSnapshotParallel(1), WithSnapshotChunksInFlight(1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.SnapshotProgress = func(p SnapshotProgress) {
		if p.Chunks == 1 {
			cancel()
		}
	}
	require.ErrorIs(t, s.Snapshot(ctx, "moved"), context.Canceled)
	requireSnapshotFinished(t, d, false)

	const moves = 300
	for range moves / 100 {
		execAll(t, d.DB, `DO $$ BEGIN FOR i IN 1..100 LOOP UPDATE moved SET id = id + 1000 WHERE n = 5; END LOOP; END $$`)
	}
	catchUp(t, s)
	var rel uint32
	require.NoError(t, d.DB.QueryRow(`SELECT 'moved'::regclass::oid`).Scan(&rel))
	s.win.mu.Lock()
	kept := len(s.win.moved[rel].keys)
	s.win.mu.Unlock()
	require.Equal(t, 1, kept, "rows to read again after %d moves of one row", moves)

	s.SnapshotProgress = nil
	require.NoError(t, s.Snapshot(context.Background(), "moved"))
	catchUp(t, s)
	rows := h.tableRows("public.moved")
	require.Empty(t, mismatches(rows, dbRows(t, d.DB, "moved")))
	require.Equal(t, strings.Repeat("b", 3000)+"5", rows[`["300005"]`]["body"])
	requireSnapshotFinished(t, d, true)
	s.win.mu.Lock()
	defer s.win.mu.Unlock()
	require.Empty(t, s.win.moved)
}
