package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// TestCtrlNamespacesShareOnePublication: two Syncers with their own control schemas
// (WithCtrlNamespace) and one publication, which then carries both watermark tables
// (and, FOR ALL TABLES, both snapshot_progress tables). Each one's handler gets the
// user's table only: the other's watermark and progress rows (its Refresh and
// Snapshot) are dbsync's, not changes. Each selection delivers its rows exactly once
// to its own Syncer only. The same holds for one control schema and two watermark
// table names (WithWMTable).
func TestCtrlNamespacesShareOnePublication(t *testing.T) {
	for _, c := range []struct {
		allTables      bool
		nsB, wmB, pubB string
	}{
		{false, "ctrl_b", "dbsync_wmtable", "ctrl_b.dbsync_wmtable"},
		{true, "ctrl_b", "dbsync_wmtable", ""},
		{false, "ctrl_a", "wm_b", "ctrl_a.wm_b"},
	} {
		allTables := c.allTables
		t.Run(fmt.Sprintf("all_tables=%v,ctrl_b=%s.%s", allTables, c.nsB, c.wmB), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			ctx := context.Background()
			execAll(t, d.DB, `CREATE TABLE ns_items (id int PRIMARY KEY, v text)`,
				`INSERT INTO ns_items SELECT g, 'seed' FROM generate_series(1, 5) g`)
			if allTables {
				execAll(t, d.DB, `CREATE PUBLICATION ns_pub FOR ALL TABLES`)
			}
			type one struct {
				s *Syncer
				h *recorder
				c *cacheHandler
			}
			start := func(slot, ns, wm string) one {
				h := &recorder{}
				c := newCacheHandler()
				s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication("ns_pub"),
					WithCtrlNamespace(ns), WithWMTable(wm), ForTables("ns_items"), WithMessageHandler(multiHandler{h, c}),
					WithSnapshotChunkSize(2), WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond))
				require.NoError(t, err)
				t.Cleanup(func() { s.Close() })
				r := runInBackground(s)
				t.Cleanup(r.cancel)
				return one{s, h, c}
			}
			a := start("ns_a", "ctrl_a", "dbsync_wmtable")
			b := start("ns_b", c.nsB, c.wmB)
			if !allTables {
				require.Equal(t, []string{"ctrl_a.dbsync_wmtable", c.pubB, "public.ns_items"}, queryStrings(t, d.DB,
					`SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'ns_pub' ORDER BY 1`))
			}

			stats, err := b.s.RefreshContext(ctx, `SELECT * FROM ns_items WHERE id <= 3`)
			require.NoError(t, err)
			require.Equal(t, 3, stats.Emitted)
			require.NoError(t, b.s.Snapshot(ctx, "ns_items"))
			stats, err = a.s.RefreshContext(ctx, `SELECT * FROM ns_items WHERE id = 5`)
			require.NoError(t, err)
			require.Equal(t, 1, stats.Emitted)
			execAll(t, d.DB, `INSERT INTO ns_items VALUES (6, 'new')`)
			catchUp(t, a.s)
			catchUp(t, b.s)

			for name, o := range map[string]one{"A": a, "B": b} {
				require.Equal(t, []string{"BEGIN", "INSERT public.ns_items id=6,v=new", "COMMIT"}, nonEmptyTx(o.h.snapshot()), name)
			}
			require.Equal(t, []string{`refresh public.ns_items ["5"]`, `insert public.ns_items ["6"]`}, a.c.eventList())
			require.Equal(t, []string{`refresh public.ns_items ["1"]`, `refresh public.ns_items ["2"]`, `refresh public.ns_items ["3"]`,
				`refresh public.ns_items ["1"]`, `refresh public.ns_items ["2"]`, `refresh public.ns_items ["3"]`,
				`refresh public.ns_items ["4"]`, `refresh public.ns_items ["5"]`, `insert public.ns_items ["6"]`}, b.c.eventList())
		})
	}
}

