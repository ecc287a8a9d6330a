package demo

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/handlers"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestDemoSnapshotRebuild runs the demo with rows seeded before the slot exists and
// Rebuild = Syncer.Snapshot while the writers run: the copy must still be exact. This
// is how `dbsync demo` should wire its rebuild (see docs/SNAPSHOTS.md).
func TestDemoSnapshotRebuild(t *testing.T) {
	d := pgtest.NewDatabase(t)
	var progress bytes.Buffer
	ctx := context.Background()
	var chunks int
	res, err := Run(ctx, Config{ConnStr: d.DSN(), Writers: 3, Duration: 4 * time.Second, KeysPerWriter: 60, Seed: 7,
		SeedRows: 400, Progress: &progress,
		Rebuild: func(ctx context.Context, s *dbsync.Syncer, _ *handlers.Cache, tables []string) error {
			s.SnapshotChunkSize = 25
			s.SnapshotProgress = func(dbsync.SnapshotProgress) { chunks++ }
			return s.Snapshot(ctx, tables...)
		}})
	require.NoError(t, err, "progress:\n%s", progress.String())
	require.Equal(t, 0, res.Mismatches, "details: %v", res.Details)
	require.GreaterOrEqual(t, res.Rows, 3*400/2)
	require.Greater(t, res.Cache.Refreshes, int64(0))
	require.Greater(t, chunks, 3*400/25)
	t.Logf("%s; %d chunks, cache %+v", res.Line(), chunks, res.Cache)
}
