package dbsync

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// snapTable describes the table an adversarial snapshot test runs on.
type snapTable struct {
	composite bool
	toast     bool // single-key table only: a body column stored out of line
	keys      int  // key space of the writers (beyond the seeded rows: inserts at the end)
}

func (st snapTable) create(t *testing.T, db *sql.DB, rows int) {
	t.Helper()
	if st.composite {
		// (a, b): 30 b values per a.
		_, err := db.Exec(`CREATE TABLE snap (a int, b text, v text, n int, PRIMARY KEY (a, b))`)
		require.NoError(t, err)
		_, err = db.Exec(`INSERT INTO snap SELECT g / 30, 'k' || lpad((g % 30)::text, 2, '0'), 'seed', g FROM generate_series(0, $1 - 1) g`, rows)
		require.NoError(t, err)
	} else {
		// body is stored out of line: updates that do not set it send it as unchanged
		// TOAST ('u'), which a consumer that never saw the row cannot fill in.
		_, err := db.Exec(`CREATE TABLE snap (id int PRIMARY KEY, v text, n int, body text)`)
		require.NoError(t, err)
		if st.toast {
			_, err = db.Exec(`ALTER TABLE snap ALTER COLUMN body SET STORAGE EXTERNAL`)
			require.NoError(t, err)
		}
		_, err = db.Exec(`INSERT INTO snap SELECT g, 'seed', g, repeat('b', 3000) || g FROM generate_series(1, $1) g`, rows)
		require.NoError(t, err)
	}
	// Gaps in the key space, made before the slot exists.
	_, err := db.Exec(`DELETE FROM snap WHERE n % 17 = 3`)
	require.NoError(t, err)
}

// where returns a WHERE clause and args naming key k of the writers' key space.
func (st snapTable) where(k int) (string, []any) {
	if st.composite {
		return "a = $1 AND b = $2", []any{k / 30, fmt.Sprintf("k%02d", k%30)}
	}
	return "id = $1", []any{k}
}

// writeOnce runs one random transaction of 1-3 statements: update, delete, insert (or
// upsert), or a key-changing update. Conflicts and deadlocks just roll back.
func (st snapTable) writeOnce(ctx context.Context, db *sql.DB, r *rand.Rand, stamp string) bool {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false
	}
	n := 1 + r.Intn(3)
	for i := 0; i < n; i++ {
		k := r.Intn(st.keys)
		w, args := st.where(k)
		var stmt string
		switch op := r.Intn(10); {
		case op < 5:
			stmt = "UPDATE snap SET v = '" + stamp + "', n = n + 1 WHERE " + w
		case op < 7:
			stmt = "DELETE FROM snap WHERE " + w
		case op < 9:
			if st.composite {
				stmt = "INSERT INTO snap VALUES ($1, $2, '" + stamp + "', 0) ON CONFLICT (a, b) DO UPDATE SET v = EXCLUDED.v"
			} else {
				stmt = "INSERT INTO snap VALUES ($1, '" + stamp + "', 0, repeat('i', 3000)) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v"
			}
		default:
			to := r.Intn(st.keys)
			if st.composite {
				stmt = "UPDATE snap SET a = $3, b = $4 WHERE " + w
				args = append(args, to/30, fmt.Sprintf("k%02d", to%30))
			} else {
				stmt = "UPDATE snap SET id = $2 WHERE " + w
				args = append(args, to)
			}
		}
		if _, err := tx.ExecContext(ctx, stmt, args...); err != nil {
			tx.Rollback()
			return false
		}
	}
	return tx.Commit() == nil
}

