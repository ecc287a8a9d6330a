package dbsync

import (
	"context"
	"database/sql"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/lib/pq"
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

// TestSlotCreationStatementTimeout: creating the slot waits for every transaction
// open in the cluster with an xid to end (slotwait.go), which may take as long as
// the longest of them; a statement_timeout of dbsync's role cancelled it (57014), and
// setup failed with the bare server error. The creation now runs with
// statement_timeout off (bounded by setup's context, as before), and setup completes
// once the transaction ends; the pool's sessions keep the role's setting.
func TestSlotCreationStatementTimeout(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			dsn := settingsRole(t, d, "timed", [][2]string{{"statement_timeout", "500ms"}})
			db, err := sql.Open(driver, dsn)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })

			ctx := context.Background()
			conn, err := d.DB.Conn(ctx)
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.ExecContext(ctx, `BEGIN`)
			require.NoError(t, err)
			_, err = conn.ExecContext(ctx, `INSERT INTO items VALUES (1)`)
			require.NoError(t, err)

			slot := pgtest.Ident(t, "slot")
			done := make(chan error, 1)
			var s *Syncer
			go func() {
				var err error
				s, err = NewSyncer(WithDB(db), ForTables("items"), WithReplicationSlot(slot), WithPublication(pgtest.Ident(t, "pub")))
				done <- err
			}()
			// The creation waits past the timeout for the open transaction.
			var setupErr error
			ended := false
			waitFor(t, 20*time.Second, func() bool {
				select {
				case setupErr = <-done:
					ended = true
					return true
				default:
				}
				var n int
				require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE state = 'active'
					AND query LIKE '%pg_create_logical_replication_slot%' AND pid <> pg_backend_pid()
					AND now() - query_start > interval '1500 ms'`).Scan(&n))
				return n == 1
			}, "the slot creation to wait past the timeout")
			require.False(t, ended, "setup ended while the transaction was open: %v", setupErr)
			_, err = conn.ExecContext(ctx, `COMMIT`)
			require.NoError(t, err)
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Fatal("setup did not finish after the transaction ended")
			}
			t.Cleanup(func() { s.Close() })
			require.Equal(t, []string{slot}, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, slot))
			var got string
			require.NoError(t, s.DB().QueryRow(`SHOW statement_timeout`).Scan(&got))
			require.Equal(t, "500ms", got, "the pool's sessions keep the role's setting")
		})
	}
}

// TestStatementTimeoutCallsNamed: with a statement_timeout of dbsync's role smaller
// than what a call's catalog statements need (1 ms: the replica identity check and the
// column type read take longer), Setup (NewSyncer), CheckReplicaIdentity and
// TableInfo failed with the server's bare 57014 ("check replica identity of published
// tables: pq: canceling statement due to statement timeout"), which names neither the
// setting's owner nor the remedy. They are now ErrStatementCancelled (the 57014 still
// in the chain), saying to raise statement_timeout for dbsync's role and call again.
// A call whose own context ended is not that error.
func TestStatementTimeoutCallsNamed(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			s := newTestSyncer(t, d, ForTables("items"))
			require.NoError(t, s.Close())
			ts := timedSyncer(t, d, s, driver, "1ms")
			ctx := context.Background()
			for _, c := range []struct {
				call string
				fn   func() error
			}{
				{"Setup", func() error { return ts.Setup(ctx) }},
				{"CheckReplicaIdentity", func() error { _, err := ts.CheckReplicaIdentity(ctx); return err }},
				{"TableInfo", func() error { _, err := ts.TableInfo(ctx, "items"); return err }},
			} {
				// Each statement of the call races the timer: call until one loses.
				var err error
				for i := 0; i < 100 && err == nil; i++ {
					err = c.fn()
				}
				require.Error(t, err, c.call)
				require.ErrorIs(t, err, ErrStatementCancelled, "%s: %v", c.call, err)
				code, _, ok := serverError(err)
				require.True(t, ok, "%v", err)
				require.Equal(t, "57014", code, "%v", err)
				require.Contains(t, err.Error(), "raise statement_timeout for dbsync's role (ALTER ROLE ... SET statement_timeout", c.call)
				require.Contains(t, err.Error(), "call "+c.call+" again", c.call)
			}
			// NewSyncer runs Setup: the same error.
			_, err := NewSyncer(WithDB(ts.DB()), WithReplicationSlot(s.ReplicationSlot()), WithPublication(s.Publication()))
			require.ErrorIs(t, err, ErrStatementCancelled, "%v", err)

			// The remedy the error names works.
			execAll(t, d.DB, `ALTER ROLE `+pq.QuoteIdentifier(pgtest.Ident(t, "timed"))+` IN DATABASE `+pq.QuoteIdentifier(d.Name)+` SET statement_timeout = '1min'`)
			db, err := sql.Open(driver, d.DSN()+" user="+pgtest.Ident(t, "timed"))
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			s2, err := NewSyncer(WithDB(db), WithReplicationSlot(s.ReplicationSlot()), WithPublication(s.Publication()))
			require.NoError(t, err)
			t.Cleanup(func() { s2.Close() })
			info, err := s2.TableInfo(ctx, "items")
			require.NoError(t, err)
			require.Equal(t, []string{"id"}, info.PrimaryKey)
		})
	}
}

// TestStatementTimeoutSlotCallsNamed: Status, ConfirmedFlushLSN, SkipBacklog,
// Teardown and TeardownWithResult whose statement on pg_replication_slots waits past
// the role's statement_timeout (another session holds the view locked) failed with
// the server's bare 57014; they are now ErrStatementCancelled saying to raise
// statement_timeout for dbsync's role and call again. Nothing was moved or dropped.
func TestStatementTimeoutSlotCallsNamed(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			s := newTestSyncer(t, d, ForTables("items"))
			require.NoError(t, s.Close())
			execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
			before := queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot())
			ts := timedSyncer(t, d, s, driver, "200ms")
			ctx := context.Background()
			lock, err := d.DB.Begin()
			require.NoError(t, err)
			t.Cleanup(func() { lock.Rollback() }) // before the test's cleanups, which need the view
			_, err = lock.Exec(`LOCK TABLE pg_catalog.pg_replication_slots IN ACCESS EXCLUSIVE MODE`)
			require.NoError(t, err)
			for _, c := range []struct {
				call string
				fn   func() error
			}{
				{"Status", func() error { _, err := ts.Status(ctx); return err }},
				{"ConfirmedFlushLSN", func() error { _, err := ts.ConfirmedFlushLSN(ctx); return err }},
				{"SkipBacklog", func() error { _, err := ts.SkipBacklog(ctx); return err }},
				{"Teardown", func() error { return ts.Teardown(ctx) }},
				{"TeardownWithResult", func() error { _, err := ts.TeardownWithResult(ctx); return err }},
			} {
				err := c.fn()
				require.ErrorIs(t, err, ErrStatementCancelled, "%s: %v", c.call, err)
				code, _, ok := serverError(err)
				require.True(t, ok, "%v", err)
				require.Equal(t, "57014", code, "%v", err)
				require.Contains(t, err.Error(), "raise statement_timeout for dbsync's role (ALTER ROLE ... SET statement_timeout", c.call)
				require.Contains(t, err.Error(), "call "+c.call+" again", c.call)
			}
			require.NoError(t, lock.Rollback())
			require.Equal(t, before, queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()),
				"the slot is still there, not moved")

			// The same calls succeed once the view is free.
			st, err := ts.Status(ctx)
			require.NoError(t, err)
			require.Equal(t, s.ReplicationSlot(), st.Slot)
		})
	}
}

// TestRunStatementTimeoutNoProgress: a statement of every poll that the server
// cancels (here the read of the slot's position, which waits past the role's
// statement_timeout for a view another session holds locked; a statement_timeout
// shorter than the poll's catalog reads does the same) had Run retry forever,
// delivering nothing, logging only "poll cancelled by the server; retrying". After
// maxCancelledPolls consecutive cancelled polls Run now returns ErrStatementCancelled
// naming statement_timeout; nothing was forwarded, and a later Run delivers every
// change once.
func TestRunStatementTimeoutNoProgress(t *testing.T) {
	defer func(n int) { maxCancelledPolls = n }(maxCancelledPolls)
	maxCancelledPolls = 3
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("items"))
	require.NoError(t, s.Close())
	execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
	before := queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot())
	h := newCacheHandler()
	var logs pgtest.Buffer
	ts := timedSyncer(t, d, s, "postgres", "200ms", WithMessageHandler(h),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	// A session starting while the view is locked waits for it: Run gets sessions
	// opened before.
	ts.DB().SetMaxIdleConns(8)
	var conns []*sql.Conn
	for i := 0; i < 8; i++ {
		c, err := ts.DB().Conn(context.Background())
		require.NoError(t, err)
		conns = append(conns, c)
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	lock, err := d.DB.Begin()
	require.NoError(t, err)
	t.Cleanup(func() { lock.Rollback() }) // before the test's cleanups, which need the view
	_, err = lock.Exec(`LOCK TABLE pg_catalog.pg_replication_slots IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	r := runInBackground(ts)
	t.Cleanup(r.cancel)
	err = r.wait(t, 30*time.Second)
	require.NoError(t, lock.Rollback())
	require.ErrorIs(t, err, ErrStatementCancelled, "%v", err)
	code, _, ok := serverError(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, "57014", code, "%v", err)
	require.Contains(t, err.Error(), "raise statement_timeout for dbsync's role")
	require.Equal(t, maxCancelledPolls, strings.Count(logs.String(), "poll cancelled by the server; retrying"), logs.String())
	require.Empty(t, h.eventList())
	require.Equal(t, before, queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()))

	r = runInBackground(ts)
	execAll(t, d.DB, `INSERT INTO items VALUES (2)`)
	r.waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 2 }, "both rows")
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{`insert public.items ["1"]`, `insert public.items ["2"]`}, h.eventList())
}

