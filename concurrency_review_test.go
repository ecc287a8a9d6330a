package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// holdingCache is a cacheHandler whose delivery of an INSERT of holdTable can be held
// (the poller then waits inside a poll) until released.
type holdingCache struct {
	*cacheHandler
	mu      sync.Mutex
	hold    bool
	held    chan struct{}
	release chan struct{}
}

func newHoldingCache() *holdingCache {
	return &holdingCache{cacheHandler: newCacheHandler(), held: make(chan struct{}, 1), release: make(chan struct{})}
}

func (h *holdingCache) HandleInsertMessage(i int, m *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, info *PGTableInfo) error {
	if r.RelationName == "hold" {
		h.mu.Lock()
		hold := h.hold
		h.hold = false
		h.mu.Unlock()
		if hold {
			h.held <- struct{}{}
			<-h.release
		}
		return nil
	}
	return h.cacheHandler.HandleInsertMessage(i, m, r, info)
}

// wmRows counts the rows of the Syncer's watermark table.
func wmRows(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM dbsync_ctrl.dbsync_wmtable`).Scan(&n))
	return n
}

// waitGoroutines waits until no more goroutines run than base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRunRestartWithWaitingSelections stops Run (its context cancelled) while Refresh
// calls on two tables and a Snapshot wait for their high watermarks (the poller is
// held inside a poll), runs it again on the same Syncer, and checks: every waiting
// call fails with ErrRefreshAbandoned (and says Run returned), later calls work, the
// caches end equal to the tables, and neither goroutines, watermark rows, temporary
// slots nor busy sessions are left.
func TestRunRestartWithWaitingSelections(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY, v text)`, `CREATE TABLE b (id int PRIMARY KEY, v text)`,
		`CREATE TABLE hold (id int PRIMARY KEY)`,
		`INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 50) g`,
		`INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 50) g`)
	base := runtime.NumGoroutine()
	h := newHoldingCache()
	s := newTestSyncer(t, d, ForTables("a", "b", "hold"), WithMessageHandler(h), WithSnapshotChunkSize(10))
	r := runInBackground(s)
	// A first Refresh, so the pool and the poller are warm.
	_, err := s.RefreshContext(context.Background(), `SELECT * FROM a WHERE id <= 5`)
	require.NoError(t, err)

	h.mu.Lock()
	h.hold = true
	h.mu.Unlock()
	execAll(t, d.DB, `INSERT INTO hold VALUES (1)`)
	<-h.held // the poller waits inside a poll
	type result struct {
		what string
		err  error
	}
	results := make(chan result, 8)
	calls := []string{`SELECT * FROM a`, `SELECT * FROM a WHERE id % 2 = 0`, `SELECT * FROM b`, `SELECT * FROM b WHERE id > 10`}
	for _, q := range calls {
		go func(q string) {
			_, err := s.RefreshContext(context.Background(), q)
			results <- result{q, err}
		}(q)
	}
	go func() { results <- result{"snapshot b", s.Snapshot(context.Background(), "b")} }()
	// Every Refresh wrote both watermarks, the Snapshot its first chunk's.
	waitFor(t, 20*time.Second, func() bool { return wmRows(t, d.DB) >= 2*len(calls)+2 }, "watermarks of the waiting calls")
	r.cancel()
	close(h.release)
	require.NoError(t, <-r.done)
	for range len(calls) + 1 {
		select {
		case res := <-results:
			require.ErrorIs(t, res.err, ErrRefreshAbandoned, res.what)
			require.ErrorContains(t, res.err, "Run returned", res.what)
		case <-time.After(20 * time.Second):
			t.Fatal("a call still waits 20 s after Run returned")
		}
	}
	require.Zero(t, wmRows(t, d.DB), "watermark rows left by the abandoned calls")

	// Run again on the same Syncer: every call works and the caches end right.
	execAll(t, d.DB, `UPDATE a SET v = v || 'x' WHERE id % 3 = 0`, `DELETE FROM b WHERE id % 7 = 0`)
	r = runInBackground(s)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, q := range calls {
		wg.Add(1)
		go func(q string) {
			defer wg.Done()
			_, err := s.RefreshContext(context.Background(), q)
			errs <- err
		}(q)
	}
	wg.Add(1)
	go func() { defer wg.Done(); errs <- s.Snapshot(context.Background(), "a", "b") }()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.a"), dbRows(t, d.DB, "a")))
	require.Empty(t, mismatches(h.tableRows("public.b"), dbRows(t, d.DB, "b")))
	require.NoError(t, r.stop(t))
	require.NoError(t, s.Close())
	requireNothingLeft(t, d.DB)
	waitGoroutines(t, base)
}

