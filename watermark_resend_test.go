package dbsync

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestWatermarkInsertResentAfterLostReply: a watermark INSERT commits, but its
// session ends before the client read the reply. The server holds the commit
// between its flush and the reply with a synchronous standby that never answers
// (synchronous_standby_names = 'nobody', synchronous_commit turned on for that one
// INSERT by a trigger), and the test terminates the session there: PostgreSQL
// warns "the transaction has already committed locally" and closes the
// connection. lib/pq reports the EOF as driver.ErrBadConn, so database/sql sends
// the same INSERT (same selection_id and wm_type) again on a new connection; pgx's
// driver returns the error instead. Either way the Refresh must deliver every row
// exactly once and leave no watermark row behind.
func TestWatermarkInsertResentAfterLostReply(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	for _, driver := range []string{"postgres", "pgx"} {
		for _, kind := range []string{"low", "high"} {
			t.Run(driver+"/"+kind, func(t *testing.T) {
				d := srv.NewDatabase(t)
				// Every session commits locally but the held watermark INSERT.
				dsn := d.DSN() + " synchronous_commit=local"
				ctl, err := sql.Open("postgres", dsn)
				require.NoError(t, err)
				t.Cleanup(func() { ctl.Close() })
				execAll(t, ctl, `CREATE TABLE items (id int PRIMARY KEY, v text)`,
					`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 50) g`)
				db, err := sql.Open(driver, dsn)
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				h := newCacheHandler()
				s, stop := startSyncer(t, dsn, pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("items"))
				execAll(t, ctl, `CREATE TABLE wm_hold (kind text)`,
					`CREATE FUNCTION hold_wm() RETURNS trigger LANGUAGE plpgsql AS $$
					BEGIN
						IF EXISTS (SELECT 1 FROM public.wm_hold WHERE kind = NEW.wm_type) THEN
							DELETE FROM public.wm_hold WHERE kind = NEW.wm_type; -- once
							PERFORM set_config('synchronous_commit', 'on', true);
						END IF;
						RETURN NEW;
					END $$`,
					`CREATE TRIGGER hold_wm BEFORE INSERT ON dbsync_ctrl.dbsync_wmtable FOR EACH ROW EXECUTE FUNCTION public.hold_wm()`)
				holdSyncCommits(t, ctl)
				execAll(t, ctl, `INSERT INTO wm_hold VALUES ('`+kind+`')`)
				var terminated atomic.Int32
				done := make(chan struct{})
				go func() {
					defer close(done)
					deadline := time.Now().Add(20 * time.Second)
					for time.Now().Before(deadline) {
						var pid int
						err := ctl.QueryRow(`SELECT pid FROM pg_stat_activity WHERE datname = current_database()
							AND wait_event = 'SyncRep' AND query LIKE 'INSERT INTO "dbsync_ctrl"."dbsync_wmtable"%'`).Scan(&pid)
						if err == nil {
							var ok bool
							if ctl.QueryRow(`SELECT pg_terminate_backend($1)`, pid).Scan(&ok) == nil && ok {
								terminated.Add(1)
							}
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
				}()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				stats, err := s.RefreshContext(ctx, `SELECT * FROM items`)
				<-done
				require.Equal(t, int32(1), terminated.Load(), "the watermark INSERT was held and its session terminated")
				// The terminated INSERT committed: its row is in the slot.
				require.NoError(t, err)
				require.Equal(t, 50, stats.Emitted)
				catchUp(t, s)
				keys := map[string]int{}
				for _, k := range h.refreshKeys {
					keys[k]++
				}
				require.Len(t, keys, 50)
				for k, n := range keys {
					require.Equal(t, 1, n, "refresh rows of %s", k)
				}
				require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, ctl, "items")))
				require.NoError(t, stop())
				execAll(t, ctl, `ALTER SYSTEM RESET synchronous_standby_names`, `SELECT pg_reload_conf()`)
				var wm int
				require.NoError(t, ctl.QueryRow(`SELECT count(*) FROM dbsync_ctrl.dbsync_wmtable`).Scan(&wm))
				require.Zero(t, wm, "watermark rows left behind")
			})
		}
	}
}

