package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

func TestSetupWALLevelReplica(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{WALLevel: "replica"})
	require.NoError(t, err)
	defer srv.Stop()
	_, err = NewSyncer(WithPGConnStr(srv.DSN("postgres")), WithReplicationSlot("s"), WithPublication("p"), ForTables("pg_catalog.pg_class"))
	require.ErrorIs(t, err, ErrWALLevel)
	require.Contains(t, err.Error(), "wal_level = logical")
}

func TestSetupRoleWithoutReplication(t *testing.T) {
	d := pgtest.NewDatabase(t)
	role := pgtest.Ident(t, "role")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`,
		fmt.Sprintf(`CREATE ROLE %s LOGIN NOSUPERUSER NOREPLICATION`, pq.QuoteIdentifier(role)),
		fmt.Sprintf(`GRANT ALL ON SCHEMA public TO %s`, pq.QuoteIdentifier(role)))
	t.Cleanup(func() {
		d.DB.Exec(`DROP OWNED BY ` + pq.QuoteIdentifier(role))
		d.DB.Exec(`DROP ROLE ` + pq.QuoteIdentifier(role))
	})
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", d.Server.Host, d.Server.Port, role, d.Name)
	_, err := NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication("p"))
	require.ErrorIs(t, err, ErrReplicationPrivilege)
	require.Contains(t, err.Error(), "REPLICATION")

	// The same mapping applies to the server's own error (42501) from a slot function.
	db, err := sql.Open("postgres", dsn)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(`SELECT pg_create_logical_replication_slot('x', 'pgoutput')`)
	require.ErrorIs(t, classify(err, "create slot"), ErrReplicationPrivilege)
	var pqErr *pq.Error
	require.True(t, errors.As(classify(err, "create slot"), &pqErr))
	require.Equal(t, pq.ErrorCode("42501"), pqErr.Code)
}

func TestSetupMissingPublication(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication("No Such Pub"))
	require.ErrorIs(t, err, ErrPublicationMissing)
	require.Contains(t, err.Error(), `CREATE PUBLICATION "No Such Pub" FOR TABLE`)
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n))
	require.Zero(t, n, "no slot is created when setup fails")

	// An existing publication is used as it is, with the watermark table added.
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`, `CREATE PUBLICATION "No Such Pub" FOR TABLE t`)
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication("No Such Pub"))
	require.NoError(t, err)
	defer s.Close()
	var tables []string
	rows, err := d.DB.Query(`SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'No Such Pub' ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		tables = append(tables, n)
	}
	require.Equal(t, []string{"dbsync_ctrl.dbsync_wmtable", "public.t"}, tables)
}

func TestSetupUnknownTable(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication("p"), ForTables("nope"))
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), `table "nope" does not exist`)
}

func TestSetupSlotMismatch(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'test_decoding')`, slot))
	_, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication("p"), ForTables("t"))
	require.ErrorIs(t, err, ErrSlotMismatch)
	require.Contains(t, err.Error(), `plugin "test_decoding"`)

	// A pgoutput slot of another database is rejected too.
	other := pgtest.NewDatabase(t)
	execAll(t, other.DB, `CREATE TABLE t (id int PRIMARY KEY)`)
	slot2 := pgtest.Ident(t, "slot2")
	execAll(t, d.DB, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput')`, slot2))
	_, err = NewSyncer(WithPGConnStr(other.DSN()), WithReplicationSlot(slot2), WithPublication("p"), ForTables("t"))
	require.ErrorIs(t, err, ErrSlotMismatch)
	require.Contains(t, err.Error(), d.Name)
}

