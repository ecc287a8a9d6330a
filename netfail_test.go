package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// netDrivers are the two drivers a Syncer is used with, each pointed at the proxy.
var netDrivers = []struct {
	name string
	opts func(t *testing.T, p *netProxy, d *pgtest.Database) []SyncerOpt
}{
	{"pq", func(t *testing.T, p *netProxy, d *pgtest.Database) []SyncerOpt {
		return []SyncerOpt{WithPGConnStr(p.DSN(d))}
	}},
	{"pgx", func(t *testing.T, p *netProxy, d *pgtest.Database) []SyncerOpt {
		db, err := sql.Open("pgx", p.DSN(d))
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		return []SyncerOpt{WithDB(db)}
	}},
}

// stopReturnBound is how long Run may take to return after its context ended, and
// Close after it was called, when the server cannot be reached (README, "Stopping").
const stopReturnBound = stopBound + 2*cleanupTimeout

// TestBlackholeCancelRunReturns: with the network to the server blackholed while Run
// polls (its statement sent, no answer coming; the slot lock session held), cancelling
// Run's context makes it return within the bound, and so does Close; once the network
// heals, a new Syncer on the slot delivers the row written meanwhile, once.
func TestBlackholeCancelRunReturns(t *testing.T) {
	for _, drv := range netDrivers {
		t.Run(drv.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE nf (id int PRIMARY KEY)`)
			p := newNetProxy(t, d)
			rec := &recorder{}
			s := newTestSyncer(t, d, append(drv.opts(t, p, d), ForTables("nf"), WithMessageHandler(rec))...)
			r := runInBackground(s)
			execAll(t, d.DB, `INSERT INTO nf VALUES (1)`)
			r.waitFor(t, 20*time.Second, func() bool { return len(rec.snapshot()) == 3 }, "first row, have %v", rec)
			// Row 1 forwarded before the network goes: one whose advance the blackhole
			// cut would come again to the next Syncer, as README's "Guarantees" says (a
			// lost connection never moves the slot; CI, 2026-11-23 09:17: row 1 twice).
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			p.blackhole()
			waitFor(t, 20*time.Second, func() bool { return p.heldChunks() > 0 }, "a poll's statement held by the blackhole")
			execAll(t, d.DB, `INSERT INTO nf VALUES (2)`)
			start := time.Now()
			r.cancel()
			select {
			case err := <-r.done:
				require.NoError(t, err)
			case <-time.After(stopReturnBound):
				dumpStuck(t)
				p.heal() // let the test end
				t.Fatalf("Run did not return within %s of its context's end with the network blackholed", stopReturnBound)
			}
			t.Logf("Run returned %s after cancel", time.Since(start))
			closed := make(chan error, 1)
			go func() { closed <- s.Close() }()
			select {
			case err := <-closed:
				require.NoError(t, err)
			case <-time.After(stopReturnBound):
				dumpStuck(t)
				p.heal()
				t.Fatalf("Close did not return within %s with the network blackholed", stopReturnBound)
			}
			p.heal()
			require.Equal(t, []string{"BEGIN", "INSERT public.nf id=1", "COMMIT"}, rec.snapshot())
			// The slot lock is not left behind: a new Syncer on the slot runs and gets row 2.
			rec2 := &recorder{}
			s2 := newTestSyncer(t, d, ForTables("nf"), WithMessageHandler(rec2))
			r2 := runInBackground(s2)
			r2.waitFor(t, 30*time.Second, func() bool { return len(rec2.snapshot()) >= 3 }, "row 2, have %v", rec2)
			require.NoError(t, r2.stop(t))
			require.Equal(t, []string{"BEGIN", "INSERT public.nf id=2", "COMMIT"}, rec2.snapshot())
		})
	}
}

// dumpStuck logs the goroutines in dbsync's code, for a hang's report.
func dumpStuck(t *testing.T) {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "dbsync/dbsync.(*Syncer)") && !strings.Contains(g, "netfail_test.go") {
			t.Log(g)
		}
	}
}

// TestResetAndHealResumeDelivery: Run goes on after every connection to the server was
// reset, and after a blackhole that heals, delivering each row written meanwhile once,
// in order (the slot was forwarded past row 1 before the reset, so nothing comes
// again), and takes the slot lock again on a new session.
func TestResetAndHealResumeDelivery(t *testing.T) {
	for _, drv := range netDrivers {
		t.Run(drv.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE nf (id int PRIMARY KEY)`)
			p := newNetProxy(t, d)
			rec := &recorder{}
			s := newTestSyncer(t, d, append(drv.opts(t, p, d), ForTables("nf"), WithMessageHandler(rec))...)
			slot := s.ReplicationSlot()
			r := runInBackground(s)
			row := func(id int) []string {
				return []string{"BEGIN", fmt.Sprintf("INSERT public.nf id=%d", id), "COMMIT"}
			}
			var want []string
			execAll(t, d.DB, `INSERT INTO nf VALUES (1)`)
			want = append(want, row(1)...)
			r.waitFor(t, 20*time.Second, func() bool { return len(rec.snapshot()) == len(want) }, "row 1, have %v", rec)
			waitCaughtUp(t, d.DB, slot)
			lockHolder := func() int {
				var pid int
				require.NoError(t, d.DB.QueryRow(slotLockHolder, slot).Scan(&pid))
				return pid
			}
			first := lockHolder()
			require.NotZero(t, first)

			p.reset()
			execAll(t, d.DB, `INSERT INTO nf VALUES (2)`, `INSERT INTO nf VALUES (3)`)
			want = append(want, row(2)...)
			want = append(want, row(3)...)
			r.waitFor(t, 60*time.Second, func() bool { return len(rec.snapshot()) >= len(want) }, "rows 2 and 3, have %v", rec)
			waitCaughtUp(t, d.DB, slot)
			r.waitFor(t, 60*time.Second, func() bool { h := lockHolder(); return h != 0 && h != first }, "the slot lock taken again on a new session")

			p.blackhole()
			waitFor(t, 20*time.Second, func() bool { return p.heldChunks() > 0 }, "a poll's statement held by the blackhole")
			execAll(t, d.DB, `INSERT INTO nf VALUES (4)`)
			want = append(want, row(4)...)
			p.heal()
			r.waitFor(t, 60*time.Second, func() bool { return len(rec.snapshot()) >= len(want) }, "row 4, have %v", rec)
			waitCaughtUp(t, d.DB, slot)
			require.NoError(t, r.stop(t))
			require.Equal(t, want, rec.snapshot())
		})
	}
}

