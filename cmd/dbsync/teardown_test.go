package main

import (
	"fmt"
	"testing"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestTeardownCommandBesideOtherSlots: `teardown -slot watch` next to the app's slot
// (docs/CLI.md, "tail consumes the slot") drops the watcher's slot and progress rows
// and says what it kept and why (exit 0); a test_decoding slot is refused (exit 1);
// the app's teardown is refused while a user's column uses a type in the control
// schema (exit 1, nothing of the schema dropped), and completes once it is gone.
func TestTeardownCommandBesideOtherSlots(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	require.NoError(t, err)
	app, watch, testDec, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "watch"), pgtest.Ident(t, "testdec"), pgtest.Ident(t, "pub")
	for _, slot := range []string{app, watch} {
		s, err := dbsync.NewSyncer(dbsync.WithPGConnStr(d.DSN()), dbsync.ForTables("items"), dbsync.WithReplicationSlot(slot))
		require.NoError(t, err)
		require.NoError(t, s.Close())
	}
	_, err = d.DB.Exec(`INSERT INTO cli_ctrl.snapshot_progress (slot_name, table_name, key_columns, chunk_size)
		VALUES ($1, 'public.items', '{id}', 10), ($2, 'public.items', '{id}', 10), ($2, 'public.other', '{id}', 10)`, app, watch)
	require.NoError(t, err)

	code, out, errOut := runCLI("teardown", "-slot", watch)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, fmt.Sprintf("teardown: slot %s is gone, and so are its 2 snapshot progress rows\n"+
		"teardown: kept schema cli_ctrl and watermark table cli_ctrl.cli_wm (publication %s): other slots of this database may use them: %s; the teardown of the last of them removes them\n",
		watch, pub, app), out)
	require.Equal(t, []string{app}, queryCol(t, d, `SELECT slot_name FROM cli_ctrl.snapshot_progress`))

	_, err = d.DB.Exec(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, testDec)
	require.NoError(t, err)
	code, out, errOut = runCLI("teardown", "-slot", testDec)
	require.Equal(t, 1, code)
	require.Empty(t, out)
	require.Contains(t, errOut, fmt.Sprintf(`dbsync teardown: dbsync: replication slot exists with another plugin, kind or database: slot %q is a logical slot with plugin "test_decoding", not a logical pgoutput slot: dbsync did not create it and does not drop it`, testDec))
	require.Equal(t, []string{testDec}, queryCol(t, d, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, testDec))

	_, err = d.DB.Exec(`CREATE TYPE cli_ctrl.money2 AS (amount numeric, cur text); CREATE TABLE orders (id int PRIMARY KEY, price cli_ctrl.money2)`)
	require.NoError(t, err)
	code, out, errOut = runCLI("teardown")
	require.Equal(t, 1, code)
	require.Empty(t, out)
	require.Contains(t, errOut, "dbsync teardown: dbsync: control schema holds objects dbsync did not create: drop control schema cli_ctrl: type cli_ctrl.money2 depends on schema cli_ctrl")
	require.Equal(t, []string{"id", "price"}, queryCol(t, d,
		`SELECT attname FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`))
	require.Equal(t, []string{"cli_wm"}, queryCol(t, d, `SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'cli_ctrl'`, pub))

	_, err = d.DB.Exec(`DROP TABLE orders; DROP TYPE cli_ctrl.money2`)
	require.NoError(t, err)
	code, out, errOut = runCLI("teardown")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, fmt.Sprintf("teardown: slot %s, watermark table cli_ctrl.cli_wm (publication %s) and schema cli_ctrl are gone\n", app, pub), out)
	require.Empty(t, queryCol(t, d, `SELECT nspname FROM pg_namespace WHERE nspname = 'cli_ctrl'`))
	require.Equal(t, []string{testDec}, queryCol(t, d, `SELECT slot_name FROM pg_replication_slots WHERE database = current_database()`))
	_, err = d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, testDec)
	require.NoError(t, err)
}

// queryCol runs q and returns its single text column.
func queryCol(t *testing.T, d *pgtest.Database, q string, args ...any) []string {
	t.Helper()
	return pgtest.Strings(t, d.DB, q, args...)
}