// TestSetupConcurrentAndRepeated: several syncers setting up the same names at once, and
// setup repeated, all succeed and leave exactly one slot, publication and table.
func TestSetupConcurrentAndRepeated(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`)
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub), ForTables("t"))
			errs[i] = err
			if err == nil {
				s.Close()
			}
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub), ForTables("t"))
	require.NoError(t, err)
	s.Close()
	var slots, pubs, pubTables int
	require.NoError(t, d.DB.QueryRow(`SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1),
		(SELECT count(*) FROM pg_publication WHERE pubname = $2),
		(SELECT count(*) FROM pg_publication_tables WHERE pubname = $2)`, slot, pub).Scan(&slots, &pubs, &pubTables))
	require.Equal(t, []int{1, 1, 2}, []int{slots, pubs, pubTables})
}

func TestSlotErrorsAreNamed(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("t"), WithMessageHandler(rec))

	// Another process streams from the slot: 55006 -> ErrSlotInUse, after a few retries
	// (a session that just lost its connection may hold the slot for a moment).
	cmd := exec.Command(d.Server.BinPath("pg_recvlogical"), "-d", d.Server.URL(d.Name), "-S", s.ReplicationSlot(),
		"--start", "-o", "proto_version=1", "-o", "publication_names="+s.Publication(), "-f", os.DevNull)
	require.NoError(t, cmd.Start())
	waitFor(t, 10*time.Second, func() bool {
		var active bool
		require.NoError(t, d.DB.QueryRow(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()).Scan(&active))
		return active
	}, "pg_recvlogical to take the slot")
	execAll(t, d.DB, `INSERT INTO t VALUES (1)`)
	err := s.Run(t.Context())
	cmd.Process.Kill()
	cmd.Wait()
	require.ErrorIs(t, err, ErrSlotInUse)
	require.Empty(t, rec.snapshot())

	_, err = d.DB.Exec(`SELECT pg_replication_slot_advance($1, '0/1')`, "no_such_slot")
	require.ErrorIs(t, classify(err, "advance"), ErrSlotMissing)

	// A dropped slot stops Run with ErrSlotMissing.
	waitFor(t, 10*time.Second, func() bool {
		_, err := d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, s.ReplicationSlot())
		return err == nil
	}, "drop slot")
	err = s.Run(t.Context())
	require.ErrorIs(t, err, ErrSlotMissing)
}

// TestSetupRefusesTemporarySlot: a temporary slot of the configured name belongs to
// another session and vanishes with it (Run would then fail with ErrSlotMissing), so
// setup refuses it, saying why.
func TestSetupRefusesTemporarySlot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	slot := pgtest.Ident(t, "slot")
	ctx := context.Background()
	conn, err := d.DB.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	var pid int
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid() FROM pg_create_logical_replication_slot($1, 'pgoutput', true)`, slot).Scan(&pid))
	_, err = NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(slot), WithPublication(pgtest.Ident(t, "pub")),
		WithMessageHandler(DefaultMessageHandler{}))
	require.ErrorIs(t, err, ErrSlotMismatch)
	require.ErrorContains(t, err, fmt.Sprintf(`slot %q is a temporary slot of another session (backend PID %d): PostgreSQL drops it when that session ends, and the Syncer's position with it; choose another name (WithReplicationSlot / DBSYNC_REPLSLOT)`, slot, pid))
	require.Equal(t, []string{"true"}, queryStrings(t, d.DB, `SELECT temporary::text FROM pg_replication_slots WHERE slot_name = $1`, slot))
}

// TestSetupRedoesCatalogTornDownMidway: a teardown of the last other slot that runs
// between Setup's catalog step and its slot step removes the control schema and the
// watermark table's place in the publication; the slot step, under the lock teardown
// decides under, sees that and sets them up again. Once the slot exists, a teardown
// of another slot keeps them.
func TestSetupRedoesCatalogTornDownMidway(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	slot, other, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "other"), pgtest.Ident(t, "pub")
	ctx := context.Background()
	s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(slot), WithPublication(pub), WithSetup(false))
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.setupCatalog(ctx))
	td, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(other), WithPublication(pub), WithSetup(false))
	require.NoError(t, err)
	defer td.Close()
	res, err := td.TeardownWithResult(ctx)
	require.NoError(t, err)
	require.Equal(t, TeardownResult{WMTableUnpublished: true, CtrlSchemaDropped: true}, res)
	require.False(t, relExists(t, d.DB, "dbsync_ctrl.dbsync_wmtable"))

	require.NoError(t, s.ensureSlot(ctx))
	require.True(t, slotExists(t, d.DB, slot))
	require.True(t, wmPublished(t, d.DB, pub, "dbsync_ctrl", "dbsync_wmtable"))
	require.True(t, relExists(t, d.DB, "dbsync_ctrl.snapshot_progress"))

	res, err = td.TeardownWithResult(ctx)
	require.NoError(t, err)
	require.Equal(t, TeardownResult{OtherSlots: []string{slot}}, res)
	require.True(t, wmPublished(t, d.DB, pub, "dbsync_ctrl", "dbsync_wmtable"))
	execAll(t, d.DB, `SELECT pg_drop_replication_slot('`+slot+`')`)
}
