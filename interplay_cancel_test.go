package dbsync

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestGetMessagesCancelledBothWays: a GetMessages whose context ends while another
// session also cancels its peek (both before the driver saw either) returns an error
// that wraps the context's once (the caller ended it: not ErrStatementCancelled,
// which says to call again), and leaves the slot where it was (consume=true
// forwarded nothing); through lib/pq (the pool NewSyncer opens) and pgx.
func TestGetMessagesCancelledBothWays(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
			var opts []SyncerOpt
			if driver == "pgx" {
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				opts = append(opts, WithDB(db))
			}
			s := newTestSyncer(t, d, append(opts, ForTables("items"))...)
			for tx := 0; tx < 40; tx++ {
				_, err := d.DB.Exec(`INSERT INTO items SELECT g, repeat('x', 1000) FROM generate_series($1::int, $1::int + 499) g`, tx*500+1)
				require.NoError(t, err)
			}
			before := queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot())
			held, release := make(chan struct{}), make(chan struct{})
			s.getMessagesRow = func(n int) {
				if n == 1 {
					close(held)
					<-release
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := s.GetMessagesContext(ctx, 0, true, nil)
				done <- err
			}()
			<-held
			require.Equal(t, 1, signalBackends(t, d.DB, "the peek to cancel",
				`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '-- One poll: pgoutput rows%' AND state = 'active'`))
			cancel()
			close(release)
			err := <-done
			s.getMessagesRow = nil
			t.Logf("error: %v", err)
			require.ErrorIs(t, err, context.Canceled)
			require.NotErrorIs(t, err, ErrStatementCancelled)
			// database/sql's own "context canceled" (its rows closed as ctx ended), or
			// the driver's 57014 wrapped in it: the caller's ending comes first, once,
			// after the call's name (withCtxErr).
			require.True(t, strings.HasPrefix(err.Error(), "GetMessages: context canceled"), "%v", err)
			require.Equal(t, 1, strings.Count(err.Error(), "context canceled"), "%v", err)
			require.Equal(t, before, queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()))
		})
	}
}
