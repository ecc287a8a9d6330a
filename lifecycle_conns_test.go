package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestConnectionsAndGoroutinesBoundedOverCalls: many polls, Refresh calls (good,
// failing, cancelled while waiting) and Snapshots (finished and cancelled) on a pool
// the caller gave: no connection stays in use afterwards, the pool never grows past a
// few connections, no selection stays registered, and once the Syncer is closed no
// goroutine of it is left.
func TestConnectionsAndGoroutinesBoundedOverCalls(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY, v text)`,
		`INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 200) g`)
	db, err := sql.Open("postgres", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	base := runtime.NumGoroutine()
	h := newCacheHandler()
	s := newTestSyncer(t, d, WithDB(db), ForTables("a"), WithMessageHandler(h), WithSnapshotChunkSize(20))
	r := runInBackground(s)
	maxOpen := 0
	for i := range 40 {
		execAll(t, d.DB, fmt.Sprintf(`UPDATE a SET v = v || 'x' WHERE id %% 40 = %d`, i))
		_, err := s.RefreshContext(context.Background(), fmt.Sprintf(`SELECT * FROM a WHERE id %% 7 = %d`, i%7))
		require.NoError(t, err)
		_, err = s.RefreshContext(context.Background(), `SELECT * FROM a WHERE nosuchcolumn = 1`)
		require.Error(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err = s.RefreshContext(ctx, `SELECT * FROM a`)
		require.ErrorIs(t, err, context.Canceled)
		if i%10 == 0 {
			require.NoError(t, s.Snapshot(context.Background(), "a"))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			_ = s.Snapshot(ctx, "a") // cancelled somewhere along the way, or done
			cancel()
		}
		maxOpen = max(maxOpen, db.Stats().OpenConnections)
	}
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.a"), dbRows(t, d.DB, "a")))
	require.NoError(t, r.stop(t))
	st := db.Stats()
	t.Logf("pool: %d open (peak %d), %d in use", st.OpenConnections, maxOpen, st.InUse)
	require.Zero(t, st.InUse, "connections in use once Run returned and no call is under way")
	sizes := s.relationCacheSizes()
	require.Zero(t, sizes["waiters"]+sizes["pending"]+sizes["sels"], "selections left registered: %v", sizes)
	require.NoError(t, s.Close())
	waitFor(t, 10*time.Second, func() bool { return db.Stats().InUse == 0 }, "no connection in use after Close")
	require.LessOrEqual(t, maxOpen, 8)
	waitGoroutines(t, base)
}
