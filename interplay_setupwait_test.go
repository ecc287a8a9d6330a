package dbsync

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSetupSlotCreationHonoursContext: Setup's slot creation waits for the
// transactions open when it began (here one holding an xid); its context ending
// meanwhile ends it at once with an error wrapping the context's, on the pool
// NewSyncer opens (lib/pq) with the server answering, nothing left behind: once the
// transaction ends, Setup creates the slot.
func TestSetupSlotCreationHonoursContext(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE sw (id int PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("sw"), WithSetup(false))
	tx, err := d.DB.Begin()
	require.NoError(t, err)
	_, err = tx.Exec(`INSERT INTO sw VALUES (1)`)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	err = s.Setup(ctx)
	took := time.Since(start)
	require.Error(t, err)
	require.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
	require.Less(t, took, 8*time.Second, "Setup returned %s after its 3 s deadline", took)
	require.Equal(t, 0, slotCount(t, d))
	require.NoError(t, tx.Rollback())
	require.NoError(t, s.Setup(context.Background()))
	require.Equal(t, 1, slotCount(t, d))
}
