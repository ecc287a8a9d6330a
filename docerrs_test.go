package dbsync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestClosedSyncerMethods: after Close every method that talks to the server returns
// ErrClosed naming the call, as Run, GetMessages, Forward and SkipBacklog do, whether
// the Syncer opened its pool (closed with it: the error was database/sql's untyped
// "sql: database is closed") or was given one (WithDB, still open: Teardown dropped
// the slot and control schema of a closed Syncer). Nothing is changed on the server.
func TestClosedSyncerMethods(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE c (id int PRIMARY KEY)`)
	ctx := context.Background()
	for i, own := range []bool{true, false} {
		slot := pgtest.Ident(t, fmt.Sprintf("slot%d", i))
		opts := []SyncerOpt{ForTables("c"), WithReplicationSlot(slot)}
		if !own {
			opts = append(opts, WithDB(d.DB))
		}
		s := newTestSyncer(t, d, opts...)
		require.NoError(t, s.Close())

		calls := []struct {
			name string
			call func() error
		}{
			{"Status", func() error { _, err := s.Status(ctx); return err }},
			{"ConfirmedFlushLSN", func() error { _, err := s.ConfirmedFlushLSN(ctx); return err }},
			{"CurrentFlushLSN", func() error { _, err := s.CurrentFlushLSN(ctx); return err }},
			{"TableInfo", func() error { _, err := s.TableInfo(ctx, "c"); return err }},
			{"CheckReplicaIdentity", func() error { _, err := s.CheckReplicaIdentity(ctx); return err }},
			{"Setup", func() error { return s.Setup(ctx) }},
			{"Teardown", func() error { return s.Teardown(ctx) }},
			{"TeardownWithResult", func() error {
				res, err := s.TeardownWithResult(ctx)
				require.Equal(t, TeardownResult{}, res)
				return err
			}},
		}
		for _, c := range calls {
			err := c.call()
			require.ErrorIs(t, err, ErrClosed, "own pool %v: %s", own, c.name)
			require.Equal(t, fmt.Sprintf("dbsync: syncer is closed: %s after Close; make a new Syncer", c.name), err.Error(), "own pool %v", own)
		}
		require.Equal(t, []string{slot}, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, slot),
			"own pool %v: a closed Syncer does not drop its slot", own)
		require.Equal(t, []string{"dbsync_wmtable"}, queryStrings(t, d.DB, `SELECT tablename FROM pg_tables WHERE schemaname = 'dbsync_ctrl' AND tablename = 'dbsync_wmtable'`),
			"own pool %v: a closed Syncer does not drop the control schema", own)
	}
}

// TestCheckReplicaIdentityPublicationMissing: CheckReplicaIdentity of a Syncer whose
// publication does not exist (WithSetup(false), a mistyped name) returned no problem
// and no error, as if every published table were fine; it is ErrPublicationMissing,
// naming the publication and how to create it.
func TestCheckReplicaIdentityPublicationMissing(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE nokey (v text)`)
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithPublication("no_such_pub"), WithSetup(false))
	require.NoError(t, err)
	defer s.Close()
	problems, err := s.CheckReplicaIdentity(context.Background())
	require.ErrorIs(t, err, ErrPublicationMissing)
	require.Nil(t, problems)
	require.Equal(t, `dbsync: publication does not exist: "no_such_pub": no published table to check; create it (CREATE PUBLICATION "no_such_pub" FOR TABLE ...), or pass ForTables to NewSyncer`, err.Error())

	// An existing publication whose tables are all fine is still no problem at all.
	execAll(t, d.DB, `CREATE TABLE k (id int PRIMARY KEY)`, `CREATE PUBLICATION no_such_pub FOR TABLE k`)
	problems, err = s.CheckReplicaIdentity(context.Background())
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestSelectionWithoutWatermarkTable: Refresh and Snapshot of a Syncer whose control
// schema was never set up (WithSetup(false) on a publication and slot made by hand)
// are ErrConfig, as before, but the message said the watermark table "is not in
// publication" and to run ALTER PUBLICATION ... ADD TABLE of it, which fails: the
// table does not exist. It now says so and that setup creates it.
func TestSelectionWithoutWatermarkTable(t *testing.T) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE w (id int PRIMARY KEY)`, `CREATE PUBLICATION wpub FOR TABLE w`,
		fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput')`, slot))
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithPublication("wpub"), WithReplicationSlot(slot), WithSetup(false),
		WithMessageHandler(DefaultMessageHandler{}))
	require.NoError(t, err)
	defer s.Close()
	want := `dbsync: invalid configuration: the watermark table "dbsync_ctrl"."dbsync_wmtable" does not exist, so no refresh or snapshot window can open: set up the Syncer (Syncer.Setup, or NewSyncer without WithSetup(false)), which creates it in the control schema and adds it to publication "wpub"`
	_, err = s.RefreshContext(context.Background(), "SELECT * FROM w")
	require.ErrorIs(t, err, ErrConfig)
	require.Equal(t, want, err.Error())
	err = s.Snapshot(context.Background(), "w")
	require.ErrorIs(t, err, ErrConfig)
	require.Equal(t, want, err.Error())

	// Setup does what the message says: then a Refresh works.
	require.NoError(t, s.Setup(context.Background()))
	h := newCacheHandler()
	s.MessageHandler = h
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO w VALUES (1), (2)`)
	stats, err := s.RefreshContext(context.Background(), "SELECT * FROM w")
	require.NoError(t, err)
	require.Equal(t, 2, stats.Emitted)
	require.NoError(t, r.stop(t))
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Equal(t, []string{`["1"]`, `["2"]`}, h.refreshKeys)
}

// TestStandbyIsErrInRecovery: on a standby (pg_is_in_recovery(); here a cluster
// restarted with standby.signal) logical decoding is not possible (PostgreSQL 15).
// Setup named it ErrInRecovery, but GetMessages and Run of a Syncer set up before the
// server became a standby returned the unnamed "read pg_current_wal_flush_lsn(): pq:
// recovery is in progress (55000)": the first thing a poll runs is that WAL function,
// which fails so on a standby; so did Status and CurrentFlushLSN. All are
// ErrInRecovery, saying to connect to the primary.
func TestStandbyIsErrInRecovery(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{})
	require.NoError(t, err)
	d := srv.NewDatabase(t)
	t.Cleanup(func() { srv.Stop() }) // before the database's drop, which a standby refuses
	execAll(t, d.DB, `CREATE TABLE sb (id int PRIMARY KEY)`)
	set := newTestSyncer(t, d, ForTables("sb"), WithMessageHandler(DefaultMessageHandler{}))

	require.NoError(t, os.WriteFile(filepath.Join(srv.DataDir(), "standby.signal"), nil, 0o600))
	require.NoError(t, srv.Restart(false))
	var inRecovery bool
	require.NoError(t, d.DB.QueryRow(`SELECT pg_is_in_recovery()`).Scan(&inRecovery))
	require.True(t, inRecovery)

	for _, c := range []struct {
		name string
		call func() error
	}{
		{"NewSyncer", func() error {
			s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("sb"), WithReplicationSlot(pgtest.Ident(t, "other")))
			if err == nil {
				s.Close()
			}
			return err
		}},
		{"Setup", func() error { return set.Setup(context.Background()) }},
		{"GetMessages", func() error { _, err := set.GetMessages(0, false, nil); return err }},
		{"Run", func() error { return set.Run(context.Background()) }},
		{"SkipBacklog", func() error { _, err := set.SkipBacklog(context.Background()); return err }},
		{"Status", func() error { _, err := set.Status(context.Background()); return err }},
		{"CurrentFlushLSN", func() error { _, err := set.CurrentFlushLSN(context.Background()); return err }},
	} {
		err := c.call()
		require.ErrorIs(t, err, ErrInRecovery, c.name)
		require.NotErrorIs(t, err, ErrConfig, c.name)
		require.ErrorContains(t, err, "connect to the primary", c.name)
	}
}

// TestForeignSlotIsErrSlotMismatch: a Syncer made with WithSetup(false) on a slot
// that is not a logical pgoutput slot of its database (a test_decoding slot, a
// physical slot, another database's slot). SkipBacklog advanced the first two to the
// flush LSN (the physical slot of a standby, which then misses that WAL), and Run and
// GetMessages failed with the server's unnamed error (22023 "option proto_version is
// unknown", 55000 "cannot use physical replication slot for logical decoding", 55000
// "was not created in this database"). All are ErrSlotMismatch, as setup and Teardown
// name such a slot, and SkipBacklog moves none of them, nor a two_phase slot.
func TestForeignSlotIsErrSlotMismatch(t *testing.T) {
	d := pgtest.NewDatabase(t)
	d2 := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE f (id int PRIMARY KEY)`, `CREATE PUBLICATION fpub FOR TABLE f`)
	td, ph, other := pgtest.Ident(t, "td"), pgtest.Ident(t, "ph"), pgtest.Ident(t, "other")
	execAll(t, d.DB, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'test_decoding')`, td),
		fmt.Sprintf(`SELECT pg_create_physical_replication_slot('%s', true)`, ph))
	execAll(t, d2.DB, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput')`, other))
	// The physical slot belongs to no database: the databases' cleanup would leave it
	// (holding WAL back, and counted by other tests' checks of pg_replication_slots).
	t.Cleanup(func() {
		for _, slot := range []string{td, ph, other, pgtest.Ident(t, "tp")} {
			d.DB.Exec(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
		}
	})
	position := func(slot string) string {
		var p string
		require.NoError(t, d.DB.QueryRow(`SELECT COALESCE(confirmed_flush_lsn, restart_lsn)::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&p))
		return p
	}
	for _, c := range []struct{ slot, why string }{
		{td, `is a logical slot with plugin "test_decoding"`},
		{ph, `is a physical slot`},
		{other, `belongs to database "` + d2.Name + `", not "` + d.Name + `"`},
	} {
		s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(c.slot), WithPublication("fpub"), WithSetup(false),
			WithMessageHandler(DefaultMessageHandler{}))
		require.NoError(t, err)
		execAll(t, d.DB, `INSERT INTO f SELECT COALESCE(max(id), 0) + 1 FROM f`)
		before := position(c.slot)

		_, err = s.SkipBacklog(context.Background())
		require.ErrorIs(t, err, ErrSlotMismatch, c.slot)
		require.ErrorContains(t, err, c.why, c.slot)
		require.Equal(t, before, position(c.slot), "%s: SkipBacklog must not move a slot dbsync does not use", c.slot)

		_, err = s.GetMessages(0, false, nil)
		require.ErrorIs(t, err, ErrSlotMismatch, c.slot)
		require.ErrorContains(t, err, c.why, c.slot)
		err = s.Run(context.Background())
		require.ErrorIs(t, err, ErrSlotMismatch, c.slot)
		require.ErrorContains(t, err, c.why, c.slot)
		require.Equal(t, before, position(c.slot), c.slot)
		require.NoError(t, s.Close())
	}

	// A two_phase pgoutput slot (a subscription's), which setup refuses too: SkipBacklog
	// does not move it.
	tp := pgtest.Ident(t, "tp")
	execAll(t, d.DB, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput', false, true)`, tp),
		`INSERT INTO f SELECT COALESCE(max(id), 0) + 1 FROM f`)
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(tp), WithPublication("fpub"), WithSetup(false))
	require.NoError(t, err)
	defer s.Close()
	before := position(tp)
	_, err = s.SkipBacklog(context.Background())
	require.ErrorIs(t, err, ErrSlotMismatch)
	require.ErrorContains(t, err, `slot "`+tp+`" was created with two_phase = true`)
	require.Equal(t, before, position(tp))
}

