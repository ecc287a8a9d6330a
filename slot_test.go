package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// slotExists reports whether a slot exists.
func slotExists(t *testing.T, db *sql.DB, slot string) bool {
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n))
	return n == 1
}

func TestSlotStatus(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, name text)`)
	require.NoError(t, err)
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")

	// Read-only: a Syncer without setup finds no slot and creates nothing.
	ro, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub), WithSetup(false))
	require.NoError(t, err)
	defer ro.Close()
	_, err = ro.Status(context.Background())
	require.ErrorIs(t, err, ErrSlotMissing)
	require.False(t, slotExists(t, d.DB, slot))

	s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(slot), WithPublication(pub),
		WithMessageHandler(DefaultMessageHandler{}), WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond))
	require.NoError(t, err)
	defer s.Close()
	_, err = d.DB.Exec(`INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g`)
	require.NoError(t, err)

	ctx := context.Background()
	st, err := ro.Status(ctx)
	require.NoError(t, err)
	var confirmedText, restartText, cur string
	require.NoError(t, d.DB.QueryRow(`SELECT confirmed_flush_lsn::text, restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1`,
		slot).Scan(&confirmedText, &restartText))
	confirmed, err := pglogrepl.ParseLSN(confirmedText)
	require.NoError(t, err)
	restart, err := pglogrepl.ParseLSN(restartText)
	require.NoError(t, err)
	require.Equal(t, slot, st.Slot)
	require.Equal(t, "pgoutput", st.Plugin)
	require.Equal(t, "logical", st.SlotType)
	require.Equal(t, d.Name, st.Database)
	require.False(t, st.Active)
	require.Equal(t, 0, st.ActivePID)
	require.Equal(t, confirmed, st.ConfirmedFlushLSN)
	require.Equal(t, restart, st.RestartLSN)
	require.Equal(t, "reserved", st.WALStatus)
	require.Equal(t, int64(st.CurrentLSN-st.RestartLSN), st.RetainedWALBytes)
	require.Equal(t, int64(st.FlushLSN-st.ConfirmedFlushLSN), st.LagBytes)
	// 1,000 rows of ~100 bytes were written after the slot: the lag covers them.
	require.Greater(t, st.LagBytes, int64(100_000))
	require.GreaterOrEqual(t, st.CurrentLSN, st.FlushLSN)

	// Catch up: the lag drops to what was flushed since (nothing) and the slot is active while running.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	require.NoError(t, d.DB.QueryRow(`SELECT pg_current_wal_flush_lsn()::text`).Scan(&cur))
	flush, err := pglogrepl.ParseLSN(cur)
	require.NoError(t, err)
	waitFor(t, 10*time.Second, func() bool {
		st, err = ro.Status(ctx)
		return err == nil && st.ConfirmedFlushLSN >= flush
	}, "slot to reach %s", flush)
	cancel()
	require.NoError(t, <-done)
	st, err = ro.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(st.FlushLSN-st.ConfirmedFlushLSN), st.LagBytes)
	require.Less(t, st.LagBytes, int64(100_000))
}

func TestTeardown(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, name text)`)
	require.NoError(t, err)
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
	ns, wm := "ctrl \"odd\" ns", "wm.table"
	s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(slot), WithPublication(pub),
		WithCtrlNamespace(ns), WithWMTable(wm), WithMessageHandler(DefaultMessageHandler{}))
	require.NoError(t, err)
	defer s.Close()
	require.True(t, slotExists(t, d.DB, slot))

	pubTables := func() []string {
		return queryStrings(t, d.DB, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, pub)
	}
	schemaExists := func() bool {
		var ok bool
		require.NoError(t, d.DB.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, ns).Scan(&ok))
		return ok
	}
	require.Equal(t, []string{ns + "." + wm, "public.items"}, pubTables())

	// An active slot is not dropped: hold it with pg_recvlogical (a walsender).
	recv := exec.Command(d.Server.BinPath("pg_recvlogical"), "-d", d.Server.URL(d.Name), "--slot", slot, "--start",
		"-o", "proto_version=1", "-o", "publication_names="+pub, "-f", os.DevNull)
	require.NoError(t, recv.Start())
	defer func() { _ = recv.Process.Kill(); _ = recv.Wait() }()
	waitFor(t, 10*time.Second, func() bool {
		var active bool
		_ = d.DB.QueryRow(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
		return active
	}, "slot to become active")
	ro, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub), WithCtrlNamespace(ns), WithWMTable(wm), WithSetup(false))
	require.NoError(t, err)
	defer ro.Close()
	err = ro.Teardown(context.Background())
	require.ErrorIs(t, err, ErrSlotInUse)
	require.True(t, slotExists(t, d.DB, slot))
	require.NoError(t, recv.Process.Kill())
	_ = recv.Wait()
	waitFor(t, 10*time.Second, func() bool {
		var active bool
		_ = d.DB.QueryRow(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
		return !active
	}, "slot to be released")

	require.NoError(t, ro.Teardown(context.Background()))
	require.False(t, slotExists(t, d.DB, slot))
	require.Equal(t, []string{"public.items"}, pubTables())
	require.False(t, schemaExists())
	// Idempotent.
	require.NoError(t, ro.Teardown(context.Background()))
	_, err = ro.Status(context.Background())
	require.ErrorIs(t, err, ErrSlotMissing)
}

