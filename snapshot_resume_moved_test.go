package dbsync

import (
	"context"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSnapshotResumeRereadsRowsMovedWhileStopped: a Snapshot of moved (chunks of 2, one
// at a time) is cancelled after its first chunk was delivered and recorded. While no
// Snapshot of the table runs (the Syncer does), an UPDATE moves the fifth row, never
// read, to a key before the first chunk without touching its out-of-line body: the
// consumer gets the row through the update alone, without its body, and the resumed
// Snapshot starts after the first chunk, so no chunk reads the row. The table's
// snapshot is unfinished, so the Syncer must keep collecting such rows until a
// Snapshot of it finishes, and the resumed call read it again: the cache must end
// equal to the table.
func TestSnapshotResumeRereadsRowsMovedWhileStopped(t *testing.T) {
	c := movedKeyCases[0]
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, c.ddl, `ALTER TABLE moved ALTER COLUMN body SET STORAGE EXTERNAL`, c.seed)
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

	execAll(t, d.DB, c.move)
	catchUp(t, s)
	require.NotContains(t, h.tableRows("public.moved")[c.movedTo], "body", "the moved row came through its update only")

	s.SnapshotProgress = nil
	require.NoError(t, s.Snapshot(context.Background(), "moved"))
	catchUp(t, s)
	require.Equal(t, []string{
		`refresh public.moved ` + c.ids[0], `refresh public.moved ` + c.ids[1], // chunk 1, first call
		`update public.moved ` + c.movedTo,
		`refresh public.moved ` + c.ids[2], `refresh public.moved ` + c.ids[3], // resumed
		`refresh public.moved ` + c.ids[5],
		`refresh public.moved ` + c.movedTo, // read again after the last chunk
	}, h.eventList())
	rows := h.tableRows("public.moved")
	require.Empty(t, mismatches(rows, dbRows(t, d.DB, "moved")))
	require.Equal(t, strings.Repeat("b", 3000)+"5", rows[c.movedTo]["body"])
	requireSnapshotFinished(t, d, true)
	require.Zero(t, keptRereads(s))
	s.win.mu.Lock()
	defer s.win.mu.Unlock()
	require.Empty(t, s.win.moved, "a finished table's moved rows are no longer collected")
}