// TestBlackholeCallsHonourContext: with the server unreachable, a Refresh, a Snapshot,
// GetMessages and Forward whose context ends return within the bound, with the
// context's error (Refresh and Snapshot: also ErrRefreshAbandoned), while Run (its
// context live) waits; after the heal Run delivers the row written meanwhile once,
// and the other slot was not moved by the Forward that failed.
func TestBlackholeCallsHonourContext(t *testing.T) {
	for _, drv := range netDrivers {
		t.Run(drv.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE nf (id int PRIMARY KEY)`, `INSERT INTO nf VALUES (1)`)
			p := newNetProxy(t, d)
			rec := &recorder{}
			opts := append(drv.opts(t, p, d), ForTables("nf"), WithMessageHandler(rec))
			low := newTestSyncer(t, d, append(opts, WithReplicationSlot(pgtest.Ident(t, "low")))...)
			s := newTestSyncer(t, d, opts...)
			r := runInBackground(s)
			execAll(t, d.DB, `INSERT INTO nf VALUES (2)`)
			r.waitFor(t, 20*time.Second, func() bool { return len(rec.snapshot()) == 3 }, "row 2, have %v", rec)
			waitCaughtUp(t, d.DB, s.ReplicationSlot()) // row 2 forwarded before the blackhole (see TestBlackholeCancelRunReturns)
			// Row 2 read from the other slot, for Forward to move it.
			msgs, err := low.GetMessagesContext(context.Background(), 0, false, nil)
			require.NoError(t, err)
			require.Len(t, msgs, 4) // BEGIN, RELATION, INSERT, COMMIT
			p.blackhole()
			waitFor(t, 20*time.Second, func() bool { return p.heldChunks() > 0 }, "a poll's statement held by the blackhole")
			execAll(t, d.DB, `INSERT INTO nf VALUES (3)`)
			call := func(name string, f func(ctx context.Context) error) error {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				done := make(chan error, 1)
				go func() { done <- f(ctx) }()
				select {
				case err := <-done:
					require.Error(t, err, name)
					require.ErrorIs(t, err, context.DeadlineExceeded, name)
					return err
				case <-time.After(stopReturnBound + time.Second):
					dumpStuck(t)
					p.heal()
					t.Fatalf("%s did not return within %s of its context's end with the network blackholed", name, stopReturnBound)
					return nil
				}
			}
			err = call("Refresh", func(ctx context.Context) error {
				_, err := s.RefreshContext(ctx, `SELECT * FROM nf`)
				return err
			})
			require.ErrorIs(t, err, ErrRefreshAbandoned)
			err = call("Snapshot", func(ctx context.Context) error { return s.Snapshot(ctx, "nf") })
			require.ErrorIs(t, err, ErrRefreshAbandoned)
			call("GetMessages", func(ctx context.Context) error {
				_, err := low.GetMessagesContext(ctx, 10, false, nil)
				return err
			})
			call("Forward", func(ctx context.Context) error { return low.ForwardContext(ctx, 10) })
			p.heal()
			want := []string{"BEGIN", "INSERT public.nf id=2", "COMMIT", "BEGIN", "INSERT public.nf id=3", "COMMIT"}
			r.waitFor(t, 60*time.Second, func() bool { return len(rec.snapshot()) >= len(want) }, "row 3, have %v", rec)
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			require.NoError(t, r.stop(t))
			require.Equal(t, want, rec.snapshot())
			msgs, err = low.GetMessagesContext(context.Background(), 0, false, nil)
			require.NoError(t, err)
			var kinds []byte
			for _, m := range msgs {
				if m.Data[0] != 'R' { // a RELATION comes once per session
					kinds = append(kinds, m.Data[0])
				}
			}
			require.Equal(t, "BICBIC", string(kinds), "rows 2 and 3 still in the other slot")
		})
	}
}

// TestBlackholeCloseEndsRefresh: with the server unreachable, Close ends a Refresh and
// a Snapshot stuck on it (their contexts live) and Run, within the bound; they return
// ErrRefreshAbandoned and ErrClosed.
func TestBlackholeCloseEndsRefresh(t *testing.T) {
	for _, drv := range netDrivers {
		t.Run(drv.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE nf (id int PRIMARY KEY)`, `INSERT INTO nf VALUES (1)`)
			p := newNetProxy(t, d)
			s := newTestSyncer(t, d, append(drv.opts(t, p, d), ForTables("nf"), WithMessageHandler(&recorder{}))...)
			r := runInBackground(s)
			r.waitFor(t, 20*time.Second, s.IsRunning, "Run")
			p.blackhole()
			refreshed, snapped := make(chan error, 1), make(chan error, 1)
			go func() { refreshed <- s.Refresh(`SELECT * FROM nf`) }()
			go func() { snapped <- s.Snapshot(context.Background(), "nf") }()
			// Held statements and held connection attempts alike: a call whose pool
			// had no idle connection left opens one, and the blackhole holds it before
			// it sends anything (CI under load: one statement held, two connections
			// waiting, for 20 s).
			waitFor(t, 20*time.Second, func() bool { return p.stuck() >= 2 }, "statements or connections held by the blackhole")
			closed := make(chan error, 1)
			start := time.Now()
			go func() { closed <- s.Close() }()
			deadline := time.After(stopReturnBound + 5*time.Second)
			for name, ch := range map[string]chan error{"Close": closed, "Run": r.done, "Refresh": refreshed, "Snapshot": snapped} {
				select {
				case err := <-ch:
					t.Logf("%s returned %s after Close began: %v", name, time.Since(start), err)
					if name == "Refresh" || name == "Snapshot" {
						require.ErrorIs(t, err, ErrRefreshAbandoned, name)
						require.ErrorIs(t, err, ErrClosed, name)
					} else {
						require.NoError(t, err, name)
					}
				case <-deadline:
					dumpStuck(t)
					p.heal()
					t.Fatalf("%s did not return within %s of Close with the network blackholed", name, stopReturnBound+5*time.Second)
				}
			}
		})
	}
}