func TestTeardownRefusesForeignObjects(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	require.NoError(t, err)
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
	s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(slot), WithPublication(pub),
		WithCtrlNamespace("myctrl"))
	require.NoError(t, err)
	defer s.Close()
	_, err = d.DB.Exec(`CREATE TABLE myctrl.precious (x int)`)
	require.NoError(t, err)
	err = s.Teardown(context.Background())
	require.ErrorIs(t, err, ErrCtrlSchemaNotEmpty)
	require.ErrorContains(t, err, "precious")
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM myctrl.precious`).Scan(&n))
	require.False(t, slotExists(t, d.DB, slot), "the slot is dropped before the schema check")

	// A publication FOR ALL TABLES is left alone; "public" is never dropped.
	_, err = d.DB.Exec(`CREATE PUBLICATION ` + pub + `_all FOR ALL TABLES`)
	require.NoError(t, err)
	p, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot+"_2"), WithPublication(pub+"_all"),
		WithCtrlNamespace("public"))
	require.NoError(t, err)
	defer p.Close()
	err = p.Teardown(context.Background())
	require.True(t, errors.Is(err, ErrCtrlSchemaNotEmpty), "got %v", err)
	require.False(t, slotExists(t, d.DB, slot+"_2"))
	var wmExists bool
	require.NoError(t, d.DB.QueryRow(`SELECT to_regclass('public.dbsync_wmtable') IS NOT NULL`).Scan(&wmExists))
	require.True(t, wmExists)
}

// TestSlotStatsSpill drains one 5,000-row transaction (~1 MB of changes) through two
// slots: one read over connections whose connection string sets
// logical_decoding_work_mem to its minimum, 64kB, which must spill it to disk, and one
// with the default 64MB, which must not. Status reports both from
// pg_stat_replication_slots; the connection option reaching the decoding sessions is
// what the README's advice for large transactions relies on.
func TestSlotStatsSpill(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, payload text)`)
	require.NoError(t, err)
	pub := pgtest.Ident(t, "pub")
	ctx := context.Background()
	type reader struct {
		s    *Syncer
		slot string
	}
	open := func(name, connStr string) reader {
		slot := pgtest.Ident(t, name)
		s, err := NewSyncer(WithPGConnStr(connStr), ForTables("items"), WithReplicationSlot(slot), WithPublication(pub),
			WithMessageHandler(DefaultMessageHandler{}), WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond))
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		st, err := s.Status(ctx)
		require.NoError(t, err)
		require.Zero(t, st.Stats.SpillTxns, "a new slot has spilled nothing")
		return reader{s, slot}
	}
	small := open("small", d.DSN()+" options='-c logical_decoding_work_mem=64kB'")
	dflt := open("default", d.DSN())

	_, err = d.DB.Exec(`INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g`)
	require.NoError(t, err)
	var cur string
	require.NoError(t, d.DB.QueryRow(`SELECT pg_current_wal_flush_lsn()::text`).Scan(&cur))
	flush, err := pglogrepl.ParseLSN(cur)
	require.NoError(t, err)

	for _, r := range []reader{small, dflt} {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.s.Run(runCtx) }()
		var st SlotStatus
		// The statistics are reported when a decoding call ends; wait for the
		// transaction to be counted, not only delivered.
		waitFor(t, 20*time.Second, func() bool {
			st, err = r.s.Status(ctx)
			return err == nil && st.ConfirmedFlushLSN >= flush && st.Stats.TotalTxns >= 1
		}, "%s to reach %s and count the transaction", r.slot, flush)
		cancel()
		require.NoError(t, <-done, "Run stops cleanly when its context ends")
		if r.slot == small.slot {
			require.GreaterOrEqual(t, st.Stats.SpillTxns, int64(1), "%+v", st.Stats)
			require.GreaterOrEqual(t, st.Stats.SpillCount, st.Stats.SpillTxns, "%+v", st.Stats)
			require.Greater(t, st.Stats.SpillBytes, int64(64<<10), "%+v", st.Stats)
		} else {
			require.Zero(t, st.Stats.SpillTxns, "%+v", st.Stats)
			require.Zero(t, st.Stats.SpillBytes, "%+v", st.Stats)
		}
		require.Zero(t, st.Stats.StreamTxns, "dbsync does not ask pgoutput to stream")
		require.Greater(t, st.Stats.TotalBytes, int64(1<<20), "%+v", st.Stats)
	}
}

