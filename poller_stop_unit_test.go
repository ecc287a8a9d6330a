package dbsync

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAfterStop: the context the advance after a delivered poll runs under does not
// end with Run's context, only a grace period later, so a stop that comes while the
// advance runs does not cancel it (the delivered transactions would stay in the slot
// and come again); its cancel ends it at once.
func TestAfterStop(t *testing.T) {
	// The parent ends: the context goes on (an hour of grace), until its cancel.
	ctx, cancel := context.WithCancel(context.Background())
	actx, cancelA := afterStop(ctx, time.Hour)
	cancel()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, actx.Err(), "ended with its parent")
	cancelA()
	require.ErrorIs(t, actx.Err(), context.Canceled)

	// It ends by itself the grace after its parent, also one ended before.
	const grace = 20 * time.Millisecond
	for _, before := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		if before {
			cancel()
		}
		stopped := time.Now() // no later than the grace starts
		actx, cancelA := afterStop(ctx, grace)
		cancel()
		select {
		case <-actx.Done():
		case <-time.After(time.Minute):
			t.Fatal("did not end after the grace")
		}
		require.GreaterOrEqual(t, time.Since(stopped), grace)
		cancelA()
	}

	// A live parent: no end until cancel.
	live, cancelLive := context.WithCancel(context.Background())
	defer cancelLive()
	actx, cancelA = afterStop(live, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, actx.Err())
	cancelA()
	require.ErrorIs(t, actx.Err(), context.Canceled)
}
