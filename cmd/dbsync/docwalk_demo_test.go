package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestDemoInterruptedDuringSetup: docs/CLI.md says `demo` interrupted exits 130 and
// still removes what it created. Interrupted while its Syncer's slot creation waits
// for an open transaction (after the demo created and seeded its tables, and setup
// its publication and control schema), it exited 1 or left those behind.
func TestDemoInterruptedDuringSetup(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	// A transaction holding an xid: creating a slot waits until it ends.
	tx, err := d.DB.Begin()
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = tx.Exec(`SELECT pg_current_xact_id()`)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"demo", "-seed-rows", "10", "-duration", "1s"}, &stdout, &stderr) }()
	waitFor(t, 60*time.Second, func() bool {
		var n int
		require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE '%pg_create_logical_replication_slot%' AND pid <> pg_backend_pid()`).Scan(&n))
		return n > 0
	}, "the demo's slot creation waiting")
	cancel()
	var code int
	select {
	case code = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not return after the interrupt")
	}
	require.NoError(t, tx.Rollback())
	require.Equal(t, 130, code, "stderr:\n%s", stderr.String())
	require.Contains(t, stderr.String(), "dbsync demo: interrupted; the demo removed what it had created\n")
	var left []string
	rows, err := d.DB.Query(`SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname IN ('dbsync_demo', 'dbsync_demo_ctrl')
		UNION ALL SELECT 'publication ' || pubname FROM pg_publication WHERE pubname = 'dbsync_demo_pub'
		UNION ALL SELECT 'slot ' || slot_name FROM pg_replication_slots WHERE slot_name = 'dbsync_demo_slot' ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		left = append(left, s)
	}
	require.NoError(t, rows.Err())
	require.Empty(t, left, "what the interrupted demo created is gone")
}

// TestDemoInterruptedMidStatement: interrupted while one of its statements runs (here
// the DROP SCHEMA of an earlier run's leftovers, waiting for a lock), lib/pq ends the
// statement with the server's 57014, not context.Canceled: the demo is still
// interrupted, exit 130 as docs/CLI.md says, not 1.
func TestDemoInterruptedMidStatement(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE SCHEMA dbsync_demo; CREATE TABLE dbsync_demo.held (id int)`)
	require.NoError(t, err)
	tx, err := d.DB.Begin()
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = tx.Exec(`LOCK TABLE dbsync_demo.held IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"demo", "-seed-rows", "0", "-duration", "1s"}, &stdout, &stderr) }()
	waitFor(t, 60*time.Second, func() bool {
		var n int
		require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'DROP SCHEMA IF EXISTS "dbsync_demo" CASCADE' AND wait_event_type = 'Lock'`).Scan(&n))
		return n > 0
	}, "the demo's DROP SCHEMA waiting for the lock")
	cancel()
	var code int
	select {
	case code = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not return after the interrupt")
	}
	require.NoError(t, tx.Rollback())
	require.Equal(t, 130, code, "stderr:\n%s", stderr.String())
	require.Contains(t, stderr.String(), "dbsync demo: interrupted; the demo removed what it had created\n")
}
