package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// selectionFaultTable creates items with 6,000 rows of 8 kB text (16 MB of output per
// 2,000-row chunk: more than the socket buffers hold, so a chunk's SELECT is still
// sending when its reader has its first rows).
func selectionFaultTable(t *testing.T, db *sql.DB) {
	t.Helper()
	execAll(t, db, `CREATE TABLE items (id int PRIMARY KEY, pad text)`,
		`INSERT INTO items SELECT g, repeat('x', 8000) || g FROM generate_series(1, 6000) g`)
}

// backendOf returns the pid of the one session of db's database, other than the
// caller's, whose state and query match; it fails unless there is exactly one.
func backendOf(t *testing.T, db *sql.DB, state, queryLike string) int {
	t.Helper()
	pids := queryStrings(t, db, `SELECT pid::text FROM pg_stat_activity WHERE datname = current_database()
		AND pid <> pg_backend_pid() AND state = $1 AND query LIKE $2`, state, queryLike)
	require.Len(t, pids, 1, "sessions %s running %q", state, queryLike)
	var pid int
	_, err := fmt.Sscan(pids[0], &pid)
	require.NoError(t, err)
	return pid
}

// requireNothingLeft checks that no watermark row, temporary slot or open
// transaction of a session other than db's own is left in d's database.
func requireNothingLeft(t *testing.T, db *sql.DB) {
	t.Helper()
	var wm, temp, inTx int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM dbsync_ctrl.dbsync_wmtable`).Scan(&wm))
	require.Zero(t, wm, "watermark rows left behind")
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE temporary AND database = current_database()`).Scan(&temp))
	require.Zero(t, temp, "temporary slots left behind")
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'`).Scan(&inTx))
	require.Zero(t, inTx, "sessions busy or in a transaction")
}

