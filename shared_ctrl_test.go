package dbsync

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// refreshCounts counts the refresh rows a cacheHandler got per table and record ID
// ("schema.table record ID").
func refreshCounts(h *cacheHandler) map[string]int {
	out := map[string]int{}
	for _, e := range h.eventList() {
		if rest, ok := strings.CutPrefix(e, "refresh "); ok {
			out[rest]++
		}
	}
	return out
}

// expectedCounts is each row of the tables read n times: "schema.table record ID".
func expectedCounts(t *testing.T, d *pgtest.Database, tables map[string]int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for table, n := range tables {
		for k := range dbRows(t, d.DB, table) {
			out["public."+table+" "+k] = n
		}
	}
	return out
}

// TestSyncersShareWatermarkTable: two Syncers on different slots, one publication and
// one control schema (so one watermark table): each slot carries the other's
// watermark rows. They run Snapshots of the same table and of different tables, and
// Refreshes, at the same time.
//
// Quiet phase (no writer): every selection delivers each of its rows exactly once
// (a window opened or closed by the other Syncer's watermarks would drop or repeat
// rows). Busy phase (writers on both tables): both caches end equal to the tables.
// Then Teardown of one (stopped) keeps the shared objects for the other, which
// snapshots and refreshes on, with writers, and ends exact.
func TestSyncersShareWatermarkTable(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	st := snapTable{toast: true, keys: 700}
	st.create(t, d.DB, 600)
	execAll(t, d.DB, `CREATE TABLE other (id int PRIMARY KEY, v text)`,
		`INSERT INTO other SELECT g, 'seed' FROM generate_series(1, 300) g`)
	const otherKeys = 300

	newSyncer := func(slot string, chunk int) (*Syncer, *cacheHandler, *running) {
		h := newCacheHandler()
		s, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication("shared_pub"),
			ForTables("snap", "other"), WithMessageHandler(h), WithSnapshotChunkSize(chunk),
			WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond))
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		r := runInBackground(s)
		t.Cleanup(r.cancel)
		return s, h, r
	}
	a, ha, ra := newSyncer("shared_a", 37)
	b, hb, _ := newSyncer("shared_b", 53)

	// Quiet phase: A snapshots snap then other; B snapshots snap and refreshes other
	// three times, all at once.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	wg.Add(3)
	go func() { defer wg.Done(); errs <- a.Snapshot(ctx, "snap", "other") }()
	go func() { defer wg.Done(); errs <- b.Snapshot(ctx, "snap") }()
	go func() {
		defer wg.Done()
		for i := 0; i < 3; i++ {
			stats, err := b.RefreshContext(ctx, `SELECT * FROM other`)
			if err == nil && (stats.Selected != otherKeys || stats.Emitted != otherKeys) {
				err = fmt.Errorf("refresh %d: %+v", i, stats)
			}
			errs <- err
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	catchUp(t, a)
	catchUp(t, b)
	require.Equal(t, expectedCounts(t, d, map[string]int{"snap": 1, "other": 1}), refreshCounts(ha))
	require.Equal(t, expectedCounts(t, d, map[string]int{"snap": 1, "other": 3}), refreshCounts(hb))
	for _, h := range []*cacheHandler{ha, hb} {
		require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
	}
	require.Empty(t, mismatches(ha.tableRows("public.other"), dbRows(t, d.DB, "other")))

	// Busy phase: writers on both tables while both snapshot both tables.
	stopSnap := startWriters(t, d.DB, st, 7, 2)
	otherCtx, stopOther := context.WithCancel(ctx)
	otherDone := make(chan struct{})
	go func() {
		defer close(otherDone)
		for i := 0; otherCtx.Err() == nil; i++ {
			d.DB.ExecContext(otherCtx, `UPDATE other SET v = $1 WHERE id = $2`, "w"+strconv.Itoa(i), 1+i*7%300)
		}
	}()
	wg.Add(2)
	errs = make(chan error, 2)
	go func() { defer wg.Done(); errs <- a.Snapshot(ctx, "snap", "other") }()
	go func() { defer wg.Done(); errs <- b.Snapshot(ctx, "other", "snap") }()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Positive(t, stopSnap())
	stopOther()
	<-otherDone
	catchUp(t, a)
	catchUp(t, b)
	for name, h := range map[string]*cacheHandler{"A": ha, "B": hb} {
		require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")), name)
		require.Empty(t, mismatches(h.tableRows("public.other"), dbRows(t, d.DB, "other")), name)
	}

	// Teardown of A (stopped) while B runs: A's slot and progress rows go, the shared
	// objects stay, and B goes on.
	require.NoError(t, ra.stop(t))
	res, err := a.TeardownWithResult(ctx)
	require.NoError(t, err)
	require.True(t, res.SlotDropped)
	require.Equal(t, []string{"shared_b"}, res.OtherSlots)
	require.Equal(t, []string{"shared_b"}, queryStrings(t, d.DB,
		`SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database()`))
	require.Equal(t, []string{"shared_b public.other", "shared_b public.snap"}, queryStrings(t, d.DB,
		`SELECT slot_name || ' ' || table_name FROM dbsync_ctrl.snapshot_progress ORDER BY 1`))
	require.Equal(t, []string{"dbsync_wmtable"}, queryStrings(t, d.DB,
		`SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'shared_pub' AND schemaname = 'dbsync_ctrl'`))
	stopSnap = startWriters(t, d.DB, st, 8, 2)
	require.NoError(t, b.Snapshot(ctx, "snap"))
	_, err = b.RefreshContext(ctx, `SELECT * FROM other`)
	require.NoError(t, err)
	require.Positive(t, stopSnap())
	catchUp(t, b)
	require.Empty(t, mismatches(hb.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
	require.Empty(t, mismatches(hb.tableRows("public.other"), dbRows(t, d.DB, "other")))
	var wm int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM dbsync_ctrl.dbsync_wmtable`).Scan(&wm))
	require.Zero(t, wm, "watermark rows left behind")
}
