package dbsync

import (
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSetupAllSlotsInUse: setup on a server whose replication slots are all taken
// (max_replication_slots) failed with the server's bare 53400 "all replication slots
// are in use" (lib/pq drops its hint). It is ErrConfig saying what to do, with the
// server's error in the chain; nothing of the Syncer's is left behind, and once a slot
// is free setup succeeds.
func TestSetupAllSlotsInUse(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{Settings: []string{"max_replication_slots = 2"}})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`,
		`SELECT pg_create_physical_replication_slot('other_1')`, `SELECT pg_create_physical_replication_slot('other_2')`)
	_, err = NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot("full_slot"), WithPublication("full_pub"), ForTables("items"))
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, "max_replication_slots")
	require.ErrorContains(t, err, "pg_drop_replication_slot")
	require.True(t, hasSQLState(err, "53400"), "the server's error stays in the chain: %v", err)
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'full_slot'`).Scan(&n))
	require.Zero(t, n)

	execAll(t, d.DB, `SELECT pg_drop_replication_slot('other_2')`)
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot("full_slot"), WithPublication("full_pub"), ForTables("items"))
	require.NoError(t, err)
	require.NoError(t, s.Close())
}