// TestSnapshotSelectionSessionLost ends the session of a Snapshot chunk's selection
// in the middle of the chunk, through lib/pq and pgx: pg_terminate_backend while its
// SELECT is sending rows, pg_terminate_backend while its high watermark INSERT waits
// (for a lock the test holds on the watermark table), and a server crash (immediate
// shutdown) while the SELECT is sending rows. The chunk's selection is opened again
// on a new session (Run retries its polls through the crash), so Snapshot completes:
// every row reaches the cache, which ends equal to the table, and no watermark row,
// temporary slot or open transaction is left.
func TestSnapshotSelectionSessionLost(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		for _, fault := range []string{"terminate-select", "terminate-watermark", "crash-select"} {
			t.Run(driver+"/"+fault, func(t *testing.T) {
				var d *pgtest.Database
				var srv *pgtest.Server
				if fault == "crash-select" {
					var err error
					srv, err = pgtest.Start(pgtest.Options{})
					require.NoError(t, err)
					t.Cleanup(func() { srv.Stop() })
					d = srv.NewDatabase(t)
				} else {
					d = pgtest.NewDatabase(t)
				}
				selectionFaultTable(t, d.DB)
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				h := newCacheHandler()
				var chunks []SnapshotProgress
				s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("items"),
					WithSnapshotChunkSize(2000), WithSnapshotProgress(func(p SnapshotProgress) { chunks = append(chunks, p) }))
				// Another pool for the test's own statements: d.DB's sessions die in the crash too.
				ctl, err := sql.Open("postgres", d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { ctl.Close() })
				var fired atomic.Int32
				switch fault {
				case "terminate-select", "crash-select":
					s.win.duringSelect = func() {
						if fired.Add(1) != 2 { // the second chunk
							return
						}
						pid := backendOf(t, ctl, "active", "SELECT %FROM ONLY%items%")
						if fault == "crash-select" {
							require.NoError(t, srv.Restart(true))
							return
						}
						var ok bool
						require.NoError(t, ctl.QueryRow(`SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
						require.True(t, ok)
					}
				case "terminate-watermark":
					s.win.afterSelect = func() {
						if fired.Add(1) != 2 {
							return
						}
						lock, err := ctl.Begin()
						require.NoError(t, err)
						_, err = lock.Exec(`LOCK TABLE dbsync_ctrl.dbsync_wmtable IN EXCLUSIVE MODE`)
						require.NoError(t, err)
						go func() {
							defer lock.Rollback()
							var pid int
							waitFor(t, 10*time.Second, func() bool {
								ids := queryStrings(t, ctl, `SELECT pid::text FROM pg_stat_activity WHERE datname = current_database()
									AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO "dbsync_ctrl"."dbsync_wmtable"%'`)
								if len(ids) != 1 {
									return false
								}
								_, err := fmt.Sscan(ids[0], &pid)
								return err == nil
							}, "the high watermark's INSERT to wait for the lock")
							var ok bool
							require.NoError(t, ctl.QueryRow(`SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
							require.True(t, ok)
						}()
					}
				}
				err = s.Snapshot(context.Background(), "items")
				require.NoError(t, err)
				// Chunk 2 was selected twice: its selection was opened again. (afterSelect
				// also runs for the empty chunk after 6000; duringSelect needs rows.)
				want, reopens := int32(4), uint64(1)
				if fault == "terminate-watermark" {
					// Through lib/pq, database/sql itself sends the INSERT again on a
					// new connection (lib/pq reports the terminated session as
					// driver.ErrBadConn before the statement got an answer): the
					// selection goes on. pgx's driver returns 57P01.
					want = 5
					if driver == "postgres" {
						want, reopens = 4, 0
					}
				}
				require.Equal(t, want, fired.Load())
				require.Equal(t, reopens, s.selectionReopens.Load())
				require.Len(t, chunks, 4) // 3 full chunks, then the empty one after 6000
				require.Equal(t, int64(6000), chunks[3].Rows)
				require.True(t, chunks[3].Done)
				catchUp(t, s)
				require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, ctl, "items")))
				requireNothingLeft(t, ctl)
			})
		}
	}
}

// TestRefreshSlotDroppedWhileWaiting drops the Syncer's slot between a Refresh's
// SELECT and its high watermark: the watermark can never be delivered. Run ends with
// ErrSlotMissing at its next poll, and the Refresh, waiting for the watermark, returns
// at once with ErrRefreshAbandoned naming why (not when its context ends).
func TestRefreshSlotDroppedWhileWaiting(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`, `INSERT INTO items VALUES (1, 'a'), (2, 'b')`)
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(h))
	r := runInBackground(s)
	t.Cleanup(r.cancel)
	s.win.afterSelect = func() {
		// The slot is active only during a poll's peek or advance: retry until the
		// drop finds it idle.
		waitFor(t, 10*time.Second, func() bool {
			_, err := d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, s.ReplicationSlot())
			return err == nil
		}, "the slot to be dropped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	_, err := s.RefreshContext(ctx, `SELECT * FROM items`)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorContains(t, err, "the Syncer stopped before its high watermark was delivered")
	require.ErrorIs(t, err, ErrSlotMissing)
	require.NoError(t, ctx.Err())
	require.Less(t, time.Since(start), 10*time.Second)
	require.ErrorIs(t, r.wait(t, 10*time.Second), ErrSlotMissing)
	require.Empty(t, h.eventList())
	requireNothingLeft(t, d.DB)
}

// TestSnapshotIdleInTransactionTimeout: with idle_in_transaction_session_timeout set
// for the database (300 ms), a Snapshot with 4 chunks in flight whose reader stalls
// for a second in the middle of every chunk's rows. A selection's transaction is
// open while its rows are read, but its session is not idle in it: the backend is
// still running the SELECT, blocked sending rows the reader has not taken (state
// 'active'), and the transaction ends (COMMIT) as soon as the last row was read,
// before the window's high watermark. So no selection is killed or opened again, and
// the cache ends exact. (Pinned through both drivers.)
func TestSnapshotIdleInTransactionTimeout(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			selectionFaultTable(t, d.DB)
			execAll(t, d.DB, `ALTER DATABASE `+pq.QuoteIdentifier(d.Name)+` SET idle_in_transaction_session_timeout = '300ms'`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			var timeout string
			require.NoError(t, db.QueryRow(`SHOW idle_in_transaction_session_timeout`).Scan(&timeout))
			require.Equal(t, "300ms", timeout)
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("items"),
				WithSnapshotChunkSize(2000), WithSnapshotChunksInFlight(4))
			var stalls atomic.Int32
			s.win.duringSelect = func() {
				stalls.Add(1)
				backendOf(t, d.DB, "active", "SELECT %FROM ONLY%items%")
				time.Sleep(time.Second)
			}
			require.NoError(t, s.Snapshot(context.Background(), "items"))
			require.Equal(t, int32(3), stalls.Load())
			require.Zero(t, s.selectionReopens.Load())
			catchUp(t, s)
			require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))
			requireNothingLeft(t, d.DB)
		})
	}
}
