package dbsync

import (
	"context"
	"database/sql"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// timedSyncer is a Syncer on s's slot and publication (set up by s, without a
// timeout) whose pool connects as a role of its own carrying statement_timeout
// (ALTER ROLE ... IN DATABASE ... SET), made with WithSetup(false).
func timedSyncer(t *testing.T, d *pgtest.Database, s *Syncer, driver, timeout string, opts ...SyncerOpt) *Syncer {
	t.Helper()
	dsn := settingsRole(t, d, "timed", [][2]string{{"statement_timeout", timeout}})
	db, err := sql.Open(driver, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	var got string
	require.NoError(t, db.QueryRow(`SHOW statement_timeout`).Scan(&got))
	require.Equal(t, timeout, got)
	base := []SyncerOpt{WithDB(db), WithReplicationSlot(s.ReplicationSlot()), WithPublication(s.Publication()), WithSetup(false)}
	ts, err := NewSyncer(append(base, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	return ts
}

// TestSkipBacklogStatementTimeout: SkipBacklog's pg_replication_slot_advance decodes
// the whole backlog, which takes as long as the backlog is big; a statement_timeout
// of dbsync's role cancelled it (57014) where the peek and Forward's advance run with
// statement_timeout off (untimed.go). It now completes, and the pool's sessions keep
// the role's setting.
func TestSkipBacklogStatementTimeout(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
			s := newTestSyncer(t, d, ForTables("items"))
			execAll(t, d.DB, `INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 300000) g`)
			flush := flushLSN(t, d.DB)
			require.NoError(t, s.Close())
			ts := timedSyncer(t, d, s, driver, "50ms")
			lsn, err := ts.SkipBacklog(context.Background())
			require.NoError(t, err)
			want, err := pglogrepl.ParseLSN(flush)
			require.NoError(t, err)
			require.GreaterOrEqual(t, lsn, want, "the slot is past the backlog")
			confirmed, err := ts.ConfirmedFlushLSN(context.Background())
			require.NoError(t, err)
			require.Equal(t, lsn, confirmed)
			var got string
			require.NoError(t, ts.DB().QueryRow(`SHOW statement_timeout`).Scan(&got))
			require.Equal(t, "50ms", got, "the pool's sessions keep the role's setting")
		})
	}
}
