package dbsync

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSelectionWaitPrefersDelivery: a selection whose refresh rows were handed over
// by the time its context ended (Close ends the calls' contexts right after Run's
// last poll, whose deliveries may have completed them) reports the delivery, not
// ErrRefreshAbandoned, every time.
func TestSelectionWaitPrefersDelivery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 200; i++ {
		done := make(chan selDone, 1)
		done <- selDone{emitted: 3}
		p := &pendingSelection{id: "x", rows: NewInMemSelection(), selected: 3, done: done, closed: true}
		out, err := p.wait(ctx)
		require.NoError(t, err, "attempt %d", i)
		require.Equal(t, 3, out.emitted)
	}
}