// TestSelectionLockTimeoutOfRole: a lock_timeout of dbsync's role, while another
// session holds the table in ACCESS EXCLUSIVE mode, cuts a Refresh's and a Snapshot
// chunk's wait for the table short (55P03): ErrRefreshAbandoned with the server's
// error, naming lock_timeout, nothing of the cut selection delivered, no watermark row
// left; once the lock is gone the Snapshot resumes at the chunk, the Refresh delivers
// its rows, and changes flow on. (A Snapshot that finds the lock held before its first
// chunk waits for it as for a writer, until its context ends: waitForTableWriters.)
func TestSelectionLockTimeoutOfRole(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`,
				`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 4) g`)
			dsn := settingsRole(t, d, "locked", [][2]string{{"lock_timeout", "100ms"}})
			db, err := sql.Open(driver, dsn)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := newCacheHandler()
			s, stop := startSyncer(t, dsn, pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("items"),
				WithSnapshotChunkSize(2), WithSnapshotParallel(1), WithSnapshotChunksInFlight(1))
			ctx := context.Background()
			requireLockTimeout := func(err error) {
				t.Helper()
				require.ErrorIs(t, err, ErrRefreshAbandoned, "%v", err)
				require.NotErrorIs(t, err, ErrConfig, "%v", err)
				code, _, ok := serverError(err)
				require.True(t, ok, "%v", err)
				require.Equal(t, "55P03", code, "%v", err)
				require.Contains(t, err.Error(), "lock_timeout")
			}

			var lock *sql.Tx
			t.Cleanup(func() {
				if lock != nil {
					lock.Rollback()
				}
			})
			takeLock := func() {
				var err error
				lock, err = d.DB.Begin()
				require.NoError(t, err)
				_, err = lock.Exec(`LOCK TABLE items IN ACCESS EXCLUSIVE MODE`)
				require.NoError(t, err)
			}
			takeLock()
			_, err = s.RefreshContext(ctx, `SELECT * FROM items`)
			requireLockTimeout(err)
			require.NoError(t, lock.Rollback())
			lock = nil
			require.Empty(t, h.eventList())

			s.win.afterSelect = func() {
				if lock == nil { // after chunk 1's SELECT: chunk 2's waits for this lock
					takeLock()
				}
			}
			requireLockTimeout(s.Snapshot(ctx, "items"))
			require.NoError(t, lock.Rollback())
			s.win.afterSelect = nil
			require.Equal(t, []string{"0"}, queryStrings(t, d.DB, `SELECT count(*)::text FROM dbsync_ctrl.dbsync_wmtable`))

			require.NoError(t, s.Snapshot(ctx, "items"))
			execAll(t, d.DB, `INSERT INTO items VALUES (5, 'v5')`)
			waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 5 }, "the insert")
			stats, err := s.RefreshContext(ctx, `SELECT * FROM items WHERE id <= 2`)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
			catchUp(t, s)
			require.NoError(t, stop())
			require.Equal(t, []string{`refresh public.items ["1"]`, `refresh public.items ["2"]`, `refresh public.items ["3"]`, `refresh public.items ["4"]`,
				`insert public.items ["5"]`, `refresh public.items ["1"]`, `refresh public.items ["2"]`}, h.eventList())
			require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))
		})
	}
}

// TestSlotLockIdleSessionTimeout: an idle_session_timeout of dbsync's role shorter
// than slotLockKeepalive ended Run's slot lock session between two checks, and for
// up to 10 s the slot was unlocked: another Syncer's SkipBacklog (or Teardown, or
// Run) on the slot went through under a running Syncer, skipping its changes. The lock
// session now runs with idle_session_timeout off, and the other Syncer is refused.
func TestSlotLockIdleSessionTimeout(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			dsn := settingsRole(t, d, "idle", [][2]string{{"idle_session_timeout", "300ms"}})
			db, err := sql.Open(driver, dsn)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := newCacheHandler()
			s, stop := startSyncer(t, dsn, pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("items"))
			// The lock's session has been idle for a second (or was ended).
			waitFor(t, 20*time.Second, func() bool {
				var pid int
				require.NoError(t, d.DB.QueryRow(slotLockHolder, s.ReplicationSlot()).Scan(&pid))
				if pid == 0 {
					return true
				}
				var idle bool
				require.NoError(t, d.DB.QueryRow(`SELECT COALESCE((SELECT state = 'idle' AND now() - state_change > interval '1 second' FROM pg_stat_activity WHERE pid = $1), false)`, pid).Scan(&idle))
				return idle
			}, "the lock session to idle")
			other := newTestSyncer(t, d, WithReplicationSlot(s.ReplicationSlot()), WithPublication(s.Publication()), WithSetup(false))
			execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
			_, err = other.SkipBacklog(context.Background())
			require.ErrorIs(t, err, ErrSlotInUse, "%v", err)
			waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 1 }, "row 1")
			require.NoError(t, stop())
			require.Equal(t, []string{`insert public.items ["1"]`}, h.eventList())
		})
	}
}