// startWriters runs n writers until the returned stop is called; stop returns the
// number of committed transactions.
func startWriters(t *testing.T, db *sql.DB, st snapTable, seed int64, n int) func() int64 {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var commits atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(seed*100 + int64(i)))
			for j := 0; ctx.Err() == nil; j++ {
				if st.writeOnce(ctx, db, r, fmt.Sprintf("w%d-%d", i, j)) {
					commits.Add(1)
				}
			}
		}(i)
	}
	var once sync.Once
	stop := func() int64 {
		once.Do(func() { cancel(); wg.Wait() })
		return commits.Load()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// catchUp waits until the slot passed the current WAL flush LSN: every change
// committed so far was delivered.
func catchUp(t *testing.T, s *Syncer) {
	t.Helper()
	ctx := context.Background()
	flush, err := s.CurrentFlushLSN(ctx)
	require.NoError(t, err)
	waitFor(t, 60*time.Second, func() bool {
		c, err := s.ConfirmedFlushLSN(ctx)
		return err == nil && c >= flush
	}, "slot to reach %s", flush)
}

func TestSnapshotConcurrentWriters(t *testing.T) {
	// Through lib/pq and, for two cases, pgx's stdlib driver, whose connection the
	// poller reads directly (peekread.go).
	cases := []struct {
		seed      int64
		chunk     int
		composite bool
		driver    string
		rows      bool // a RefreshRowHandler (rowCache) instead of HandleRefresh
		parallel  int  // chunks read at once (planned key ranges when > 1)
		binary    bool // WithBinary: changes in binary, refresh rows in text
	}{
		{1, 7, false, "postgres", false, 1, false},
		{2, 50, false, "pgx", false, 2, false},
		{3, 333, false, "postgres", false, 1, false},
		{4, 13, true, "pgx", false, 2, false},
		{5, 100, true, "postgres", false, 2, false},
		{6, 50, false, "pgx", true, 1, false},
		{7, 13, true, "postgres", true, 2, false},
		{8, 7, false, "postgres", false, 1, true},
		{9, 13, true, "pgx", false, 2, true},
		{10, 50, false, "postgres", true, 2, true},
	}
	for _, c := range cases {
		name := fmt.Sprintf("seed%d_chunk%d_composite%v_%s_rows%v_parallel%d", c.seed, c.chunk, c.composite, c.driver, c.rows, c.parallel)
		if c.binary {
			name += "_binary"
		}
		t.Run(name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			st := snapTable{composite: c.composite, toast: !c.composite, keys: 1400}
			st.create(t, d.DB, 1200)
			db, err := sql.Open(c.driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := newCacheHandler()
			var mh MessageHandler = h
			rc := &rowCache{cacheHandler: h}
			if c.rows {
				mh = rc
			}
			var lsns []pglogrepl.LSN
			var chunks []SnapshotProgress
			var s *Syncer
			s, _ = startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), mh, ForTables("snap"), WithDB(db),
				WithSnapshotChunkSize(c.chunk), WithSnapshotParallel(c.parallel), WithBinary(c.binary),
				WithSnapshotProgress(func(p SnapshotProgress) {
					chunks = append(chunks, p)
					lsn, err := s.ConfirmedFlushLSN(context.Background())
					require.NoError(t, err)
					lsns = append(lsns, lsn)
				}))
			stop := startWriters(t, d.DB, st, c.seed, 4)
			require.NoError(t, s.Snapshot(context.Background(), "snap"))
			commits := stop()
			catchUp(t, s)
			require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
			if c.rows {
				require.Empty(t, rc.problems)
				require.Greater(t, rc.rows, 500, "refresh rows came through HandleRefreshRow")
			}

			// Not vacuous: writers committed during the snapshot, all chunks ran.
			require.Greater(t, commits, int64(len(chunks)), "writers committed %d transactions over %d chunks", commits, len(chunks))
			last := chunks[len(chunks)-1]
			require.True(t, last.Done)
			var selected, emitted int64
			for _, p := range chunks {
				emitted += int64(p.Emitted)
			}
			selected = last.Rows
			require.Equal(t, int64(len(chunks)), last.Chunks)
			require.GreaterOrEqual(t, selected, int64(500), "the seeded rows minus what writers deleted")
			var reread int
			for _, p := range chunks {
				reread += p.Reread
			}
			require.LessOrEqual(t, emitted, selected+int64(reread))
			t.Logf("%d chunks, %d rows selected, %d emitted (%d re-read), %d writer commits", len(chunks), selected, emitted, reread, commits)
			if c.driver == "pgx" {
				require.NotZero(t, s.pgconnPeeks.Load(), "peeks read on pgx's connection")
				require.GreaterOrEqual(t, s.pgconnSelects.Load(), uint64(len(chunks)), "chunks read on pgx's connection")
			} else {
				require.Zero(t, s.pgconnPeeks.Load())
				require.Zero(t, s.pgconnSelects.Load())
			}
			// The slot advanced while the snapshot ran. With k = chunks in flight,
			// chunk x's high watermark is written after chunk x-k was handed over
			// (so after lsns[x-k] was read), and chunk x+k's after the poll that
			// delivered chunk x's high watermark; that poll forwards the slot past it
			// before the next poll starts. So lsns[x+k] > lsns[x-k].
			k := DefaultSnapshotChunksInFlight
			for i := 2 * k; i < len(lsns); i++ {
				require.Greater(t, lsns[i], lsns[i-2*k], "slot did not advance between chunks %d and %d", i-2*k, i)
			}
		})
	}
}

// TestSnapshotResumesAfterCrash stops a syncer whose handler fails in the middle of a
// chunk's refresh rows (StopOnHandlerError), with writers running, then starts a new
// Syncer on the same slot and the same cache: the snapshot resumes after the last
// chunk whose rows were delivered, leftover watermark rows are ignored, and the
// cache ends exact.
func TestSnapshotResumesAfterCrash(t *testing.T) {
	d := pgtest.NewDatabase(t)
	// No out-of-line body here: rows moved by key-changing updates with unchanged
	// TOAST values during the crashed run are not re-read after a resume (a known
	// limitation, docs/SNAPSHOTS.md).
	st := snapTable{keys: 700}
	st.create(t, d.DB, 600)
	slot := pgtest.Ident(t, "slot")
	h := newCacheHandler()
	const chunk = 25
	h.failRefreshAt = 6*chunk + 10 // inside the 7th chunk (fewer rows are emitted per chunk when writers touch them)
	var reportedA []SnapshotProgress
	a, stopA := startSyncer(t, d.DSN(), slot, h, ForTables("snap"), WithSnapshotChunkSize(chunk),
		WithSnapshotProgress(func(p SnapshotProgress) { reportedA = append(reportedA, p) }))
	stopWriters := startWriters(t, d.DB, st, 9, 2)
	err := a.Snapshot(context.Background(), "snap")
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, stopA(), ErrHandler)

	// Progress: the chunks before the failing one.
	var lastKey pq.StringArray
	var chunksDone, rowsDone int64
	var finished bool
	require.NoError(t, d.DB.QueryRow(`SELECT last_key, chunks_done, rows_done, finished_at IS NOT NULL
		FROM dbsync_ctrl.snapshot_progress WHERE slot_name = $1 AND table_name = 'public.snap'`, slot).
		Scan(&lastKey, &chunksDone, &rowsDone, &finished))
	require.False(t, finished)
	require.GreaterOrEqual(t, chunksDone, int64(1))
	// The stored progress is what A reported for its last delivered chunk; keyset
	// chunks (one at a time, the default) select exactly chunk rows each.
	require.NotEmpty(t, reportedA)
	require.Equal(t, reportedA[len(reportedA)-1].Chunks, chunksDone)
	require.Equal(t, reportedA[len(reportedA)-1].Rows, rowsDone)
	require.Equal(t, chunksDone*chunk, rowsDone)
	require.Len(t, lastKey, 1)
	resumeAfter, err := strconv.Atoi(lastKey[0])
	require.NoError(t, err)
	h.mu.Lock()
	deliveredByA := len(h.refreshKeys)
	h.failRefreshAt = 0
	h.mu.Unlock()

	// Leftovers of a crashed run in the watermark table and the log.
	_, err = d.DB.Exec(`INSERT INTO dbsync_ctrl.dbsync_wmtable (selection_id, wm_type) VALUES ('crashed-1', 'low');
		INSERT INTO dbsync_ctrl.dbsync_wmtable (selection_id, wm_type) VALUES ('crashed-1', 'high')`)
	require.NoError(t, err)

	var resumedFirst []SnapshotProgress
	var byB []string // refresh rows B delivered with its first chunk
	b, _ := startSyncer(t, d.DSN(), slot, h, WithSnapshotChunkSize(chunk),
		WithSnapshotProgress(func(p SnapshotProgress) {
			resumedFirst = append(resumedFirst, p)
			if len(resumedFirst) == 1 {
				h.mu.Lock()
				byB = append(byB, h.refreshKeys[deliveredByA:]...)
				h.mu.Unlock()
			}
		}))
	require.NoError(t, b.Snapshot(context.Background(), "snap"))
	stopWriters()
	catchUp(t, b)
	require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))

	// B continued the count and read only keys after the last finished chunk.
	require.Equal(t, chunksDone+1, resumedFirst[0].Chunks)
	require.NotEmpty(t, byB)
	for _, k := range byB {
		var key []string
		require.NoError(t, json.Unmarshal([]byte(k), &key))
		id, err := strconv.Atoi(key[0])
		require.NoError(t, err)
		require.Greater(t, id, resumeAfter, "B re-read key %s at or before the resume point", k)
	}
	require.NoError(t, d.DB.QueryRow(`SELECT finished_at IS NOT NULL FROM dbsync_ctrl.snapshot_progress
		WHERE slot_name = $1 AND table_name = 'public.snap'`, slot).Scan(&finished))
	require.True(t, finished)
	for _, e := range h.eventList() {
		require.NotContains(t, e, "dbsync_ctrl", "control table rows must not reach handlers")
	}
}

