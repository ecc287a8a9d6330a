package dbsync

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSlotLockCancelledRunLeavesNoLock: a Run whose context ends while it takes the
// slot lock must leave the lock free once it returned, so the next Syncer on the slot
// runs. database/sql reports a query whose context ended as
// failed even when the server ran it, and the connection went back to the pool holding
// the lock: the next Run, of a new Syncer on the same slot, got ErrSlotInUse naming the
// old session (handlers' TestCacheRedeliveryPostgres failed so in a full run).
func TestSlotLockCancelledRunLeavesNoLock(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE sl (id int PRIMARY KEY)`)
	slot := pgtest.Ident(t, "slot")
	newTestSyncer(t, d, ForTables("sl"), WithReplicationSlot(slot)).Close() // sets up
	for i := 0; i < 200; i++ {
		s := newTestSyncer(t, d, ForTables("sl"), WithReplicationSlot(slot), WithMessageHandler(DefaultMessageHandler{}))
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%40)*100*time.Microsecond)
		err := s.Run(ctx)
		cancel()
		require.False(t, errors.Is(err, ErrSlotInUse), "round %d: %v", i, err)
		require.NoError(t, err, "round %d", i)
		// Run returned: no session of its pool holds the lock any more.
		var holder int
		require.NoError(t, d.DB.QueryRow(slotLockHolder, slot).Scan(&holder))
		require.Zero(t, holder, "round %d (context ended after %v): a session of the returned Run's pool still holds the slot lock", i, time.Duration(i%40)*100*time.Microsecond)
		require.NoError(t, s.Close())
	}
}