// nonEmptyTx drops BEGIN/COMMIT pairs with nothing between them (the transactions of
// dbsync's own watermark rows, which handlers see as empty transactions).
func nonEmptyTx(lines []string) []string {
	var out []string
	for i := 0; i < len(lines); i++ {
		if lines[i] == "BEGIN" && i+1 < len(lines) && lines[i+1] == "COMMIT" {
			i++
			continue
		}
		out = append(out, lines[i])
	}
	return out
}

// multiHandler hands every message to a recorder and a cacheHandler.
type multiHandler struct {
	*recorder
	c *cacheHandler
}

func (m multiHandler) HandleInsertMessage(i int, msg *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, info *PGTableInfo) error {
	if err := m.recorder.HandleInsertMessage(i, msg, r, info); err != nil {
		return err
	}
	return m.c.HandleInsertMessage(i, msg, r, info)
}

func (m multiHandler) HandleDeleteMessage(i int, msg *pglogrepl.DeleteMessage, r *pglogrepl.RelationMessage, info *PGTableInfo) error {
	if err := m.recorder.HandleDeleteMessage(i, msg, r, info); err != nil {
		return err
	}
	return m.c.HandleDeleteMessage(i, msg, r, info)
}

func (m multiHandler) HandleRefresh(key string, item DBItem) error {
	return m.c.HandleRefresh(key, item)
}

// TestTwoSyncersOneSlot: two Syncers (two processes: two pools) configured with the
// same slot name. Only one may drive a slot (README): each would peek from wherever
// the other advanced the slot to, so each consumer would miss what the other took.
// The second NewSyncer sets up fine (the slot is there), but its Run returns
// ErrSlotInUse at once, delivering nothing, and a Teardown of the slot (a third
// process: `dbsync teardown`) is refused with ErrSlotInUse, dropping nothing, while
// the first runs on, delivering every change. Once the first stopped, the second
// runs and delivers what came since.
func TestTwoSyncersOneSlot(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) { testTwoSyncersOneSlot(t, driver) })
	}
}

