package main

import (
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestStatusSlotDbsyncCannotRead: status of a slot that is not a logical pgoutput slot
// (a physical slot never used has no restart_lsn and no wal_status, and is not
// invalidated) prints restart_lsn as unset rather than "(invalidated)", and says dbsync
// cannot read the slot, as for a test_decoding slot.
func TestStatusSlotDbsyncCannotRead(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	phys, td := pgtest.Ident(t, "phys"), pgtest.Ident(t, "td")
	_, err := d.DB.Exec(`SELECT pg_create_physical_replication_slot($1)`, phys)
	require.NoError(t, err)
	t.Cleanup(func() { d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, phys) })
	_, err = d.DB.Exec(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, td)
	require.NoError(t, err)
	t.Cleanup(func() { d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, td) })

	code, out, errOut := runCLI("status", "-slot", phys)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "plugin:              (none: a physical slot, which dbsync cannot read)\n")
	require.Contains(t, out, "restart_lsn:         -\n")
	require.NotContains(t, out, "invalidated")

	code, out, errOut = runCLI("status", "-slot", td)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "plugin:              test_decoding (not pgoutput: dbsync cannot read this slot)\n")
	require.NotContains(t, out, "invalidated")
}