// wmPublished tells whether the watermark table ns.wm is in publication pub.
func wmPublished(t *testing.T, db *sql.DB, pub, ns, wm string) bool {
	t.Helper()
	var in bool
	require.NoError(t, db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`,
		pub, ns, wm).Scan(&in))
	return in
}

// relExists tells whether the relation named (SQL syntax) exists.
func relExists(t *testing.T, db *sql.DB, name string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, db.QueryRow(`SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok))
	return ok
}

// TestTeardownKeepsWhatOtherSlotsUse follows docs/CLI.md: a watcher on its own slot
// and the app's publication (`dbsync tail -slot watch_slot -publication ...`), then
// the watcher's teardown. The app's Syncer shares the control schema, the watermark
// table and the publication with it and must go on refreshing: the teardown drops
// only the watcher's slot and its snapshot progress rows. The teardown of the last
// slot then removes the rest; another session's temporary pgoutput slot and a
// test_decoding slot do not keep them.
func TestTeardownKeepsWhatOtherSlotsUse(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`, `INSERT INTO items VALUES (1, 'a')`)
	pub, appSlot, watchSlot := pgtest.Ident(t, "pub"), pgtest.Ident(t, "app"), pgtest.Ident(t, "watch")
	app, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(appSlot), WithPublication(pub),
		WithMessageHandler(DefaultMessageHandler{}), WithPollBackoff(5*time.Millisecond, 2, 50*time.Millisecond))
	require.NoError(t, err)
	defer app.Close()
	r := runInBackground(app)
	defer r.cancel()
	ctx := context.Background()
	st, err := app.RefreshContext(ctx, `SELECT * FROM items`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, st)

	watch, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(watchSlot), WithPublication(pub))
	require.NoError(t, err)
	require.NoError(t, watch.Close())
	execAll(t, d.DB, `INSERT INTO dbsync_ctrl.snapshot_progress (slot_name, table_name, key_columns, chunk_size)
		VALUES ('`+appSlot+`', 'public.items', '{id}', 10), ('`+watchSlot+`', 'public.items', '{id}', 10)`)

	td, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(watchSlot), WithPublication(pub), WithSetup(false))
	require.NoError(t, err)
	defer td.Close()
	res, err := td.TeardownWithResult(ctx)
	require.NoError(t, err)
	require.Equal(t, TeardownResult{SlotDropped: true, OtherSlots: []string{appSlot}, ProgressRowsDeleted: 1}, res)
	require.True(t, res.Kept())
	require.False(t, slotExists(t, d.DB, watchSlot))
	require.True(t, slotExists(t, d.DB, appSlot))
	require.True(t, wmPublished(t, d.DB, pub, "dbsync_ctrl", "dbsync_wmtable"))
	require.Equal(t, []string{appSlot}, queryStrings(t, d.DB, `SELECT slot_name FROM dbsync_ctrl.snapshot_progress`))
	refreshCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err = app.RefreshContext(refreshCtx, `SELECT * FROM items`)
	require.NoError(t, err, "the app's Refresh after the watcher's teardown")
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, st)

	// Again: nothing left to drop, the rest still kept.
	res, err = td.TeardownWithResult(ctx)
	require.NoError(t, err)
	require.Equal(t, TeardownResult{OtherSlots: []string{appSlot}}, res)

	// The app's own teardown, once it stopped, removes everything: slots that cannot
	// be a Syncer's do not count.
	require.NoError(t, r.stop(t))
	conn, err := d.DB.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput', true)`, pgtest.Ident(t, "temp"))
	require.NoError(t, err)
	execAll(t, d.DB, `SELECT pg_create_logical_replication_slot('`+pgtest.Ident(t, "testdec")+`', 'test_decoding')`)
	appTD, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(appSlot), WithPublication(pub), WithSetup(false))
	require.NoError(t, err)
	defer appTD.Close()
	res, err = appTD.TeardownWithResult(ctx)
	require.NoError(t, err)
	require.Equal(t, TeardownResult{SlotDropped: true, WMTableUnpublished: true, CtrlSchemaDropped: true}, res)
	require.False(t, res.Kept())
	require.False(t, slotExists(t, d.DB, appSlot))
	require.True(t, slotExists(t, d.DB, pgtest.Ident(t, "temp")))
	require.True(t, slotExists(t, d.DB, pgtest.Ident(t, "testdec")))
	require.Equal(t, []string{"public.items"}, queryStrings(t, d.DB, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1`, pub))
	require.Empty(t, queryStrings(t, d.DB, `SELECT nspname FROM pg_namespace WHERE nspname = 'dbsync_ctrl'`))
	execAll(t, d.DB, `SELECT pg_drop_replication_slot('`+pgtest.Ident(t, "testdec")+`')`)
}

// TestTeardownRefusesSlotsSetupRefuses: a test_decoding slot, a physical slot and
// another session's temporary pgoutput slot are not slots Setup would use, so
// Teardown does not drop them either (ErrSlotMismatch) and stops there: the control
// schema, which no other slot holds, is left as it was.
func TestTeardownRefusesSlotsSetupRefuses(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	pub, app := pgtest.Ident(t, "pub"), pgtest.Ident(t, "app")
	s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(app), WithPublication(pub))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	execAll(t, d.DB, `SELECT pg_drop_replication_slot('`+app+`')`)

	testDec, physical, temp := pgtest.Ident(t, "testdec"), pgtest.Ident(t, "physical"), pgtest.Ident(t, "temp")
	execAll(t, d.DB, `SELECT pg_create_logical_replication_slot('`+testDec+`', 'test_decoding')`,
		`SELECT pg_create_physical_replication_slot('`+physical+`')`)
	ctx := context.Background()
	conn, err := d.DB.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	var pid int
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid() FROM pg_create_logical_replication_slot($1, 'pgoutput', true)`, temp).Scan(&pid))
	for slot, msg := range map[string]string{
		testDec:  `slot "` + testDec + `" is a logical slot with plugin "test_decoding", not a logical pgoutput slot: dbsync did not create it and does not drop it`,
		physical: `slot "` + physical + `" is a physical slot with plugin "", not a logical pgoutput slot: dbsync did not create it and does not drop it`,
		temp:     fmt.Sprintf(`slot %q is a temporary slot of another session (backend PID %d), which dbsync does not create and does not drop`, temp, pid),
	} {
		td, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub), WithSetup(false))
		require.NoError(t, err)
		res, err := td.TeardownWithResult(ctx)
		require.NoError(t, td.Close())
		require.ErrorIs(t, err, ErrSlotMismatch, slot)
		require.ErrorContains(t, err, msg)
		require.Equal(t, TeardownResult{}, res)
		require.True(t, slotExists(t, d.DB, slot), slot)
		require.True(t, wmPublished(t, d.DB, pub, "dbsync_ctrl", "dbsync_wmtable"), slot)
		require.True(t, relExists(t, d.DB, "dbsync_ctrl.snapshot_progress"), slot)
	}
	execAll(t, d.DB, `SELECT pg_drop_replication_slot('`+testDec+`')`, `SELECT pg_drop_replication_slot('`+physical+`')`)
}