// TestBlackholeMidTeardownReturns: a Teardown whose connection stops answering once it
// holds the setup lock (its slot lock check held by the blackhole) returns within 30 s
// of its context's end (README, "Stopping"), with an error, rather than waiting
// for good on the release; once the network heals the setup lock is free (its session
// was closed) and the slot is still there.
func TestBlackholeMidTeardownReturns(t *testing.T) {
	for _, drv := range netDrivers {
		t.Run(drv.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE nf (id int PRIMARY KEY)`)
			p := newNetProxy(t, d)
			s := newTestSyncer(t, d, append(drv.opts(t, p, d), ForTables("nf"))...)
			p.blackholeOn("pg_try_advisory_lock")
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			done := make(chan error, 1)
			start := time.Now()
			go func() { _, err := s.TeardownWithResult(ctx); done <- err }()
			// README: within 30 s of its context's end (after 1 s here); the slot lock
			// check runs to its own end, slotLockQueryTimeout after it began, before
			// the context ended. A second for scheduling.
			bound := time.Second + stopReturnBound + time.Second
			select {
			case err := <-done:
				t.Logf("Teardown returned after %s: %v", time.Since(start), err)
				require.ErrorIs(t, err, context.DeadlineExceeded)
			case <-time.After(bound):
				dumpStuck(t)
				p.heal()
				t.Fatalf("Teardown did not return within %s with the network blackholed", bound)
			}
			p.heal()
			require.Equal(t, []string{s.ReplicationSlot()}, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()))
			waitFor(t, 20*time.Second, func() bool {
				var n int
				require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n))
				return n == 0
			}, "no advisory lock left")
		})
	}
}

// TestResetMidRefresh: every connection reset while a Refresh reads its rows: the
// Refresh returns the connection's error (or completes) within the bound, Run goes on,
// and a Refresh after it delivers the table's rows once; the change written meanwhile
// is delivered once.
func TestResetMidRefresh(t *testing.T) {
	for _, drv := range netDrivers {
		t.Run(drv.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE nf (id int PRIMARY KEY)`, `INSERT INTO nf VALUES (1), (2)`)
			p := newNetProxy(t, d)
			rec := &recorder{}
			s := newTestSyncer(t, d, append(drv.opts(t, p, d), ForTables("nf"), WithMessageHandler(refreshRecorder{rec}))...)
			r := runInBackground(s)
			r.waitFor(t, 20*time.Second, s.IsRunning, "Run")
			p.blackholeOn("nf_refresh_marker")
			done := make(chan error, 1)
			go func() { done <- s.Refresh(`SELECT * FROM nf /* nf_refresh_marker */`) }()
			waitFor(t, 20*time.Second, func() bool { return p.heldChunks() > 0 }, "the Refresh's select held")
			p.reset()
			p.heal()
			select {
			case err := <-done:
				// A lost connection is the documented "server error": the query's own.
				// The marker is also in the EXPLAIN that finds the query's table: when
				// the reset hits that one, lib/pq reports driver.ErrBadConn before
				// anything was read and database/sql runs it again on a new
				// connection, and the Refresh completes.
				t.Logf("Refresh after the reset: %v", err)
				require.True(t, err == nil || isTransient(err), "a lost connection's error: %v", err)
			case <-time.After(stopReturnBound):
				dumpStuck(t)
				t.Fatalf("Refresh did not return within %s of the reset", stopReturnBound)
			}
			waitCaughtUp(t, d.DB, s.ReplicationSlot()) // the failed Refresh's watermarks delivered
			// The reset left dead connections idle in the pool; a transaction that
			// meets one fails once with its error (database/sql does not retry a
			// statement inside a transaction): they are dropped so the Refresh below
			// checks delivery, not that.
			s.DB().SetMaxIdleConns(0)
			s.DB().SetMaxIdleConns(2)
			rec.mu.Lock()
			rec.lines = nil
			rec.mu.Unlock()
			require.NoError(t, s.Refresh(`SELECT * FROM nf`))
			execAll(t, d.DB, `INSERT INTO nf VALUES (3)`)
			want := []string{
				"BEGIN", "COMMIT", // low watermark
				"BEGIN", // high watermark
				`REFRESH public.nf (relation public.nf) ["1"] cols=[id] map[id:1]`,
				`REFRESH public.nf (relation public.nf) ["2"] cols=[id] map[id:2]`,
				"COMMIT",
				"BEGIN", "COMMIT", // the watermark rows deleted
				"BEGIN", "INSERT public.nf id=3", "COMMIT",
			}
			r.waitFor(t, 30*time.Second, func() bool { return len(rec.snapshot()) >= len(want) }, "rows, have %v", rec)
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			require.NoError(t, r.stop(t))
			require.Equal(t, want, rec.snapshot())
		})
	}
}

