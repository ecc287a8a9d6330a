package dbsync

import (
	"context"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSnapshotParallelChunkRetries: with planned ranges read two at a time, the first
// selection's window asks for a retry (as a change with an unreadable key would) after
// a row was inserted into its range and a row of the next range was deleted inside
// its window, and one of the next selections asks for one too. Retries read their own
// ranges again, the progress ends at the last key, every row left is refreshed exactly
// once (the deleted one never), and the cache ends equal to the table.
func TestSnapshotParallelChunkRetries(t *testing.T) {
	var chunks []SnapshotProgress
	d, h, s := sixRowSnapshot(t, func(p SnapshotProgress) { chunks = append(chunks, p) }, WithSnapshotParallel(2))
	var selects, retries atomic.Int32
	s.win.afterSelect = func() {
		switch selects.Add(1) {
		case 1:
			execAll(t, d.DB, `INSERT INTO snap VALUES (15, 'new')`, `DELETE FROM snap WHERE id = 40`)
		}
	}
	s.win.forceRetry = func(id string) bool {
		return strings.HasSuffix(id, "-1") || (strings.HasSuffix(id, "-4") || strings.HasSuffix(id, "-5")) && retries.Add(1) == 1
	}
	require.NoError(t, s.Snapshot(context.Background(), "snap"))
	catchUp(t, s)
	require.NotZero(t, s.chunkBounds.Load(), "planned ranges")
	var refreshed []string
	for _, e := range h.eventList() {
		if strings.HasPrefix(e, "refresh ") {
			refreshed = append(refreshed, strings.TrimPrefix(e, "refresh public.snap "))
		}
	}
	sort.Strings(refreshed)
	// 40 was deleted inside the windows of the first two selections (both in flight):
	// dropped from whichever read it, and gone after.
	require.Equal(t, []string{`["10"]`, `["15"]`, `["20"]`, `["30"]`, `["50"]`, `["60"]`}, refreshed, "%q", h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
	require.True(t, chunks[len(chunks)-1].Done)
	var last []byte
	require.NoError(t, d.DB.QueryRow(`SELECT last_key::text FROM dbsync_ctrl.snapshot_progress WHERE table_name = 'public.snap'`).Scan(&last))
	require.Equal(t, `{60}`, string(last))
}