// TestTeardownNeverCascades: the control schema is dropped without CASCADE, so
// objects dbsync did not create stop it (ErrCtrlSchemaNotEmpty, naming them) and
// nothing of the schema goes: a composite type in it that a user's column in another
// schema uses, then a user's view of the watermark table. Once they are gone, the
// teardown completes.
func TestTeardownNeverCascades(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
	s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(slot), WithPublication(pub), WithCtrlNamespace("myctrl"))
	require.NoError(t, err)
	defer s.Close()
	execAll(t, d.DB, `CREATE TYPE myctrl.money2 AS (amount numeric, cur text)`,
		`CREATE TABLE public.orders (id int PRIMARY KEY, price myctrl.money2)`,
		`INSERT INTO orders VALUES (1, ROW(9.5, 'EUR'))`)
	kept := func() {
		t.Helper()
		require.True(t, wmPublished(t, d.DB, pub, "myctrl", "dbsync_wmtable"))
		require.True(t, relExists(t, d.DB, "myctrl.snapshot_progress"))
	}
	ctx := context.Background()
	res, err := s.TeardownWithResult(ctx)
	require.ErrorIs(t, err, ErrCtrlSchemaNotEmpty)
	require.ErrorContains(t, err, "drop control schema myctrl: type myctrl.money2 depends on schema myctrl")
	require.ErrorContains(t, err, "nothing of the control schema was dropped (the slot was): move or drop those objects")
	require.Equal(t, TeardownResult{SlotDropped: true}, res)
	require.False(t, slotExists(t, d.DB, slot))
	require.Equal(t, []string{"id", "price"}, queryStrings(t, d.DB,
		`SELECT attname FROM pg_attribute WHERE attrelid = 'public.orders'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`))
	require.Equal(t, []string{"(9.5,EUR)"}, queryStrings(t, d.DB, `SELECT price::text FROM orders`))
	kept()

	execAll(t, d.DB, `DROP TABLE orders`, `DROP TYPE myctrl.money2`, `CREATE VIEW public.wm_view AS SELECT selection_id FROM myctrl.dbsync_wmtable`)
	res, err = s.TeardownWithResult(ctx)
	require.ErrorIs(t, err, ErrCtrlSchemaNotEmpty)
	require.ErrorContains(t, err, "drop the watermark and snapshot progress tables: view wm_view depends on table myctrl.dbsync_wmtable")
	require.Equal(t, TeardownResult{}, res)
	require.True(t, relExists(t, d.DB, "public.wm_view"))
	kept()

	execAll(t, d.DB, `DROP VIEW wm_view`)
	res, err = s.TeardownWithResult(ctx)
	require.NoError(t, err)
	require.Equal(t, TeardownResult{WMTableUnpublished: true, CtrlSchemaDropped: true}, res)
	require.Empty(t, queryStrings(t, d.DB, `SELECT nspname FROM pg_namespace WHERE nspname = 'myctrl'`))
}
