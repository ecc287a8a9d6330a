package dbsync

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestTypeCacheAndProgressBoundedUnderChurn: a long run in which tables with their
// own enum types are created, written, snapshotted, and dropped with their types.
// Afterwards the Syncer caches the pg_type rows of the live tables' types only, and
// the snapshot progress table keeps rows of live tables only, not one per table and
// type that ever existed.
func TestTypeCacheAndProgressBoundedUnderChurn(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TYPE keep_mood AS ENUM ('ok')`, `CREATE TABLE keep (id int PRIMARY KEY, m keep_mood)`)
	h := &tableInserts{inserts: map[string]int{}}
	s := newTestSyncer(t, d, ForTables("keep"), WithMessageHandler(h))
	clock := time.Now()
	var clockMu sync.Mutex
	s.tables.mu.Lock()
	s.tables.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	s.tables.mu.Unlock()
	r := runInBackground(s)
	const churn = 50
	for i := range churn {
		tbl, typ := fmt.Sprintf("churn_%d", i), fmt.Sprintf("churn_mood_%d", i)
		execAll(t, d.DB, fmt.Sprintf(`CREATE TYPE %s AS ENUM ('a', 'b')`, typ),
			fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, m %s, ms %s[])`, tbl, typ, typ),
			fmt.Sprintf(`ALTER PUBLICATION %s ADD TABLE %s`, s.Publication(), tbl),
			fmt.Sprintf(`INSERT INTO %s VALUES (1, 'a', '{a}'), (2, 'b', '{b}')`, tbl))
		r.waitFor(t, time.Minute, func() bool { return h.count(tbl) == 2 }, "2 inserts into %s", tbl)
		require.NoError(t, s.Snapshot(t.Context(), tbl))
		execAll(t, d.DB, fmt.Sprintf(`DROP TABLE %s`, tbl), fmt.Sprintf(`DROP TYPE %s`, typ))
		clockMu.Lock()
		clock = clock.Add(time.Minute)
		clockMu.Unlock()
	}
	require.Equal(t, 2*churn, h.refreshs)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	clockMu.Lock()
	clock = clock.Add(24 * time.Hour)
	clockMu.Unlock()
	for round := 1; round <= 2; round++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO keep VALUES (%d, 'ok')`, round))
		r.waitFor(t, time.Minute, func() bool { return h.count("keep") == round }, "insert %d into keep", round)
	}
	require.NoError(t, s.Snapshot(t.Context(), "keep"))
	require.NoError(t, r.stop(t))

	s.tables.mu.Lock()
	var types []string
	for _, ty := range s.tables.types {
		types = append(types, ty.name)
	}
	s.tables.mu.Unlock()
	require.Equal(t, []string{"keep_mood"}, types)
	require.Equal(t, []string{"public.keep"}, queryStrings(t, d.DB,
		`SELECT table_name FROM dbsync_ctrl.snapshot_progress WHERE slot_name = $1 ORDER BY 1`, s.ReplicationSlot()))
}
