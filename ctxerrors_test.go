package dbsync

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dbsync/dbsync/internal/pgtest"
)

// TestStatementTimeoutCurrentFlushLSNNamed: CurrentFlushLSN whose statement outlasts
// the statement_timeout of dbsync's role failed with the server's bare 57014 ("read
// pg_current_wal_flush_lsn(): pq: canceling statement due to statement timeout"),
// where every other public call says ErrStatementCancelled and what to do. It is now
// ErrStatementCancelled naming the call, the 57014 still in the chain.
func TestStatementTimeoutCurrentFlushLSNNamed(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			s := newTestSyncer(t, d, ForTables("items"))
			require.NoError(t, s.Close())
			ts := timedSyncer(t, d, s, driver, "200ms")
			// A statement that outlasts the role's statement_timeout (the real one
			// takes microseconds).
			ts.currentFlushLSNSQL = `SELECT pg_catalog.pg_current_wal_flush_lsn() FROM pg_catalog.pg_sleep(2)`
			_, err := ts.CurrentFlushLSN(context.Background())
			require.ErrorIs(t, err, ErrStatementCancelled, "%v", err)
			code, _, ok := serverError(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, "57014", code, "%v", err)
			require.Contains(t, err.Error(), "raise statement_timeout for dbsync's role (ALTER ROLE ... SET statement_timeout", "%v", err)
			require.Contains(t, err.Error(), "call CurrentFlushLSN again", "%v", err)

			ts.currentFlushLSNSQL = ""
			lsn, err := ts.CurrentFlushLSN(context.Background())
			require.NoError(t, err)
			require.NotZero(t, lsn)
		})
	}
}