// seqSnapTable creates a database with table snap (id int PRIMARY KEY, v text) holding
// ids step, 2*step, ..., n*step, v 'seed'.
func seqSnapTable(t *testing.T, n, step int) *pgtest.Database {
	t.Helper()
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE snap (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	_, err = d.DB.Exec(`INSERT INTO snap SELECT g * $2, 'seed' FROM generate_series(1, $1) g`, n, step)
	require.NoError(t, err)
	return d
}

// sixRowSnapshot creates table snap with ids 10, 20, ..., 60 and starts a Syncer that
// snapshots it in chunks of 2, 4 in flight, one SELECT at a time unless opts say
// otherwise (so windows and refresh rows come in key order), reporting progress to
// progress.
func sixRowSnapshot(t *testing.T, progress func(SnapshotProgress), opts ...SyncerOpt) (*pgtest.Database, *cacheHandler, *Syncer) {
	t.Helper()
	d := seqSnapTable(t, 6, 10)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, append([]SyncerOpt{ForTables("snap"),
		WithSnapshotChunkSize(2), WithSnapshotChunksInFlight(4), WithSnapshotParallel(1),
		WithSnapshotProgress(progress)}, opts...)...)
	return d, h, s
}

// TestSnapshotChunkRetryRereadsItsKeyRange makes the first of several chunks in
// flight ask for a retry (as a change with an unreadable key would) after a row was
// inserted inside its key range. The retry must read the chunk's key range again —
// not "the next n rows after the previous chunk", which would now stop short of the
// chunk's last row while later chunks already start after it — so every row reaches
// the cache, and the refresh rows come in exactly this order: the later chunks at
// their high watermarks, then the retried chunk.
func TestSnapshotChunkRetryRereadsItsKeyRange(t *testing.T) {
	var chunks []SnapshotProgress
	d, h, s := sixRowSnapshot(t, func(p SnapshotProgress) { chunks = append(chunks, p) })
	var selects, retries atomic.Int32
	s.win.afterSelect = func() {
		if selects.Add(1) == 1 { // chunk 1 selected 10, 20: a row arrives inside its range
			_, err := d.DB.Exec(`INSERT INTO snap VALUES (15, 'new')`)
			require.NoError(t, err)
		}
	}
	s.win.forceRetry = func(id string) bool {
		return strings.HasSuffix(id, "-1") && retries.Add(1) == 1
	}
	require.NoError(t, s.Snapshot(context.Background(), "snap"))
	catchUp(t, s)
	require.Equal(t, int32(1), retries.Load())
	require.Zero(t, s.chunkBounds.Load(), "one SELECT at a time plans no ranges: keyset chunks")
	require.Equal(t, []string{
		`insert public.snap ["15"]`,
		`refresh public.snap ["30"]`, `refresh public.snap ["40"]`, // chunk 2
		`refresh public.snap ["50"]`, `refresh public.snap ["60"]`, // chunk 3 (chunk 4 is empty)
		`refresh public.snap ["10"]`, `refresh public.snap ["15"]`, `refresh public.snap ["20"]`, // chunk 1 again: (, 20]
	}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
	require.Len(t, chunks, 4)
	// Rows counts what the window that delivered selected: 3 for chunk 1's retry.
	require.Equal(t, []int64{3, 5, 7, 7}, []int64{chunks[0].Rows, chunks[1].Rows, chunks[2].Rows, chunks[3].Rows})
	require.Equal(t, 3, chunks[0].Emitted, "the retried window emitted 10, 15, 20")
	require.True(t, chunks[3].Done)
	var last pq.StringArray
	require.NoError(t, d.DB.QueryRow(`SELECT last_key FROM dbsync_ctrl.snapshot_progress WHERE table_name = 'public.snap'`).Scan(&last))
	require.Equal(t, pq.StringArray{"60"}, last)
}

// TestRefreshConcurrentCalls runs Refresh from several goroutines at once, each over
// its own and one shared key range, while writers run: every selection gets its own
// window, and the cache ends exact.
func TestRefreshConcurrentCalls(t *testing.T) {
	d := pgtest.NewDatabase(t)
	st := snapTable{keys: 900}
	st.create(t, d.DB, 800)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("snap"))
	stop := startWriters(t, d.DB, st, 7, 3)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for round := 0; round < 3; round++ {
				// Own range, then the whole table (shared by every goroutine).
				for _, q := range []string{
					fmt.Sprintf(`SELECT * FROM snap WHERE id %% 4 = %d`, g),
					`SELECT * FROM snap`,
				} {
					if _, err := s.RefreshContext(context.Background(), q); err != nil {
						errs <- err
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	commits := stop()
	catchUp(t, s)
	require.Greater(t, commits, int64(10))
	require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
	// Every key in the table was refreshed by some call (the whole-table selections).
	h.mu.Lock()
	n := len(h.refreshKeys)
	h.mu.Unlock()
	require.Greater(t, n, 4*700)
}

// TestRefreshKeepsSelectOrder refreshes 2,000 rows in descending key order: they are
// read in batches and decoded on several goroutines, and must still reach the handler
// exactly in the SELECT's order.
func TestRefreshKeepsSelectOrder(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE ord (id int PRIMARY KEY, v text);
		INSERT INTO ord SELECT g, repeat('x', g % 50) FROM generate_series(1, 2000) g`)
	require.NoError(t, err)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("ord"))
	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM ord ORDER BY id DESC`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 2000, Emitted: 2000}, stats)
	want := make([]string, 0, 2000)
	for id := 2000; id >= 1; id-- {
		want = append(want, fmt.Sprintf(`["%d"]`, id))
	}
	h.mu.Lock()
	got := append([]string(nil), h.refreshKeys...)
	h.mu.Unlock()
	require.Equal(t, want, got)
}

// TestSnapshotChunksReadInParallel requires two chunk SELECTs to be open at once with
// WithSnapshotParallel(2): the first chunk to finish its SELECT holds its window open
// (before its high watermark) until a second chunk's SELECT finished too. One SELECT
// at a time never gets there and the test fails on the wait. Every row must still
// reach the cache exactly once per chunk, and the progress must end at the last key.
func TestSnapshotChunksReadInParallel(t *testing.T) {
	d := seqSnapTable(t, 100, 1)
	h := newCacheHandler()
	var chunks []SnapshotProgress
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("snap"), WithSnapshotChunkSize(10),
		WithSnapshotParallel(2), WithSnapshotProgress(func(p SnapshotProgress) { chunks = append(chunks, p) }))
	var selects atomic.Int32
	second := make(chan struct{})
	overlapped := make(chan bool, 1)
	s.win.afterSelect = func() {
		switch selects.Add(1) {
		case 1:
			select {
			case <-second:
				overlapped <- true
			case <-time.After(10 * time.Second):
				overlapped <- false
			}
		case 2:
			close(second)
		}
	}
	require.NoError(t, s.Snapshot(context.Background(), "snap"))
	require.True(t, <-overlapped, "a second chunk's SELECT did not run while the first chunk's window was open")
	require.Equal(t, uint64(11), s.chunkBounds.Load(), "ten bounds, then none after 100")
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
	// Ten full ranges, (0, 10] .. (90, 100], then the open-ended range after 100.
	require.Len(t, chunks, 11)
	for i, p := range chunks {
		require.Equal(t, int64(i+1), p.Chunks)
		require.Equal(t, int64(min(10*(i+1), 100)), p.Rows, "chunk %d", i+1)
		require.Equal(t, i == 10, p.Done)
	}
	refreshes := 0
	seen := map[string]bool{}
	for _, e := range h.eventList() {
		require.True(t, strings.HasPrefix(e, "refresh public.snap "), e)
		require.False(t, seen[e], "refreshed twice: %s", e)
		seen[e] = true
		refreshes++
	}
	require.Equal(t, 100, refreshes)
	var last pq.StringArray
	require.NoError(t, d.DB.QueryRow(`SELECT last_key FROM dbsync_ctrl.snapshot_progress WHERE table_name = 'public.snap'`).Scan(&last))
	require.Equal(t, pq.StringArray{"100"}, last)
}

