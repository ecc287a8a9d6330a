package dbsync

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestSnapshotProgressWriteFails: the UPDATE recording the third chunk of a Snapshot
// fails after the chunk's rows were delivered (a CHECK constraint the test adds to
// snapshot_progress: the server refuses it with 23514, as it would a revoked
// privilege or a full disk). Snapshot returns ErrSnapshotProgress naming the table
// and chunk and saying what to do, with the server error in the chain; the next
// Snapshot resumes after the second chunk, delivers the third again (at-least-once)
// and every other row once, and the cache equals the table.
func TestSnapshotProgressWriteFails(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`,
		`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g`)
	h := newCacheHandler()
	var progress []SnapshotProgress
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"),
		WithSnapshotChunkSize(10), WithSnapshotChunksInFlight(1),
		WithSnapshotProgress(func(p SnapshotProgress) { progress = append(progress, p) }))
	execAll(t, d.DB, `ALTER TABLE dbsync_ctrl.snapshot_progress ADD CONSTRAINT stop_at_three CHECK (chunks_done < 3)`)

	err := s.Snapshot(ctx, "items")
	require.ErrorIs(t, err, ErrSnapshotProgress)
	var pqErr *pq.Error
	require.True(t, errors.As(err, &pqErr), "server error in the chain: %v", err)
	require.Equal(t, pq.ErrorCode("23514"), pqErr.Code)
	require.ErrorContains(t, err, "snapshot of public.items, chunk 3: its rows were delivered but its progress could not be recorded")
	require.ErrorContains(t, err, "call Snapshot again")
	require.Len(t, progress, 2)
	catchUp(t, s)
	first := refreshCounts(h)
	require.Equal(t, expectedCounts(t, d, map[string]int{"items": 1}), addCounts(first, idRange("public.items", 31, 100), 1),
		"rows 1-30 delivered once, the rest not yet")

	execAll(t, d.DB, `ALTER TABLE dbsync_ctrl.snapshot_progress DROP CONSTRAINT stop_at_three`)
	progress = nil
	require.NoError(t, s.Snapshot(ctx, "items"))
	require.Equal(t, int64(3), progress[0].Chunks, "resumed after chunk 2")
	require.True(t, progress[len(progress)-1].Done)
	require.Equal(t, int64(100), progress[len(progress)-1].Rows)
	catchUp(t, s)
	want := expectedCounts(t, d, map[string]int{"items": 1})
	want = addCounts(want, idRange("public.items", 21, 30), 1) // chunk 3 twice
	require.Equal(t, want, refreshCounts(h))
	require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))
}

// idRange is the refresh-count keys of ids from..to of a one-column int key.
func idRange(table string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, table+` ["`+strconv.Itoa(i)+`"]`)
	}
	return out
}

// addCounts returns counts with n added for each key.
func addCounts(counts map[string]int, keys []string, n int) map[string]int {
	out := map[string]int{}
	for k, v := range counts {
		out[k] = v
	}
	for _, k := range keys {
		out[k] += n
	}
	return out
}