// TestCloseWhileSelectionsInFlight closes a Syncer that opened its own pool while a
// Refresh is between its SELECT and its high watermark and a Snapshot is running:
// both must fail with ErrRefreshAbandoned and ErrClosed (the documented errors of a
// closed Syncer), and leave no watermark row behind.
func TestCloseWhileSelectionsInFlight(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY, v text)`,
		`INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 50) g`)
	base := runtime.NumGoroutine()
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("a"), WithMessageHandler(h))
	inHook := make(chan struct{}, 4)
	release := make(chan struct{})
	s.win.afterSelect = func() {
		inHook <- struct{}{}
		<-release
	}
	r := runInBackground(s)
	refreshErr := make(chan error, 1)
	go func() { _, err := s.RefreshContext(context.Background(), `SELECT * FROM a`); refreshErr <- err }()
	<-inHook
	snapErr := make(chan error, 1)
	go func() { snapErr <- s.Snapshot(context.Background(), "a") }()
	<-inHook
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	require.NoError(t, <-r.done) // Close stopped Run
	// The calls go on (as a long SELECT would): Close waits for them to end.
	close(release)
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return")
	}
	for what, ch := range map[string]chan error{"refresh": refreshErr, "snapshot": snapErr} {
		select {
		case err := <-ch:
			require.ErrorIs(t, err, ErrRefreshAbandoned, fmt.Sprintf("%s: %v", what, err))
			require.ErrorIs(t, err, ErrClosed, what)
		case <-time.After(20 * time.Second):
			t.Fatalf("%s still running 20 s after Close", what)
		}
	}
	require.Zero(t, wmRows(t, d.DB), "watermark rows left behind")
	waitGoroutines(t, base)
	// The Syncer's own pool is closed: only the test's sessions are left.
	waitFor(t, 10*time.Second, func() bool {
		var n int
		require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND backend_type = 'client backend'`).Scan(&n))
		return n <= d.DB.Stats().OpenConnections
	}, "the Syncer's sessions to end")
	// And after Close, both fail at once with the same errors.
	_, err := s.RefreshContext(context.Background(), `SELECT * FROM a`)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, ErrClosed)
	err = s.Snapshot(context.Background(), "a")
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, ErrClosed)
}

