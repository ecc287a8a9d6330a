package dbsync

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// tableInserts counts inserts per table and refresh rows.
type tableInserts struct {
	DefaultMessageHandler
	mu       sync.Mutex
	inserts  map[string]int
	refreshs int
}

func (h *tableInserts) HandleInsertMessage(_ int, _ *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, _ *PGTableInfo) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inserts[reln.RelationName]++
	return nil
}

func (h *tableInserts) HandleRefresh(string, DBItem) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refreshs++
	return nil
}

func (h *tableInserts) count(table string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inserts[table]
}

// relationCacheSizes counts the entries the Syncer keeps per relation.
func (s *Syncer) relationCacheSizes() map[string]int {
	s.tables.mu.Lock()
	out := map[string]int{"shapes": len(s.tables.shapes), "current": len(s.tables.current), "keyChecked": len(s.tables.keyChecked)}
	s.tables.mu.Unlock()
	out["relations"] = len(s.dec.relations) // the poller's goroutine's: read while Run is stopped
	s.win.mu.Lock()
	out["tracked"], out["moved"], out["waiters"], out["pending"], out["sels"] = len(s.win.tracked), len(s.win.moved), len(s.win.waiters), len(s.win.pending), len(s.win.w.sels)
	s.win.mu.Unlock()
	return out
}

// TestRelationCachesBoundedUnderTableChurn: a service whose published tables come
// and go (tables created, added to the publication, written, refreshed, dropped: a
// partition or staging table a day) runs for months. What the Syncer keeps per
// relation must not outlive the relation for good: once the dropped tables have not
// been seen for a while, only the live ones are cached.
func TestRelationCachesBoundedUnderTableChurn(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE keep (id int PRIMARY KEY, v text)`, `CREATE TABLE full_keep (id int, v text)`,
		`ALTER TABLE full_keep REPLICA IDENTITY FULL`)
	h := &tableInserts{inserts: map[string]int{}}
	s := newTestSyncer(t, d, ForTables("keep", "full_keep"), WithMessageHandler(h))
	clock := time.Now()
	var clockMu sync.Mutex
	s.tables.mu.Lock()
	s.tables.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	s.tables.mu.Unlock()
	r := runInBackground(s)
	const churn = 30
	for i := range churn {
		tbl := fmt.Sprintf("churn_%d", i)
		execAll(t, d.DB, fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, v text)`, tbl),
			fmt.Sprintf(`ALTER PUBLICATION %s ADD TABLE %s`, s.Publication(), tbl),
			fmt.Sprintf(`INSERT INTO %s VALUES (1, 'a'), (2, 'b')`, tbl),
			fmt.Sprintf(`ALTER TABLE %s ADD COLUMN extra int`, tbl),
			fmt.Sprintf(`INSERT INTO %s VALUES (3, 'c', 1)`, tbl))
		r.waitFor(t, time.Minute, func() bool { return h.count(tbl) == 3 }, "3 inserts into %s", tbl)
		_, err := s.RefreshContext(t.Context(), fmt.Sprintf(`SELECT * FROM %s WHERE id <= 2`, tbl))
		require.NoError(t, err)
		execAll(t, d.DB, fmt.Sprintf(`DROP TABLE %s`, tbl))
		clockMu.Lock()
		clock = clock.Add(time.Minute)
		clockMu.Unlock()
	}
	require.Equal(t, 2*churn, h.refreshs)
	// The last watermark rows' DELETE delivered before the clock moves on.
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	// The dropped tables' last RELATION messages are long past.
	clockMu.Lock()
	clock = clock.Add(24 * time.Hour)
	clockMu.Unlock()
	for round := 1; round <= 2; round++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO keep VALUES (%d, 'k')`, round), fmt.Sprintf(`INSERT INTO full_keep VALUES (%d, 'k')`, round))
		r.waitFor(t, time.Minute, func() bool { return h.count("keep") == round && h.count("full_keep") == round }, "insert %d into keep", round)
	}
	require.NoError(t, r.stop(t))
	got := s.relationCacheSizes()
	t.Logf("after %d tables churned: %v %v", churn, got, s.cachedRelationNames())
	// keep and full_keep (REPLICA IDENTITY FULL: its key is checked in the catalog);
	// the dropped tables and the watermark table, not written for a day, are gone.
	require.Equal(t, map[string]int{"shapes": 2, "current": 2, "relations": 2, "keyChecked": 1, "tracked": 0, "moved": 0, "waiters": 0, "pending": 0, "sels": 0}, got)
}

func (s *Syncer) cachedRelationNames() []string {
	s.tables.mu.Lock()
	defer s.tables.mu.Unlock()
	var out []string
	for _, info := range s.tables.current {
		out = append(out, info.reln.Namespace+"."+info.reln.RelationName)
	}
	return out
}

// TestDroppedFullIdentityTableKeyAfterIdleGap: a REPLICA IDENTITY FULL table's rows
// are keyed by its primary key, read from the catalog. Changed, then (Run stopped
// for an hour) changed again and dropped: the backlog's changes of the dropped table
// keep the key the Syncer knew it by, not every column (what a description from its
// RELATION message alone gives), so a store keyed by record ID finds its rows. The
// cached description of a relation not seen for a while goes only once the Syncer
// caught up with the WAL, not before a backlog that may still hold its changes.
func TestDroppedFullIdentityTableKeyAfterIdleGap(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE f (id int PRIMARY KEY, v text)`, `ALTER TABLE f REPLICA IDENTITY FULL`)
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("f"), WithMessageHandler(h))
	clock := time.Now()
	var clockMu sync.Mutex
	s.tables.mu.Lock()
	s.tables.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	s.tables.mu.Unlock()
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO f VALUES (1, 'a')`)
	r.waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 1 }, "the insert")
	require.NoError(t, r.stop(t))
	clockMu.Lock()
	clock = clock.Add(time.Hour)
	clockMu.Unlock()
	execAll(t, d.DB, `UPDATE f SET v = 'b' WHERE id = 1`, `DROP TABLE f`)
	r = runInBackground(s)
	r.waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 2 }, "the update")
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{`insert public.f ["1"]`, `update public.f ["1"]`}, h.eventList())
}