// TestBlackholeTeardownUnlockReturns: a Teardown that finds the slot driven by a
// running Syncer (ErrSlotInUse) and whose connection stops answering as it releases
// the lock it tears down under (pg_advisory_unlock of the setup lock) returns within
// the bound of its context's end (README, "Stopping when the server does not
// answer"), with ErrSlotInUse, rather than waiting for the server for good; once the
// network heals the setup lock is free (its session was closed) and the slot is
// still there.
func TestBlackholeTeardownUnlockReturns(t *testing.T) {
	for _, drv := range netDrivers {
		t.Run(drv.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE nf (id int PRIMARY KEY)`)
			p := newNetProxy(t, d)
			runner := newTestSyncer(t, d, ForTables("nf"), WithMessageHandler(&recorder{}))
			r := runInBackground(runner)
			defer r.stop(t)
			slot := runner.ReplicationSlot()
			waitFor(t, 20*time.Second, func() bool {
				var pid int
				require.NoError(t, d.DB.QueryRow(slotLockHolder, slot).Scan(&pid))
				return pid != 0
			}, "the running Syncer's slot lock")
			td := newTestSyncer(t, d, append(drv.opts(t, p, d), WithReplicationSlot(slot), WithSetup(false))...)
			p.blackholeOn("pg_advisory_unlock($1)")
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			done := make(chan error, 1)
			start := time.Now()
			go func() { _, err := td.TeardownWithResult(ctx); done <- err }()
			select {
			case err := <-done:
				t.Logf("Teardown returned after %s: %v", time.Since(start), err)
				require.ErrorIs(t, err, ErrSlotInUse)
			case <-time.After(time.Second + stopReturnBound):
				dumpStuck(t)
				p.heal()
				t.Fatalf("Teardown did not return within %s of its context's end with the network blackholed", stopReturnBound)
			}
			p.heal()
			require.Equal(t, []string{slot}, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, slot))
			waitFor(t, 20*time.Second, func() bool {
				var n int
				require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid::bigint = $1 AND objsubid = 1 AND granted`, int64(setupLockKey+1)).Scan(&n))
				return n == 0
			}, "the setup lock released")
		})
	}
}