// TestChunkBound plans chunk ranges over a composite key of awkward types (timestamptz,
// text with quotes, spaces and non-ASCII letters, numeric): each bound is the n-th
// key after the previous one, as text that casts back to the same key, the ranges
// cover every row exactly once, and the last call returns nil. A snapshot over the
// table then delivers every row.
func TestChunkBound(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE odd (at timestamptz, name text, n numeric, v int, PRIMARY KEY (at, name, n));
		INSERT INTO odd SELECT '2026-01-01 00:00:00.123456+00'::timestamptz + (g / 7) * interval '1 hour',
			CASE g % 3 WHEN 0 THEN 'it''s ' || g WHEN 1 THEN 'Ölçü "' || g || '"' ELSE ' lead' || g END,
			(g % 5) + 0.25, g
		FROM generate_series(1, 47) g`)
	require.NoError(t, err)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("odd"), WithSnapshotChunkSize(5))
	ctx := context.Background()
	info, err := s.tableInfoByName(ctx, qualifiedTable{schema: "public", name: "odd"})
	require.NoError(t, err)

	// The rows (their v) in key order, as the server sorts them.
	order := queryStrings(t, d.DB, `SELECT v::text FROM odd ORDER BY at, name, n`)
	require.Len(t, order, 47)

	var after []string
	covered := 0
	for i := 0; ; i++ {
		bound, err := s.chunkBound(ctx, info, after, 5)
		require.NoError(t, err)
		if bound == nil {
			require.Equal(t, 9, i, "47 rows: nine full chunks of 5, then the open-ended rest")
			break
		}
		require.Len(t, bound, 3)
		// The bound casts back to exactly one row: the (5i+5)-th in key order.
		var v string
		var inRange int
		require.NoError(t, d.DB.QueryRow(`SELECT v::text FROM odd WHERE (at, name, n) = (CAST($1 AS timestamptz), CAST($2 AS text), CAST($3 AS numeric))`,
			bound[0], bound[1], bound[2]).Scan(&v))
		require.Equal(t, order[5*i+4], v, "bound of chunk %d", i+1)
		q := `SELECT count(*) FROM odd WHERE (at, name, n) <= (CAST($1 AS timestamptz), CAST($2 AS text), CAST($3 AS numeric))`
		args := []any{bound[0], bound[1], bound[2]}
		if after != nil {
			q += ` AND (at, name, n) > (CAST($4 AS timestamptz), CAST($5 AS text), CAST($6 AS numeric))`
			args = append(args, after[0], after[1], after[2])
		}
		require.NoError(t, d.DB.QueryRow(q, args...).Scan(&inRange))
		require.Equal(t, 5, inRange, "rows in chunk %d's range", i+1)
		covered += inRange
		after = bound
	}
	require.Equal(t, 45, covered)

	require.NoError(t, s.Snapshot(ctx, "odd"))
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.odd"), dbRows(t, d.DB, "odd")))
	require.Len(t, h.eventList(), 47)
}

// TestSnapshotRangeFilledAfterPlanning inserts 18 rows into the third chunk's key
// range after every range was planned and before that chunk's SELECT: with two chunks
// read at once, the first two SELECTs hold both slots, and the first of them to finish
// inserts the rows while the second waits (both before their high watermarks). A
// planned range is read with at most twice the chunk size, so the range is finished
// by further chunks of its rest, settled before the next range: exact progress per
// chunk, every row refreshed once, the cache exact.
func TestSnapshotRangeFilledAfterPlanning(t *testing.T) {
	var chunks []SnapshotProgress
	var lastKeys []string
	var db *sql.DB
	d, h, s := sixRowSnapshot(t, func(p SnapshotProgress) {
		chunks = append(chunks, p)
		var last pq.StringArray
		require.NoError(t, db.QueryRow(`SELECT last_key FROM dbsync_ctrl.snapshot_progress WHERE table_name = 'public.snap'`).Scan(&last))
		lastKeys = append(lastKeys, strings.Join(last, ","))
	}, WithSnapshotParallel(2))
	db = d.DB
	var selects atomic.Int32
	inserted := make(chan struct{})
	s.win.afterSelect = func() {
		// (This runs on a chunk's goroutine: no FailNow here.)
		switch selects.Add(1) {
		case 1:
			// Chunks (, 20] and (20, 40] were selected (this one, and the other
			// holds the second slot); (40, 60] and the open-ended rest are
			// planned (four bounds asked) but wait for a slot.
			defer close(inserted)
			for start := time.Now(); s.chunkBounds.Load() < 4; time.Sleep(5 * time.Millisecond) {
				if time.Since(start) > 10*time.Second {
					t.Error("four ranges were not planned within 10 s")
					return
				}
			}
			if _, err := db.Exec(`INSERT INTO snap SELECT g, 'late' FROM generate_series(41, 59) g WHERE g <> 50`); err != nil {
				t.Error(err)
			}
		case 2:
			<-inserted
		}
	}
	require.NoError(t, s.Snapshot(context.Background(), "snap"))
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))

	// (, 20]: 2 rows; (20, 40]: 2; (40, 60] holds 20: read 4 at a time (twice the
	// chunk size) up to 44, 48, 52, 56, 60, then an empty rest (60, 60]; (60, ): 0.
	var rows []int64
	for _, p := range chunks {
		rows = append(rows, p.Rows)
	}
	require.Equal(t, []int64{2, 4, 8, 12, 16, 20, 24, 24, 24}, rows)
	require.Equal(t, []string{"20", "40", "44", "48", "52", "56", "60", "60", "60"}, lastKeys)
	require.True(t, chunks[len(chunks)-1].Done)
	refreshed := map[string]int{}
	for _, e := range h.eventList() {
		if k, ok := strings.CutPrefix(e, "refresh public.snap "); ok {
			refreshed[k]++
		}
	}
	require.Len(t, refreshed, 24)
	for k, n := range refreshed {
		require.Equal(t, 1, n, "key %s refreshed %d times", k, n)
	}
}

// TestSnapshotOnSmallPool runs a snapshot with two chunks read at once, with
// writers, through a *sql.DB of at most two connections, which the poller shares with
// the chunk SELECTs, the range planning and the watermark writes: nobody holds a
// connection while waiting for another, so it completes (within 60 s), and the cache
// ends exact.
func TestSnapshotOnSmallPool(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			st := snapTable{keys: 500}
			st.create(t, d.DB, 400)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			db.SetMaxOpenConns(2)
			h := newCacheHandler()
			var chunks int
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("snap"), WithSnapshotChunkSize(20), WithSnapshotParallel(2),
				WithSnapshotProgress(func(SnapshotProgress) { chunks++ }))
			stopWriters := startWriters(t, d.DB, st, 5, 2)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			require.NoError(t, s.Snapshot(ctx, "snap"))
			commits := stopWriters()
			catchUp(t, s)
			require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
			require.Greater(t, chunks, 10)
			require.Positive(t, commits)
		})
	}
}

// TestSnapshotCancelledMidway cancels a snapshot's context after its third chunk, with
// further chunks being opened two at a time: Snapshot returns the context's error
// only after every chunk it started was closed (no selection left registered, no
// watermark row left in the table), and a second Snapshot resumes after the third
// chunk's range and completes the table.
func TestSnapshotCancelledMidway(t *testing.T) {
	d := seqSnapTable(t, 300, 1)
	h := newCacheHandler()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chunks []SnapshotProgress
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("snap"), WithSnapshotChunkSize(10),
		WithSnapshotParallel(2), WithSnapshotProgress(func(p SnapshotProgress) {
			chunks = append(chunks, p)
			if p.Chunks == 3 {
				cancel()
			}
		}))
	err := s.Snapshot(ctx, "snap")
	require.ErrorIs(t, err, context.Canceled)
	require.Len(t, chunks, 3)
	s.win.mu.Lock()
	registered := len(s.win.waiters)
	s.win.mu.Unlock()
	require.Zero(t, registered, "selections left registered")
	var wmRows int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM dbsync_ctrl.dbsync_wmtable`).Scan(&wmRows))
	require.Zero(t, wmRows, "watermark rows left behind")
	var last pq.StringArray
	require.NoError(t, d.DB.QueryRow(`SELECT last_key FROM dbsync_ctrl.snapshot_progress WHERE table_name = 'public.snap'`).Scan(&last))
	require.Equal(t, pq.StringArray{"30"}, last)

	chunks = nil
	require.NoError(t, s.Snapshot(context.Background(), "snap"))
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
	// Resumed after 30: chunks 4 .. 30, then the open-ended range after 300.
	require.Len(t, chunks, 28)
	require.Equal(t, int64(4), chunks[0].Chunks)
	require.Equal(t, int64(300), chunks[len(chunks)-1].Rows)
	require.True(t, chunks[len(chunks)-1].Done)
}