// testTwoSyncersOneSlot is TestTwoSyncersOneSlot through one driver (each Syncer on a
// pool of its own, as in two processes).
func testTwoSyncersOneSlot(t *testing.T, driver string) {
	d := pgtest.NewDatabase(t)
	pool := func() SyncerOpt {
		db, err := sql.Open(driver, d.DSN())
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		return WithDB(db)
	}
	execAll(t, d.DB, `CREATE TABLE same_slot (id int PRIMARY KEY)`)
	slot := pgtest.Ident(t, "slot")
	inserts := func(h *recorder) []string {
		var got []string
		for _, l := range h.snapshot() {
			if strings.HasPrefix(l, "INSERT") {
				got = append(got, l)
			}
		}
		return got
	}
	want := func(from, to int) []string {
		var out []string
		for i := from; i <= to; i++ {
			out = append(out, fmt.Sprintf("INSERT public.same_slot id=%d", i))
		}
		return out
	}
	ha, hb := &recorder{}, &recorder{}
	a := newTestSyncer(t, d, pool(), WithReplicationSlot(slot), ForTables("same_slot"), WithMessageHandler(ha))
	ra := runInBackground(a)
	execAll(t, d.DB, `INSERT INTO same_slot VALUES (1)`)
	waitCaughtUp(t, d.DB, slot)
	require.True(t, a.IsRunning())

	b := newTestSyncer(t, d, pool(), WithReplicationSlot(slot), ForTables("same_slot"), WithMessageHandler(hb))
	execAll(t, d.DB, `INSERT INTO same_slot VALUES (2)`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.Run(ctx)
	require.ErrorIs(t, err, ErrSlotInUse)
	require.ErrorContains(t, err, fmt.Sprintf("slot %q is driven by a running Syncer", slot))
	require.NoError(t, ctx.Err(), "Run must refuse at once")
	lockPIDs := queryStrings(t, d.DB, `SELECT pid::text FROM pg_locks WHERE locktype = 'advisory' AND granted`)
	require.Len(t, lockPIDs, 1, "A holds the slot lock, and nothing else holds one")
	require.ErrorContains(t, err, "backend PID "+lockPIDs[0]+" holds its lock")
	require.Empty(t, hb.snapshot())

	c, err := NewSyncer(pool(), WithReplicationSlot(slot), WithPublication(b.Publication()), WithSetup(false))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.TeardownWithResult(context.Background())
	require.ErrorIs(t, err, ErrSlotInUse)
	require.ErrorContains(t, err, "backend PID "+lockPIDs[0]+" holds its lock")
	require.True(t, slotExists(t, d.DB, slot))

	for i := 3; i <= 20; i++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO same_slot VALUES (%d)`, i))
	}
	waitCaughtUp(t, d.DB, slot)
	require.True(t, a.IsRunning())
	require.Equal(t, want(1, 20), inserts(ha))
	require.NoError(t, ra.stop(t))

	execAll(t, d.DB, `INSERT INTO same_slot VALUES (21)`)
	rb := runInBackground(b)
	waitCaughtUp(t, d.DB, slot)
	require.NoError(t, rb.stop(t))
	require.Equal(t, want(21, 21), inserts(hb))
}

// TestSyncersSharedCtrlDifferentPublications: two Syncers sharing the control schema
// (one watermark table) but reading different publications, both holding snap and the
// watermark table: each snapshots snap and refreshes it while writers run, at the same
// time. In the quiet start each Refresh delivers every row once to its own Syncer only;
// both caches end equal to the table. Setting up the second while the first runs a
// Snapshot does not disturb it.
func TestSyncersSharedCtrlDifferentPublications(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	st := snapTable{keys: 500}
	st.create(t, d.DB, 400)
	start := func(slot, pub string) (*Syncer, *cacheHandler) {
		h := newCacheHandler()
		s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub),
			ForTables("snap"), WithMessageHandler(h), WithSnapshotChunkSize(41),
			WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond))
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		r := runInBackground(s)
		t.Cleanup(r.cancel)
		return s, h
	}
	a, ha := start("dp_a", "dp_pub_a")
	stats, err := a.RefreshContext(ctx, `SELECT * FROM snap`)
	require.NoError(t, err)
	rows := len(dbRows(t, d.DB, "snap"))
	require.Equal(t, rows, stats.Emitted)

	snapDone := make(chan error, 1)
	go func() { snapDone <- a.Snapshot(ctx, "snap") }()
	b, hb := start("dp_b", "dp_pub_b")
	require.NoError(t, <-snapDone)
	stats, err = b.RefreshContext(ctx, `SELECT * FROM snap`)
	require.NoError(t, err)
	require.Equal(t, rows, stats.Emitted)
	catchUp(t, a)
	catchUp(t, b)
	require.Equal(t, expectedCounts(t, d, map[string]int{"snap": 2}), refreshCounts(ha))
	require.Equal(t, expectedCounts(t, d, map[string]int{"snap": 1}), refreshCounts(hb))

	stop := startWriters(t, d.DB, st, 11, 2)
	errs := make(chan error, 4)
	for _, s := range []*Syncer{a, b} {
		go func(s *Syncer) { errs <- s.Snapshot(ctx, "snap") }(s)
		go func(s *Syncer) { _, err := s.RefreshContext(ctx, `SELECT * FROM snap WHERE id % 3 = 0`); errs <- err }(s)
	}
	for i := 0; i < 4; i++ {
		require.NoError(t, <-errs)
	}
	require.Positive(t, stop())
	catchUp(t, a)
	catchUp(t, b)
	for name, h := range map[string]*cacheHandler{"A": ha, "B": hb} {
		require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")), name)
	}
	require.Zero(t, wmRows(t, d.DB))
}

// TestSlotLockHolderAnyHash: the slot lock's holder is found (and named in
// ErrSlotInUse) whatever the sign of the slot name's 64-bit hash, which PostgreSQL
// splits into pg_locks' classid and objid.
func TestSlotLockHolderAnyHash(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	signs := map[bool]bool{}
	for i := 0; len(signs) < 2; i++ {
		require.Less(t, i, 64, "no slot name with a hash of each sign")
		s := &Syncer{replicationSlot: fmt.Sprintf("lock_slot_%d", i)}
		var negative bool
		require.NoError(t, d.DB.QueryRow(`SELECT `+slotLockKey+` < 0`, s.replicationSlot).Scan(&negative))
		if signs[negative] {
			continue
		}
		signs[negative] = true
		holder, err := d.DB.Conn(ctx)
		require.NoError(t, err)
		other, err := d.DB.Conn(ctx)
		require.NoError(t, err)
		taken, _, err := s.trySlotLock(ctx, holder)
		require.NoError(t, err)
		require.True(t, taken)
		var pid int
		require.NoError(t, holder.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
		taken, got, err := s.trySlotLock(ctx, other)
		require.NoError(t, err)
		require.False(t, taken)
		require.Equal(t, pid, got, "negative hash: %v", negative)
		require.NoError(t, s.unlockSlot(ctx, holder))
		taken, _, err = s.trySlotLock(ctx, other)
		require.NoError(t, err)
		require.True(t, taken)
		require.NoError(t, s.unlockSlot(ctx, other))
		holder.Close()
		other.Close()
	}
}

// TestSlotLockSessionEnded: the session holding Run's slot lock is ended by the
// server (pg_terminate_backend here; a restart or idle_session_timeout alike). Run
// notices within slotLockKeepalive and takes the lock again on a new session, so a
// second Syncer on the slot is still refused; and when another session took the lock
// first, Run stops with ErrSlotInUse naming it instead of driving the slot beside it.
func TestSlotLockSessionEnded(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE lk (id int PRIMARY KEY)`)
	slot := pgtest.Ident(t, "slot")
	prev := slotLockKeepalive
	t.Cleanup(func() { slotLockKeepalive = prev })
	holder := func() string {
		pids := queryStrings(t, d.DB, `SELECT pid::text FROM pg_locks WHERE locktype = 'advisory' AND granted`)
		if len(pids) != 1 {
			return ""
		}
		return pids[0]
	}

	// Re-taken on a new session.
	slotLockKeepalive = 50 * time.Millisecond
	ha := &recorder{}
	a := newTestSyncer(t, d, WithReplicationSlot(slot), ForTables("lk"), WithMessageHandler(ha))
	ra := runInBackground(a)
	waitFor(t, 10*time.Second, func() bool { return holder() != "" }, "A to take the slot lock")
	first := holder()
	execAll(t, d.DB, `SELECT pg_terminate_backend(`+first+`, 10000)`)
	waitFor(t, 10*time.Second, func() bool { h := holder(); return h != "" && h != first }, "A to take the slot lock again")
	b := newTestSyncer(t, d, WithReplicationSlot(slot), ForTables("lk"), WithMessageHandler(&recorder{}))
	require.ErrorIs(t, b.Run(context.Background()), ErrSlotInUse)
	execAll(t, d.DB, `INSERT INTO lk VALUES (1)`)
	waitCaughtUp(t, d.DB, slot)
	require.Equal(t, []string{"BEGIN", "INSERT public.lk id=1", "COMMIT"}, ha.snapshot())
	require.NoError(t, ra.stop(t))
	waitFor(t, 10*time.Second, func() bool { return holder() == "" }, "A to release the slot lock")

	// Taken by another session first: Run stops.
	slotLockKeepalive = 2 * time.Second
	ra = runInBackground(a)
	waitFor(t, 10*time.Second, func() bool { return holder() != "" }, "A to take the slot lock")
	other, err := d.DB.Conn(context.Background())
	require.NoError(t, err)
	defer other.Close()
	var otherPID string
	require.NoError(t, other.QueryRowContext(context.Background(), `SELECT pg_backend_pid()::text`).Scan(&otherPID))
	_, err = other.ExecContext(context.Background(), `SELECT pg_terminate_backend(`+holder()+`, 10000), pg_advisory_lock(`+slotLockKey+`)`, slot)
	require.NoError(t, err)
	err = ra.wait(t, 10*time.Second)
	require.ErrorIs(t, err, ErrSlotInUse)
	require.ErrorContains(t, err, "backend PID "+otherPID+" holds its lock")
}