// TestPartitionSlotLockHeldUntilHeal: after a partition, Run and Close return within
// the bound, having closed the slot lock's session on their side; but the server does
// not learn of that while the partition lasts, and holds the slot lock for the
// session: a Run on the slot meanwhile (another process, reaching the server another
// way) returns ErrSlotInUse naming that session's backend PID. Once the network heals
// (the close gets through) the lock is gone and a Run on the slot delivers the row
// written meanwhile, once.
func TestPartitionSlotLockHeldUntilHeal(t *testing.T) {
	for _, drv := range netDrivers {
		t.Run(drv.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE nf (id int PRIMARY KEY)`)
			p := newNetProxy(t, d)
			rec := &recorder{}
			s := newTestSyncer(t, d, append(drv.opts(t, p, d), ForTables("nf"), WithMessageHandler(rec))...)
			slot := s.ReplicationSlot()
			holder := func() int {
				var pid int
				require.NoError(t, d.DB.QueryRow(slotLockHolder, slot).Scan(&pid))
				return pid
			}
			r := runInBackground(s)
			execAll(t, d.DB, `INSERT INTO nf VALUES (1)`)
			r.waitFor(t, 20*time.Second, func() bool { return len(rec.snapshot()) == 3 }, "first row, have %v", rec)
			waitCaughtUp(t, d.DB, slot) // row 1 forwarded before the partition (see TestBlackholeCancelRunReturns)
			pid := holder()
			require.NotZero(t, pid)
			p.partition()
			waitFor(t, 20*time.Second, func() bool { return p.heldChunks() > 0 }, "a poll's statement held by the partition")
			execAll(t, d.DB, `INSERT INTO nf VALUES (2)`)
			r.cancel()
			select {
			case err := <-r.done:
				require.NoError(t, err)
			case <-time.After(stopReturnBound):
				dumpStuck(t)
				p.heal()
				t.Fatalf("Run did not return within %s of its context's end", stopReturnBound)
			}
			closed := make(chan error, 1)
			go func() { closed <- s.Close() }()
			select {
			case err := <-closed:
				require.NoError(t, err)
			case <-time.After(stopReturnBound):
				dumpStuck(t)
				p.heal()
				t.Fatalf("Close did not return within %s", stopReturnBound)
			}
			require.Equal(t, pid, holder(), "the server still holds the slot lock for the partitioned session")
			rec2 := &recorder{}
			s2 := newTestSyncer(t, d, ForTables("nf"), WithMessageHandler(rec2))
			err := s2.Run(context.Background())
			require.ErrorIs(t, err, ErrSlotInUse)
			require.ErrorContains(t, err, fmt.Sprintf("backend PID %d holds its lock", pid))
			p.heal()
			waitFor(t, 20*time.Second, func() bool { return holder() == 0 }, "the slot lock dropped with its session once the close got through")
			r2 := runInBackground(s2)
			r2.waitFor(t, 30*time.Second, func() bool { return len(rec2.snapshot()) >= 3 }, "row 2, have %v", rec2)
			require.NoError(t, r2.stop(t))
			require.Equal(t, []string{"BEGIN", "INSERT public.nf id=2", "COMMIT"}, rec2.snapshot())
			require.Equal(t, []string{"BEGIN", "INSERT public.nf id=1", "COMMIT"}, rec.snapshot())
		})
	}
}