// TestSnapshotLeavesOutGeneratedColumns: PostgreSQL 15's pgoutput leaves stored
// generated columns out of RELATION messages and tuples, so a change of table gen
// carries id and n, never g. Refresh rows must carry exactly the same columns: a
// cache that replaces rows on update would otherwise lose g at the first update, and
// one that merges would keep a stale g forever. A table whose key holds a generated
// column cannot be matched with its changes at all (they carry no key): Snapshot
// refuses it, and its changes have no record ID rather than one made of the other
// key columns.
func TestSnapshotLeavesOutGeneratedColumns(t *testing.T) {
	ctx := context.Background()
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE gen (id int PRIMARY KEY, n int, g int GENERATED ALWAYS AS (n * 2) STORED)`,
		`INSERT INTO gen (id, n) SELECT i, i FROM generate_series(1, 3) i`,
		`CREATE TABLE gkey (a int, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (g))`,
		`CREATE TABLE gkey2 (tenant text, email text, g text GENERATED ALWAYS AS (lower(email)) STORED, PRIMARY KEY (tenant, g))`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("gen", "gkey", "gkey2"), WithSnapshotChunkSize(2))

	// The table's own columns, as selections use them, are the columns changes have.
	info, err := s.TableInfo(ctx, "gen")
	require.NoError(t, err)
	var names []string
	for _, c := range info.Columns {
		names = append(names, c.ColumnName)
	}
	require.Equal(t, []string{"id", "n"}, names)
	require.NotContains(t, info.ColInfo, "g")
	require.Equal(t, []string{"id"}, info.PrimaryKey)
	require.NotContains(t, info.SelectList(), `"g"`)

	execAll(t, d.DB, `INSERT INTO gen (id, n) VALUES (4, 4)`)
	waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 1 }, "the insert")
	require.Equal(t, StringMap{"id": int32(4), "n": int32(4)}, h.tableRows("public.gen")[`["4"]`], "pgoutput sends no g")

	require.NoError(t, s.Snapshot(ctx, "gen"))
	require.Equal(t, map[string]StringMap{
		`["1"]`: {"id": int32(1), "n": int32(1)},
		`["2"]`: {"id": int32(2), "n": int32(2)},
		`["3"]`: {"id": int32(3), "n": int32(3)},
		`["4"]`: {"id": int32(4), "n": int32(4)},
	}, h.tableRows("public.gen"), "refresh rows have the change columns, no g")

	execAll(t, d.DB, `UPDATE gen SET n = 10 WHERE id = 1`)
	catchUp(t, s)
	require.Equal(t, []string{
		`insert public.gen ["4"]`,
		`refresh public.gen ["1"]`, `refresh public.gen ["2"]`, // chunk 1
		`refresh public.gen ["3"]`, `refresh public.gen ["4"]`, // chunk 2 (chunk 3 is empty)
		`update public.gen ["1"]`,
	}, h.eventList())
	require.Equal(t, map[string]StringMap{
		`["1"]`: {"id": int32(1), "n": int32(10)},
		`["2"]`: {"id": int32(2), "n": int32(2)},
		`["3"]`: {"id": int32(3), "n": int32(3)},
		`["4"]`: {"id": int32(4), "n": int32(4)},
	}, h.tableRows("public.gen"))
	require.Empty(t, mismatches(h.tableRows("public.gen"), dbRows(t, d.DB, "gen")))

	// Generated key columns: refused up front, with the reason.
	for _, tbl := range []string{"gkey", "gkey2"} {
		err := s.Snapshot(ctx, tbl)
		require.ErrorIs(t, err, ErrNoPrimaryKey, tbl)
		require.ErrorContains(t, err, `key column "g" of public.`+tbl+` is a generated column`)
		_, err = s.RefreshContext(ctx, `SELECT * FROM `+tbl)
		require.ErrorIs(t, err, ErrNoPrimaryKey, tbl)
	}
	// Changes of such a table carry only tenant of the key (tenant, g): not a key,
	// so no record ID, rather than one that two rows share.
	execAll(t, d.DB, `INSERT INTO gkey2 (tenant, email) VALUES ('t1', 'A@x'), ('t1', 'b@x')`)
	catchUp(t, s)
	require.Equal(t, []string{`insert public.gkey2 `, `insert public.gkey2 `}, h.eventList()[6:])
	info, err = s.TableInfo(ctx, "gkey2")
	require.NoError(t, err)
	require.Empty(t, info.PrimaryKey)
}

// movedKeyCase is a table for TestSnapshotRereadsMovedRows: six rows whose keys sort
// as listed, a body stored out of line, and a key-changing UPDATE that moves the
// fifth row to a key before the first without touching body.
type movedKeyCase struct {
	name    string
	ddl     string   // CREATE TABLE moved (<key columns>, n int, body text, PRIMARY KEY (...))
	seed    string   // INSERT of the six rows, body repeat('b', 3000) || i
	move    string   // the key-changing UPDATE of the fifth row
	ids     []string // record IDs of rows 1-6, in key order
	movedTo string   // the fifth row's record ID after move
	driver  string
	binary  bool // pgoutput sends values in binary (WithBinary)
}

var movedKeyCases = []movedKeyCase{
	{
		name: "uuid", ddl: `CREATE TABLE moved (id uuid PRIMARY KEY, n int, body text)`,
		seed: `INSERT INTO moved SELECT (i || '0000000-0000-4000-8000-000000000000')::uuid, i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET id = '05000000-0000-4000-8000-000000000000' WHERE id = '50000000-0000-4000-8000-000000000000'`,
		ids: []string{`["10000000-0000-4000-8000-000000000000"]`, `["20000000-0000-4000-8000-000000000000"]`,
			`["30000000-0000-4000-8000-000000000000"]`, `["40000000-0000-4000-8000-000000000000"]`,
			`["50000000-0000-4000-8000-000000000000"]`, `["60000000-0000-4000-8000-000000000000"]`},
		movedTo: `["05000000-0000-4000-8000-000000000000"]`,
	},
	{
		// A composite key of non-text types; timestamptz text depends on the session's
		// TimeZone, numeric's on the value's scale.
		name: "numeric_timestamptz", ddl: `CREATE TABLE moved (a numeric, ts timestamptz, n int, body text, PRIMARY KEY (a, ts))`,
		seed: `INSERT INTO moved SELECT i + 0.50, '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 hour 0.000001 sec', i, repeat('b', 3000) || i FROM generate_series(1, 6) i`,
		move: `UPDATE moved SET a = 0.25, ts = '2024-06-01 12:00:00.123456+02' WHERE a = 5.5`,
		ids: []string{`["1.50","2024-01-01T01:00:00.000001Z"]`, `["2.50","2024-01-01T02:00:00.000002Z"]`,
			`["3.50","2024-01-01T03:00:00.000003Z"]`, `["4.50","2024-01-01T04:00:00.000004Z"]`,
			`["5.50","2024-01-01T05:00:00.000005Z"]`, `["6.50","2024-01-01T06:00:00.000006Z"]`},
		movedTo: `["0.25","2024-06-01T10:00:00.123456Z"]`,
	},
}

// TestSnapshotRereadsMovedRows: while chunk 1 of a snapshot (chunks of 2) is in its
// window, an UPDATE moves the fifth row, not read yet, to a key before the first
// chunk without touching its out-of-line body. The update reaches the consumer with
// body unchanged ('u') for a row it never saw, no chunk reads the row (its old key is
// gone, its new key's chunk was read), so after the last chunk the Snapshot reads it
// again by its new key — whatever the key's types, through lib/pq (database/sql) and
// pgx's connection, with text or binary pgoutput values. The watch keeps the key as
// PostgreSQL printed it: its decoded value (a uuid is a [16]byte) is no query
// argument lib/pq takes.
func TestSnapshotRereadsMovedRows(t *testing.T) {
	var cases []movedKeyCase
	for _, c := range movedKeyCases {
		for _, v := range []struct {
			driver string
			binary bool
		}{{"postgres", false}, {"pgx", false}, {"postgres", true}} {
			if v.binary && c.name == "uuid" {
				continue
			}
			c.driver, c.binary = v.driver, v.binary
			cases = append(cases, c)
		}
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s_%s_binary%v", c.name, c.driver, c.binary), func(t *testing.T) {
			d, h, s := movedRowSnapshot(t, c)
			var chunks []SnapshotProgress
			s.SnapshotProgress = func(p SnapshotProgress) { chunks = append(chunks, p) }
			require.NoError(t, s.Snapshot(context.Background(), "moved"))
			catchUp(t, s)
			require.Equal(t, movedRowEvents(c), h.eventList())
			requireMovedRowsExact(t, d, h, c)
			require.Len(t, chunks, 3)
			require.True(t, chunks[2].Done)
			require.Equal(t, 1, chunks[2].Reread)
			requireSnapshotFinished(t, d, true)
			if c.driver == "pgx" {
				require.Equal(t, uint64(4), s.pgconnSelects.Load(), "3 chunks and the re-read on pgx's connection")
			}
		})
	}
}

// movedRowEvents is what a movedRowSnapshot's Snapshot delivers: the moved row's
// update, the chunks' rows (the moved row is not among them), then the moved row read
// again after the last chunk.
func movedRowEvents(c movedKeyCase) []string {
	return []string{
		`update public.moved ` + c.movedTo,
		`refresh public.moved ` + c.ids[0], `refresh public.moved ` + c.ids[1], // chunk 1
		`refresh public.moved ` + c.ids[2], `refresh public.moved ` + c.ids[3], // chunk 2
		`refresh public.moved ` + c.ids[5],  // chunk 3 (one row: the last)
		`refresh public.moved ` + c.movedTo, // read again after the last chunk
	}
}

// movedRowSnapshot creates c's table and a Syncer (chunks of 2, one SELECT at a time)
// whose first selection moves the fifth row (c.move) between its SELECT and its high
// watermark.
func movedRowSnapshot(t *testing.T, c movedKeyCase) (*pgtest.Database, *cacheHandler, *Syncer) {
	t.Helper()
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, c.ddl, `ALTER TABLE moved ALTER COLUMN body SET STORAGE EXTERNAL`, c.seed)
	db, err := sql.Open(c.driver, d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("moved"), WithDB(db), WithBinary(c.binary),
		WithSnapshotChunkSize(2), WithSnapshotParallel(1))
	var selects atomic.Int32
	s.win.afterSelect = func() {
		if selects.Add(1) == 1 {
			_, err := d.DB.Exec(c.move)
			require.NoError(t, err)
		}
	}
	return d, h, s
}

// requireMovedRowsExact checks that the cache holds exactly the table, the moved row
// with its body.
func requireMovedRowsExact(t *testing.T, d *pgtest.Database, h *cacheHandler, c movedKeyCase) {
	t.Helper()
	rows := h.tableRows("public.moved")
	require.Empty(t, mismatches(rows, dbRows(t, d.DB, "moved")))
	require.Len(t, rows, 6)
	require.Equal(t, strings.Repeat("b", 3000)+"5", rows[c.movedTo]["body"])
}

// requireSnapshotFinished checks whether the snapshot progress of table moved is
// marked finished.
func requireSnapshotFinished(t *testing.T, d *pgtest.Database, want bool) {
	t.Helper()
	var finished bool
	require.NoError(t, d.DB.QueryRow(`SELECT finished_at IS NOT NULL FROM dbsync_ctrl.snapshot_progress
		WHERE table_name = 'public.moved'`).Scan(&finished))
	require.Equal(t, want, finished)
}

// TestSnapshotRereadFailureResumes: the re-read of a moved row after the last chunk
// fails (its windows keep asking for a retry until ErrRefreshAbandoned). The
// snapshot must not be marked finished — a finished table would be read from the
// start next time, and nothing would tell the caller the row still lacks its body —
// and the next Snapshot resumes after the last chunk and reads the row again.
func TestSnapshotRereadFailureResumes(t *testing.T) {
	c := movedKeyCases[0]
	c.driver = "postgres"
	d, h, s := movedRowSnapshot(t, c)
	var chunks []SnapshotProgress
	s.SnapshotProgress = func(p SnapshotProgress) { chunks = append(chunks, p) }
	var failing atomic.Bool
	failing.Store(true)
	var forced atomic.Int32
	s.win.forceRetry = func(id string) bool {
		n, err := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
		require.NoError(t, err)
		// Selections 1-3 are the chunks, 4 on the re-read and its retries.
		if failing.Load() && n >= 4 {
			forced.Add(1)
			return true
		}
		return false
	}
	err := s.Snapshot(context.Background(), "moved")
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.Equal(t, int32(maxSettleRounds+1), forced.Load())
	requireSnapshotFinished(t, d, false)
	var lastKey pq.StringArray
	var chunksDone int64
	require.NoError(t, d.DB.QueryRow(`SELECT last_key, chunks_done FROM dbsync_ctrl.snapshot_progress
		WHERE table_name = 'public.moved'`).Scan(&lastKey, &chunksDone))
	require.Equal(t, pq.StringArray{"60000000-0000-4000-8000-000000000000"}, lastKey)
	require.Equal(t, int64(3), chunksDone)
	require.Len(t, chunks, 2, "the last chunk is reported once its rows were read again")
	catchUp(t, s)
	rows := h.tableRows("public.moved")
	require.NotContains(t, rows[c.movedTo], "body", "the moved row came through its update only")

	failing.Store(false)
	require.NoError(t, s.Snapshot(context.Background(), "moved"))
	catchUp(t, s)
	// The second Snapshot: an empty chunk after the last key, then the re-read.
	require.Equal(t, movedRowEvents(c), h.eventList())
	requireMovedRowsExact(t, d, h, c)
	requireSnapshotFinished(t, d, true)
	require.Len(t, chunks, 3)
	require.Equal(t, SnapshotProgress{Table: "public.moved", Chunks: 4, Rows: 5, Estimated: chunks[2].Estimated,
		Emitted: 1, Reread: 1, Done: true}, chunks[2])
	require.Zero(t, keptRereads(s))
}

// TestSnapshotConcurrentRereadNotLost runs two Snapshots of one table at once. A
// reads it in chunks of 2 while an UPDATE moves the fifth row, not read yet, to a key
// before the first chunk without touching its out-of-line body (movedRowSnapshot),
// and after its last chunk starts reading that row again; while that window is open
// (after its SELECT, before its high watermark), B resumes after A's last chunk (an
// empty chunk), reads the moved rows again and finishes the table; then A's re-read
// fails (its context is cancelled before its high watermark is written), and B
// returns only after A did, so B's end is the last. The row moved while B ran: B
// marks the table finished, so it must have read the row again itself — A failed,
// and the next Snapshot would start over rather than look for it. The cache must
// hold the row with its body, the last event must be B's re-read, and nothing may be
// left for a next Snapshot. Before the fix A took the row out of the collection the
// two calls shared, B found it empty and finished, A gave the row back after B's last
// look, and B's end, finished, dropped it: nobody read it and nothing kept it.
func TestSnapshotConcurrentRereadNotLost(t *testing.T) {
	c := movedKeyCases[0]
	c.driver = "postgres"
	d, h, s := movedRowSnapshot(t, c)
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	aRereading, bFinished, aReturned := make(chan struct{}), make(chan struct{}), make(chan struct{})
	move := s.win.afterSelect // moves the row on its first call
	var selects, dones atomic.Int32
	s.win.afterSelect = func() {
		switch selects.Add(1) {
		case 1: // A's first chunk
			move()
		case 4: // after A's chunks 1-3: A's re-read of the moved row
			close(aRereading)
			waitClosed(t, bFinished, "B to finish the table")
			cancelA()
		}
	}
	var mu sync.Mutex
	var progress []SnapshotProgress
	s.SnapshotProgress = func(p SnapshotProgress) {
		mu.Lock()
		progress = append(progress, p)
		mu.Unlock()
		// Done comes from B only: A reports its last chunk after its re-read.
		if p.Done && dones.Add(1) == 1 {
			close(bFinished)
			waitClosed(t, aReturned, "A to return")
		}
	}
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { errA <- s.Snapshot(ctxA, "moved") }()
	waitClosed(t, aRereading, "A to read the moved row again")
	go func() { errB <- s.Snapshot(context.Background(), "moved") }()
	require.ErrorIs(t, receive(t, errA, "A's result"), context.Canceled)
	close(aReturned)
	require.NoError(t, receive(t, errB, "B's result"))
	catchUp(t, s)

	require.Equal(t, []string{
		`update public.moved ` + c.movedTo,
		`refresh public.moved ` + c.ids[0], `refresh public.moved ` + c.ids[1], // A's chunk 1
		`refresh public.moved ` + c.ids[2], `refresh public.moved ` + c.ids[3], // A's chunk 2
		`refresh public.moved ` + c.ids[5],  // A's chunk 3 (A's re-read never ends)
		`refresh public.moved ` + c.movedTo, // B: an empty chunk after the last key, then the re-read
	}, h.eventList())
	requireMovedRowsExact(t, d, h, c)
	requireSnapshotFinished(t, d, true)
	est := progress[0].Estimated
	require.Equal(t, []SnapshotProgress{
		{Table: "public.moved", Chunks: 1, Rows: 2, Estimated: est, Emitted: 2},
		{Table: "public.moved", Chunks: 2, Rows: 4, Estimated: est, Emitted: 2},
		{Table: "public.moved", Chunks: 4, Rows: 5, Estimated: est, Emitted: 1, Reread: 1, Done: true},
	}, progress)
	require.Equal(t, int32(6), selects.Load(), "A: 3 chunks and a re-read; B: an empty chunk and a re-read")
	require.Zero(t, keptRereads(s), "rows left for a next Snapshot")
}

// keptRereads counts the moved rows the Syncer holds to read again.
func keptRereads(s *Syncer) int {
	s.win.mu.Lock()
	defer s.win.mu.Unlock()
	n := 0
	for _, m := range s.win.moved {
		n += len(m.keys)
	}
	return n
}

// waitClosed waits for ch to be closed; after a minute it reports the wait as failed
// and returns, so a broken interleaving fails the test instead of hanging it.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Errorf("timed out waiting for %s", what)
	}
}

// receive returns the value sent on ch, failing the test after a minute without one.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(time.Minute):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}
