package dbsync

import (
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
