package dbsync

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSlotCreationWaitIsLogged: creating the slot waits for a transaction that wrote
// and is still open (in another database of the cluster, too); after
// slotCreationWarnAfter the Syncer logs one warning naming that transaction's PID, and
// setup completes once it commits. A setup that does not wait logs nothing of it.
func TestSlotCreationWaitIsLogged(t *testing.T) {
	d := pgtest.NewDatabase(t)
	other := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE sw (id int PRIMARY KEY)`)
	execAll(t, other.DB, `CREATE TABLE elsewhere (id int)`)

	var quiet pgtest.Buffer
	newTestSyncer(t, d, ForTables("sw"), WithReplicationSlot(pgtest.Ident(t, "quiet")),
		WithLogger(slog.New(slog.NewTextHandler(&quiet, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	require.NotContains(t, quiet.String(), "creating the replication slot")

	ctx := context.Background()
	conn, err := other.DB.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	var pid int
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = conn.ExecContext(ctx, `BEGIN`)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, `INSERT INTO elsewhere VALUES (1)`)
	require.NoError(t, err)

	// The context of NewSyncerContext bounds the wait, and the slot is not left
	// half made.
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = NewSyncerContext(cctx, WithPGConnStr(d.DSN()), ForTables("sw"),
		WithReplicationSlot(pgtest.Ident(t, "bounded")), WithPublication(pgtest.Ident(t, "pub")))
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	t.Logf("setup bounded by its context: %v", err)
	require.Empty(t, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, pgtest.Ident(t, "bounded")))

	var logs pgtest.Buffer
	done := make(chan error, 1)
	go func() {
		s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("sw"),
			WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
			WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	require.Eventually(t, func() bool { return logs.String() != "" }, 15*time.Second, 50*time.Millisecond,
		"no warning while the slot creation waits")
	out := logs.String()
	require.Contains(t, out, "creating the replication slot waits for transactions that were open")
	require.Contains(t, out, "open_transactions=1 ")
	require.Contains(t, out, "prepared_transactions=0 ")
	require.Contains(t, out, "oldest_pid="+strconv.Itoa(pid)+" ")
	require.Contains(t, out, "oldest_database="+other.Name+" ")
	select {
	case err := <-done:
		t.Fatalf("setup finished while the transaction was open: %v", err)
	default:
	}

	_, err = conn.ExecContext(ctx, `COMMIT`)
	require.NoError(t, err)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("setup did not finish after the transaction committed")
	}
	require.Equal(t, out, logs.String(), "one warning, and nothing else logged")
}
