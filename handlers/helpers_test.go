package handlers

import (
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// testSyncerOpts are the options of a test's Syncer on d: the connection, a slot and
// publication named after the test, fast polls, delivery to h, then more.
func testSyncerOpts(t *testing.T, d *pgtest.Database, h dbsync.MessageHandler, more ...dbsync.SyncerOpt) []dbsync.SyncerOpt {
	return append([]dbsync.SyncerOpt{dbsync.WithPGConnStr(d.DSN()),
		dbsync.WithReplicationSlot(pgtest.Ident(t, "slot")), dbsync.WithPublication(pgtest.Ident(t, "pub")),
		dbsync.WithMessageHandler(h), dbsync.WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond)}, more...)
}

// newTestSyncer is a Syncer on d for tables (testSyncerOpts), closed when the test ends.
func newTestSyncer(t *testing.T, d *pgtest.Database, h dbsync.MessageHandler, tables ...string) *dbsync.Syncer {
	t.Helper()
	s, err := dbsync.NewSyncer(testSyncerOpts(t, d, h, dbsync.ForTables(tables...))...)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// runInBackground runs s until cancel: Run's result comes on the channel.
func runInBackground(s *dbsync.Syncer) (<-chan error, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	return runErr, cancel
}

// waitCaughtUp waits until slot's confirmed_flush_lsn reaches the WAL flush LSN of
// now; it fails the test when Run returns first (runErr) or after 20 s.
func waitCaughtUp(t *testing.T, d *pgtest.Database, slot string, runErr <-chan error) {
	t.Helper()
	var target string
	require.NoError(t, d.DB.QueryRow(`SELECT pg_current_wal_flush_lsn()::text`).Scan(&target))
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ok bool
		require.NoError(t, d.DB.QueryRow(`SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
			slot, target).Scan(&ok))
		if ok {
			return
		}
		select {
		case err := <-runErr:
			t.Fatalf("syncer stopped early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "catch-up timed out")
	}
}
