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

// TestEmptySlotFlagIsUsageError: `-slot ""` (a script's unset variable, as in
// `dbsync teardown -slot "$SLOT"`) is a bad command line (exit 2), not the slot of
// $DBSYNC_REPLSLOT or the default, which teardown would drop; the same for
// -publication.
func TestEmptySlotFlagIsUsageError(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	slot := pgtest.Ident(t, "slot")
	_, err := d.DB.Exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	require.NoError(t, err)
	t.Cleanup(func() { d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, slot) })

	for _, args := range [][]string{
		{"teardown", "-slot", ""},
		{"teardown", "-slot="},
		{"status", "-slot", ""},
		{"tail", "-slot", ""},
		{"snapshot", "-slot", "", "items"},
		{"teardown", "-publication", ""},
	} {
		code, out, errOut := runCLI(args...)
		require.Equal(t, 2, code, "%q: stdout %s stderr %s", args, out, errOut)
		require.Equal(t, "", out, "%q", args)
		flagName := "-slot"
		if args[1] == "-publication" {
			flagName = "-publication"
		}
		require.Contains(t, errOut, "dbsync "+args[0]+": "+flagName+` "": give a name, or leave the flag out`, "%q", args)
		var n int
		require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n))
		require.Equal(t, 1, n, "%q: the slot of $DBSYNC_REPLSLOT is left alone", args)
	}
}

// TestTailWithoutPublicationNamesTablesFlag: tail without -tables on a database
// without the publication exits 1 saying to give -tables, not only the library's
// dbsync.ForTables, which a command-line user cannot pass; nothing is created.
func TestTailWithoutPublicationNamesTablesFlag(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	require.NoError(t, err)
	code, out, errOut := runCLI("tail")
	require.Equal(t, 1, code, errOut)
	require.Equal(t, "", out)
	require.Contains(t, errOut, "publication does not exist") // the library's message is kept
	require.Contains(t, errOut, "with dbsync tail, give -tables t1,schema.t2 to create it")
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, pgtest.Ident(t, "slot")).Scan(&n))
	require.Equal(t, 0, n)
}

// TestStatusSlotOfAnotherDatabase: slot names are per cluster, so status (connected to
// $POSTGRES_DB) also finds a pgoutput slot of another database, which tail and a
// Syncer of this one refuse (ErrSlotMismatch); status says so on the database line.
func TestStatusSlotOfAnotherDatabase(t *testing.T) {
	here, there := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	setEnv(t, here)
	slot := pgtest.Ident(t, "slot")
	_, err := there.DB.Exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	require.NoError(t, err)
	t.Cleanup(func() { there.DB.Exec(`SELECT pg_drop_replication_slot($1)`, slot) })

	code, out, errOut := runCLI("status")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "plugin:              pgoutput\n")
	require.Contains(t, out, "database:            "+there.Name+" (not "+here.Name+", the database of $POSTGRES_DB: dbsync reads a slot only from its own database)\n")

	setEnv(t, there)
	code, out, errOut = runCLI("status")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "database:            "+there.Name+"\n")
}