// TestRefreshBeforeFirstRun: a Refresh called before Run ever started waits for it
// (`go s.Start(); s.Refresh(q)` may call it first) and completes once Run runs; once
// Run returned, Refresh and Snapshot fail at once (RefreshContext's documentation).
func TestRefreshBeforeFirstRun(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY, v text)`,
		`INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 20) g`)
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("a"), WithMessageHandler(h))
	done := make(chan error, 1)
	go func() { done <- s.Refresh(`SELECT * FROM a`) }()
	waitFor(t, 20*time.Second, func() bool { return wmRows(t, d.DB) == 2 }, "both watermarks")
	select {
	case err := <-done:
		t.Fatalf("Refresh returned before Run started: %v", err)
	default:
	}
	r := runInBackground(s)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Refresh still waits 20 s after Run started")
	}
	require.Empty(t, mismatches(h.tableRows("public.a"), dbRows(t, d.DB, "a")))
	require.NoError(t, r.stop(t))
	require.Zero(t, wmRows(t, d.DB))
	// Once a Run returned, a call fails at once until Run is called again.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := s.RefreshContext(ctx, `SELECT * FROM a`)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorContains(t, err, "not running")
	require.NoError(t, ctx.Err())
	err = s.Snapshot(ctx, "a")
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorContains(t, err, "not running")
	require.NoError(t, ctx.Err())
	require.Zero(t, wmRows(t, d.DB))
}

// TestConcurrentSnapshotsAndRefreshes runs, while writers change the table, two
// Snapshots of the same table, a Snapshot of another table and Refresh calls of
// overlapping rows of both, all at once on one Syncer. Every call succeeds, the
// handler gets exactly as many refresh rows as the calls report delivered (Refresh
// stats, Snapshot progress), both tables are marked finished, and the cache ends
// equal to both tables.
func TestConcurrentSnapshotsAndRefreshes(t *testing.T) {
	for _, parallel := range []int{1, 2} {
		t.Run(fmt.Sprintf("parallel%d", parallel), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			st := snapTable{toast: true, keys: 700}
			st.create(t, d.DB, 600)
			execAll(t, d.DB, `CREATE TABLE other (id int PRIMARY KEY, v text)`,
				`INSERT INTO other SELECT g, 'o' || g FROM generate_series(1, 300) g`)
			h := newCacheHandler()
			var progMu sync.Mutex
			var snapEmitted int
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("snap", "other"),
				WithSnapshotChunkSize(37), WithSnapshotParallel(parallel),
				WithSnapshotProgress(func(p SnapshotProgress) {
					progMu.Lock()
					snapEmitted += p.Emitted
					progMu.Unlock()
				}))
			stop := startWriters(t, d.DB, st, 11, 3)
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			var refreshEmitted sync.Map
			for i, call := range []func() error{
				func() error { return s.Snapshot(context.Background(), "snap") },
				func() error { return s.Snapshot(context.Background(), "snap", "other") },
				func() error { return s.Snapshot(context.Background(), "other") },
				func() error {
					st, err := s.RefreshContext(context.Background(), `SELECT * FROM snap WHERE id % 3 = 0`)
					refreshEmitted.Store(3, st.Emitted)
					return err
				},
				func() error {
					st, err := s.RefreshContext(context.Background(), `SELECT * FROM snap`)
					refreshEmitted.Store(4, st.Emitted)
					return err
				},
				func() error {
					st, err := s.RefreshContext(context.Background(), `SELECT * FROM other WHERE id < 200`)
					refreshEmitted.Store(5, st.Emitted)
					return err
				},
			} {
				wg.Add(1)
				go func(i int, call func() error) {
					defer wg.Done()
					if err := call(); err != nil {
						errs <- fmt.Errorf("call %d: %w", i, err)
					}
				}(i, call)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			stop()
			catchUp(t, s)
			require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
			require.Empty(t, mismatches(h.tableRows("public.other"), dbRows(t, d.DB, "other")))
			total := 0
			refreshEmitted.Range(func(_, v any) bool { total += v.(int); return true })
			progMu.Lock()
			total += snapEmitted
			progMu.Unlock()
			h.mu.Lock()
			got := len(h.refreshKeys)
			h.mu.Unlock()
			require.Equal(t, total, got, "refresh rows delivered vs reported by the calls")
			require.Equal(t, []string{"public.other true", "public.snap true"}, queryStrings(t, d.DB,
				`SELECT table_name || ' ' || (finished_at IS NOT NULL)::text FROM dbsync_ctrl.snapshot_progress ORDER BY 1`))
			require.Zero(t, wmRows(t, d.DB))
		})
	}
}

// TestRunRestartedUnderRefreshes stops and starts Run on the same Syncer again and
// again while Refresh calls of overlapping rows loop (retrying those the stops
// abandon) and writers change the table. Each restart begins with the window state a
// cancelled poll left (a transaction cut in the middle, watermarks seen but not
// committed); the cache must still end equal to the table, and every call either
// succeed or fail with ErrRefreshAbandoned.
func TestRunRestartedUnderRefreshes(t *testing.T) {
	d := pgtest.NewDatabase(t)
	st := snapTable{toast: true, keys: 500}
	st.create(t, d.DB, 400)
	base := runtime.NumGoroutine()
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("snap"), WithMessageHandler(h))
	stopWriters := startWriters(t, d.DB, st, 21, 3)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, abandoned := 0, 0
	var other []error
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			qs := []string{fmt.Sprintf(`SELECT * FROM snap WHERE id %% 3 = %d`, g), `SELECT * FROM snap WHERE id < 250`}
			for i := 0; ctx.Err() == nil; i++ {
				_, err := s.RefreshContext(ctx, qs[i%2])
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, ErrRefreshAbandoned):
					abandoned++
				default:
					other = append(other, err)
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond) // stopped: wait for the next Run
				}
			}
		}(g)
	}
	for round := 0; round < 6; round++ {
		r := runInBackground(s)
		mu.Lock()
		want := ok + 3
		mu.Unlock()
		waitFor(t, 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return ok >= want }, "refreshes in round %d", round)
		require.NoError(t, r.stop(t))
	}
	r := runInBackground(s)
	cancel()
	wg.Wait()
	stopWriters()
	catchUp(t, s)
	mu.Lock()
	require.Empty(t, other)
	t.Logf("refreshes: %d delivered, %d abandoned", ok, abandoned)
	mu.Unlock()
	require.Empty(t, mismatches(h.tableRows("public.snap"), dbRows(t, d.DB, "snap")))
	require.NoError(t, r.stop(t))
	require.NoError(t, s.Close())
	require.Zero(t, wmRows(t, d.DB))
	waitGoroutines(t, base)
}

// TestSelectionCallerContextEnded: a Refresh or Snapshot whose caller's context ended
// fails with ErrRefreshAbandoned (errors.go), with the context's error in the chain,
// wherever the call was when it ended, here before it began.
func TestSelectionCallerContextEnded(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY, v text)`, `INSERT INTO a VALUES (1, 'x')`)
	s := newTestSyncer(t, d, ForTables("a"), WithMessageHandler(newCacheHandler()))
	r := runInBackground(s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.RefreshContext(ctx, `SELECT * FROM a`)
	require.ErrorIs(t, err, ErrRefreshAbandoned, "Refresh: %v", err)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ErrConfig, "a cancelled call says nothing about the query")
	err = s.Snapshot(ctx, "a")
	require.ErrorIs(t, err, ErrRefreshAbandoned, "Snapshot: %v", err)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ErrConfig)
	require.NoError(t, r.stop(t))
}