// TestSnapshotWithoutProgressTable: Snapshot when the control schema lacks the
// snapshot progress table (a Syncer made with WithSetup(false) on a control schema
// set up without it, or the table dropped) failed with the server's bare "relation
// ... does not exist (42P01)". It is ErrConfig saying to set up, which creates it,
// and nothing of the table is delivered; after Setup the Snapshot works.
func TestSnapshotWithoutProgressTable(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE sp (id int PRIMARY KEY)`, `INSERT INTO sp VALUES (1), (2)`)
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("sp"), WithMessageHandler(h))
	execAll(t, d.DB, `DROP TABLE dbsync_ctrl.snapshot_progress`)
	r := runInBackground(s)
	err := s.Snapshot(context.Background(), "sp")
	require.ErrorIs(t, err, ErrConfig)
	require.Equal(t, `dbsync: invalid configuration: read snapshot progress of public.sp: the snapshot progress table "dbsync_ctrl"."snapshot_progress" does not exist or lacks columns this version of dbsync uses: set up the Syncer (Syncer.Setup, or NewSyncer without WithSetup(false)), which creates or completes it: pq: relation "dbsync_ctrl.snapshot_progress" does not exist at position 3:6 (42P01)`, err.Error())

	require.NoError(t, s.Setup(context.Background()))
	require.NoError(t, s.Snapshot(context.Background(), "sp"))
	require.NoError(t, r.stop(t))
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Equal(t, []string{`["1"]`, `["2"]`}, h.refreshKeys)
}

// TestTableInfoQuotedNameErrors: a quoted table name is parsed by the server
// (parse_ident). Any error of that query was ErrConfig "table name ...", with the
// cause flattened to text: a cancelled context (or a lost connection) read as a bad
// name, and errors.Is(err, context.Canceled) was false. Only the server's refusal of
// the name (22023) is ErrConfig now, with the server's error in the chain.
func TestTableInfoQuotedNameErrors(t *testing.T) {
	d := pgtest.NewDatabase(t)
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithSetup(false))
	require.NoError(t, err)
	defer s.Close()

	_, err = s.TableInfo(context.Background(), `"unterminated`)
	require.ErrorIs(t, err, ErrConfig)
	code, _, ok := serverError(err)
	require.True(t, ok, "the server's error stays in the chain: %v", err)
	require.Equal(t, "22023", code)
	require.ErrorContains(t, err, `table name "\"unterminated": `)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.TableInfo(ctx, `"Odd"."T"`)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ErrConfig)
}

