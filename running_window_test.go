package dbsync

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSelectionRegisteredOnceRunning: once IsRunning reports true, a selection is
// taken (it waits for its watermarks) instead of failing at once with "not running",
// also right after Run started again on the same Syncer.
func TestSelectionRegisteredOnceRunning(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("a"), WithMessageHandler(DefaultMessageHandler{}))
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		for !s.IsRunning() {
		}
		id := "probe"
		ch := s.win.register(id, 1)
		select {
		case r := <-ch:
			cancel()
			<-done
			t.Fatalf("iteration %d: IsRunning, yet the selection failed at once: %v", i, r.err)
		default:
		}
		s.win.release(id)
		cancel()
		require.NoError(t, <-done)
	}
}
