package dbsync

import (
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestPartitionRunStopsAfterOneSweep: with the network to the server partitioned
// while Run polls through NewSyncer's own lib/pq pool, cancelling Run's context ends
// the stuck poll at the first sweep of stuck sockets (stopBound after the context
// ended, once a probe finds the server silent), and the release of the slot lock
// that follows does not send a statement into the same silence: it ends the lock's
// session instead. Before, the release's pg_advisory_unlock hung too, waiting for a
// second sweep (cleanupTimeout of waiting, then another unanswered probe), which
// under load took Run past its documented 30 s bound
// (TestPartitionSlotLockHeldUntilHeal/pq, 1 of 2 runs under load).
func TestPartitionRunStopsAfterOneSweep(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE nf (id int PRIMARY KEY)`)
	p := newNetProxy(t, d)
	logger, logs := newLogCapture()
	rec := &recorder{}
	s := newTestSyncer(t, d, WithPGConnStr(p.DSN(d)), ForTables("nf"), WithMessageHandler(rec), WithLogger(logger))
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO nf VALUES (1)`)
	r.waitFor(t, 20*time.Second, func() bool { return len(rec.snapshot()) == 3 }, "first row, have %v", rec)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	p.partition()
	waitFor(t, 20*time.Second, func() bool { return p.heldChunks() > 0 }, "a poll's statement held by the partition")
	start := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		require.NoError(t, err)
	case <-time.After(stopReturnBound):
		dumpStuck(t)
		p.heal()
		t.Fatalf("Run did not return within %s of its context's end", stopReturnBound)
	}
	took := time.Since(start)
	p.heal()
	// The first sweep runs stopBound after the context ended and waits up to
	// probeTimeout for the probe; a second one needs cleanupTimeout more of waiting
	// and another probe (at least stopBound + 2*probeTimeout + cleanupTimeout: 29 s).
	require.Less(t, took, stopBound+probeTimeout+cleanupTimeout,
		"Run returned %s after its context ended; log:\n%s", took, logs)
	require.Contains(t, logs.String(), "the slot lock's session is closed without an unlock")
}