// TestRefreshCancelledMidSelect cancels a Refresh's context while its SELECT sends
// rows, through lib/pq and pgx on a pool the caller shares (WithDB): the call fails
// with ErrRefreshAbandoned and context.Canceled, leaves no watermark row and no
// session in a transaction, and the next Refresh on the same pool works.
func TestRefreshCancelledMidSelect(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			selectionFaultTable(t, d.DB)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := newCacheHandler()
			s := newTestSyncer(t, d, WithDB(db), ForTables("items"), WithMessageHandler(h))
			ctx, cancel := context.WithCancel(context.Background())
			var once sync.Once
			s.win.duringSelect = func() { once.Do(cancel) }
			r := runInBackground(s)
			_, err = s.RefreshContext(ctx, `SELECT * FROM items`)
			require.ErrorIs(t, err, ErrRefreshAbandoned, "%v", err)
			require.ErrorIs(t, err, context.Canceled)
			waitFor(t, 10*time.Second, func() bool {
				var n int
				require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
					AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'`).Scan(&n))
				return n <= 1 // the poller's own query may be running
			}, "sessions to leave their transactions")
			require.Zero(t, wmRows(t, d.DB))
			st, err := s.RefreshContext(context.Background(), `SELECT * FROM items WHERE id <= 100`)
			require.NoError(t, err)
			require.Equal(t, 100, st.Emitted)
			require.NoError(t, r.stop(t))
			requireNothingLeft(t, d.DB)
		})
	}
}

// refreshingHandler calls RefreshContext from HandleInsertMessage, as the
// documentation says not to.
type refreshingHandler struct {
	DefaultMessageHandler
	s   *Syncer
	err chan error
}

func (h *refreshingHandler) HandleInsertMessage(int, *pglogrepl.InsertMessage, *pglogrepl.RelationMessage, *PGTableInfo) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := h.s.RefreshContext(ctx, `SELECT * FROM a`)
	h.err <- err
	return nil
}

// TestRefreshFromHandlerWaitsForContext checks what RefreshContext's documentation
// says of a call from a handler: it waits for the delivery the handler holds up,
// until its context ends (ErrRefreshAbandoned), and the Syncer goes on afterwards.
func TestRefreshFromHandlerWaitsForContext(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY, v text)`)
	h := &refreshingHandler{err: make(chan error, 1)}
	s := newTestSyncer(t, d, ForTables("a"), WithMessageHandler(h))
	h.s = s
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO a VALUES (1, 'x')`)
	err := receive(t, h.err, "the handler's Refresh")
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Zero(t, wmRows(t, d.DB))
}