// holdSyncCommits sets synchronous_standby_names = 'nobody' and waits until a commit
// with synchronous_commit = on waits for the standby (the checkpointer applies the
// setting after the reload); ctl's sessions commit with synchronous_commit = local.
func holdSyncCommits(t *testing.T, ctl *sql.DB) {
	t.Helper()
	execAll(t, ctl, `ALTER SYSTEM SET synchronous_standby_names = 'nobody'`, `SELECT pg_reload_conf()`,
		`CREATE TABLE IF NOT EXISTS sync_probe (n int)`)
	t.Cleanup(func() {
		// Two statements: ALTER SYSTEM cannot run in a multi-statement query's
		// implicit transaction.
		ctl.Exec(`ALTER SYSTEM RESET synchronous_standby_names`)
		ctl.Exec(`SELECT pg_reload_conf()`)
	})
	ctx := context.Background()
	conn, err := ctl.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	var pid int
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	waitFor(t, 20*time.Second, func() bool {
		res := make(chan error, 1)
		go func() {
			_, err := conn.ExecContext(ctx, `BEGIN; SET LOCAL synchronous_commit = on; INSERT INTO sync_probe VALUES (1); COMMIT`)
			res <- err
		}()
		for {
			select {
			case err := <-res:
				require.NoError(t, err)
				return false // committed without waiting: not in force yet
			default:
			}
			var ev sql.NullString
			require.NoError(t, ctl.QueryRow(`SELECT wait_event FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&ev))
			if ev.String == "SyncRep" {
				_, err := ctl.Exec(`SELECT pg_cancel_backend($1)`, pid)
				require.NoError(t, err)
				require.NoError(t, <-res)
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
	}, "commits with synchronous_commit = on to wait for the synchronous standby")
}

// TestRefreshDuplicateWatermarkRows: the slot carries a selection's watermark row
// twice (written by the test through the afterSelect hook, between the SELECT and
// the high watermark; the primary key makes dbsync's own INSERT of a row that is
// already there a no-op). A high watermark twice in one transaction (deleted and
// inserted again) must deliver the rows once; a low watermark again after the
// SELECT must not lose the window's effect on a key changed inside it (the change
// also comes after the SELECT, invisible to it) nor deliver anything twice.
func TestRefreshDuplicateWatermarkRows(t *testing.T) {
	for _, kind := range []string{"high", "low"} {
		t.Run(kind, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			ctx := context.Background()
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`,
				`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 20) g`)
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"))
			var hooked atomic.Int32
			s.win.afterSelect = func() {
				hooked.Add(1)
				ids := queryStrings(t, d.DB, `SELECT selection_id FROM dbsync_ctrl.dbsync_wmtable WHERE wm_type = 'low'`)
				require.Len(t, ids, 1)
				tx, err := d.DB.Begin()
				require.NoError(t, err)
				stmts := []string{
					`INSERT INTO dbsync_ctrl.dbsync_wmtable (selection_id, wm_type) VALUES ($1, 'high')`,
					`DELETE FROM dbsync_ctrl.dbsync_wmtable WHERE selection_id = $1 AND wm_type = 'high'`,
					`INSERT INTO dbsync_ctrl.dbsync_wmtable (selection_id, wm_type) VALUES ($1, 'high')`,
				}
				if kind == "low" {
					execAll(t, d.DB, `UPDATE items SET v = 'changed' WHERE id = 7`)
					stmts = []string{
						`DELETE FROM dbsync_ctrl.dbsync_wmtable WHERE selection_id = $1 AND wm_type = 'low'`,
						`INSERT INTO dbsync_ctrl.dbsync_wmtable (selection_id, wm_type) VALUES ($1, 'low')`,
					}
				}
				for _, q := range stmts {
					_, err := tx.Exec(q, ids[0])
					require.NoError(t, err, q)
				}
				require.NoError(t, tx.Commit())
			}
			stats, err := s.RefreshContext(ctx, `SELECT * FROM items`)
			require.NoError(t, err)
			require.Equal(t, int32(1), hooked.Load())
			catchUp(t, s)
			want := expectedCounts(t, d, map[string]int{"items": 1})
			if kind == "low" {
				delete(want, `public.items ["7"]`) // changed inside the window: its change carries it
				require.Equal(t, RefreshStats{Selected: 20, Emitted: 19}, stats)
			} else {
				require.Equal(t, RefreshStats{Selected: 20, Emitted: 20}, stats)
			}
			require.Equal(t, want, refreshCounts(h))
			require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))
			var wm int
			require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM dbsync_ctrl.dbsync_wmtable`).Scan(&wm))
			require.Zero(t, wm, "watermark rows left behind")
		})
	}
}