// TestGetRecordIDGeneratedKeyMessage: GetRecordID of a table whose primary key holds
// a generated column (which pgoutput never sends, so dbsync gives the table no key)
// is ErrNoKey, as documented, but its message said the table "has no primary key or
// replica identity index; add a primary key", which it has. It now says why and what
// to do, as the poll's ErrNoKey for such a table does.
func TestGetRecordIDGeneratedKeyMessage(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE gk (a int NOT NULL, b int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (a, b))`,
		`CREATE TABLE nk (a int)`)
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithSetup(false))
	require.NoError(t, err)
	defer s.Close()
	info, err := s.TableInfo(context.Background(), "gk")
	require.NoError(t, err)
	_, err = info.GetRecordID(StringMap{"a": int32(1), "b": int32(2)})
	require.ErrorIs(t, err, ErrNoKey)
	require.Equal(t, `dbsync: row has no usable key: table public.gk: its key holds generated column "b", which pgoutput never sends; key it by columns that are not generated`, err.Error())

	info, err = s.TableInfo(context.Background(), "nk")
	require.NoError(t, err)
	_, err = info.GetRecordID(StringMap{"a": int32(1)})
	require.ErrorIs(t, err, ErrNoKey)
	require.Equal(t, `dbsync: row has no usable key: table public.nk has no primary key or replica identity index; add a primary key`, err.Error())
}