// TestCloseAtRandomMoments closes a running Syncer at a different moment of busy
// Refresh and Snapshot traffic in each round: every call ends, successfully or with
// ErrRefreshAbandoned and ErrClosed, Close returns, and no watermark row or goroutine
// is left.
func TestCloseAtRandomMoments(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY, v text)`,
		`INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 3000) g`)
	base := runtime.NumGoroutine()
	for round, delay := range []time.Duration{0, 5 * time.Millisecond, 20 * time.Millisecond, 60 * time.Millisecond, 150 * time.Millisecond} {
		s := newTestSyncer(t, d, ForTables("a"), WithMessageHandler(newCacheHandler()), WithSnapshotChunkSize(200), WithSnapshotParallel(2))
		r := runInBackground(s)
		errs := make(chan error, 8)
		var wg sync.WaitGroup
		for _, call := range []func() error{
			func() error { return s.Snapshot(context.Background(), "a") },
			func() error { return s.Refresh(`SELECT * FROM a WHERE id % 2 = 0`) },
			func() error { return s.Refresh(`SELECT * FROM a`) },
			func() error { return s.Snapshot(context.Background(), "a") },
		} {
			wg.Add(1)
			go func(call func() error) {
				defer wg.Done()
				for {
					err := call()
					if err != nil {
						errs <- err
						return
					}
				}
			}(call)
		}
		time.Sleep(delay)
		require.NoError(t, s.Close(), "round %d", round)
		if err := r.wait(t, 20*time.Second); err != nil {
			require.ErrorIs(t, err, ErrClosed, "round %d: Run began after Close", round)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.ErrorIs(t, err, ErrRefreshAbandoned, "round %d: %v", round, err)
			require.ErrorIs(t, err, ErrClosed, "round %d: %v", round, err)
		}
		require.Zero(t, wmRows(t, d.DB), "round %d", round)
	}
	waitGoroutines(t, base)
}

// TestHandlerErrorStopsWaitingSelections: a HandleRefresh failure under
// StopOnHandlerError stops Run; the Refresh whose rows failed and a Snapshot and a
// Refresh of another table waiting at the same time fail with ErrRefreshAbandoned
// carrying Run's ErrHandler, and the same calls succeed once Run runs again, leaving
// the caches equal to the tables.
func TestHandlerErrorStopsWaitingSelections(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY, v text)`, `CREATE TABLE b (id int PRIMARY KEY, v text)`,
		`CREATE TABLE hold (id int PRIMARY KEY)`,
		`INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 30) g`,
		`INSERT INTO b SELECT g, 'b' || g FROM generate_series(1, 30) g`)
	h := newHoldingCache()
	h.failRefreshAt = 1
	s := newTestSyncer(t, d, ForTables("a", "b", "hold"), WithMessageHandler(h), WithSnapshotChunkSize(10))
	r := runInBackground(s)
	h.mu.Lock()
	h.hold = true
	h.mu.Unlock()
	execAll(t, d.DB, `INSERT INTO hold VALUES (1)`)
	<-h.held // every call's watermarks land in one later poll
	errs := make(chan error, 3)
	go func() { _, err := s.RefreshContext(context.Background(), `SELECT * FROM a`); errs <- err }()
	go func() { _, err := s.RefreshContext(context.Background(), `SELECT * FROM b`); errs <- err }()
	go func() { errs <- s.Snapshot(context.Background(), "b") }()
	waitFor(t, 20*time.Second, func() bool { return wmRows(t, d.DB) >= 6 }, "watermarks of the calls")
	close(h.release)
	runErr := r.wait(t, 20*time.Second)
	require.ErrorIs(t, runErr, ErrHandler)
	for range 3 {
		err := receive(t, errs, "a call")
		require.ErrorIs(t, err, ErrRefreshAbandoned)
		require.ErrorIs(t, err, ErrHandler, "%v", err)
	}
	require.Zero(t, wmRows(t, d.DB))
	r = runInBackground(s)
	_, err := s.RefreshContext(context.Background(), `SELECT * FROM a`)
	require.NoError(t, err)
	require.NoError(t, s.Snapshot(context.Background(), "b"))
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.a"), dbRows(t, d.DB, "a")))
	require.Empty(t, mismatches(h.tableRows("public.b"), dbRows(t, d.DB, "b")))
	require.NoError(t, r.stop(t))
}
