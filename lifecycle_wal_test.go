package dbsync

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// TestWALRetentionIdlePublication: the published table is idle while an unpublished
// one writes ~2 MB of WAL. The slot must keep up all the same: confirmed_flush_lsn at
// the flush LSN and restart_lsn within MaxRestartLSNLag of it, both while Run runs and
// after it was stopped during more writes and run again; nothing is delivered.
func TestWALRetentionIdlePublication(t *testing.T) {
	setRestartTimings(t, 20*time.Millisecond, 2*time.Second)
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE pubt (id int PRIMARY KEY)`, `CREATE TABLE busy (id int PRIMARY KEY, pad text)`)
	h := newCacheHandler()
	const maxLag = 64 << 10
	s := newTestSyncer(t, d, ForTables("pubt"), WithMessageHandler(h), WithMaxRestartLSNLag(maxLag))
	slot := s.ReplicationSlot()
	restart0, _ := slotLag(t, d.DB, slot)
	check := func(phase string) {
		t.Helper()
		waitCaughtUp(t, d.DB, slot)
		var restart, confirmed pglogrepl.LSN
		waitFor(t, 20*time.Second, func() bool {
			restart, confirmed = slotLag(t, d.DB, slot)
			return uint64(confirmed-restart) <= 2*maxLag
		}, "%s: restart_lsn within %d bytes of confirmed_flush_lsn", phase, 2*maxLag)
		t.Logf("%s: restart_lsn %s (from %s), confirmed_flush_lsn %s, %d records logged", phase, restart, restart0, confirmed, s.RestartLSNLogs())
		require.Greater(t, uint64(restart-restart0), uint64(2<<20), "%s: restart_lsn moved past the writes", phase)
		restart0 = restart
	}
	r := runInBackground(s)
	writeSteadily(t, d.DB, "busy", 1, 2500)
	check("running")
	require.NoError(t, r.stop(t))
	writeSteadily(t, d.DB, "busy", 2501, 2500)
	r = runInBackground(s)
	check("after a restart")
	require.NoError(t, r.stop(t))
	require.Empty(t, h.eventList())
	require.Empty(t, otherSlots(t, d.DB, slot), "temporary slots left behind")
}

// TestRestartLSNFollowsConfirmedEventsProcessor is TestRestartLSNFollowsConfirmed
// for a Syncer delivering to an EventsProcessor: MaxRestartLSNLag holds for it too
// (its docs: checks run while Run's polls read something), so restart_lsn follows
// confirmed_flush_lsn instead of moving about every 15 s.
func TestRestartLSNFollowsConfirmedEventsProcessor(t *testing.T) {
	setRestartTimings(t, 20*time.Millisecond, 2*time.Second)
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rx (id int PRIMARY KEY, pad text)`)
	var rows atomic.Int64
	const maxLag = 64 << 10
	s := newTestSyncer(t, d, ForTables("rx"), WithMaxRestartLSNLag(maxLag),
		WithEventsProcessor(func(msgs []PGMSG, err error) (int, bool) {
			for _, m := range msgs {
				if len(m.Data) > 0 && m.Data[0] == 'I' {
					rows.Add(1)
				}
			}
			return len(msgs), false
		}))
	slot := s.ReplicationSlot()
	r := runInBackground(s)
	waitCaughtUp(t, d.DB, slot)
	restart0, _ := slotLag(t, d.DB, slot)
	const n = 2000
	writeSteadily(t, d.DB, "rx", 1, n)
	r.waitFor(t, 20*time.Second, func() bool { return rows.Load() == n }, "%d inserts", n)
	waitCaughtUp(t, d.DB, slot)
	var restart, confirmed pglogrepl.LSN
	r.waitFor(t, 10*time.Second, func() bool {
		restart, confirmed = slotLag(t, d.DB, slot)
		return uint64(confirmed-restart) <= 2*maxLag
	}, "restart_lsn to come within %d bytes of confirmed_flush_lsn (%d records logged)", 2*maxLag, s.RestartLSNLogs())
	require.NoError(t, r.stop(t))
	t.Logf("restart_lsn %s -> %s, confirmed_flush_lsn %s, %d records logged", restart0, restart, confirmed, s.RestartLSNLogs())
	require.GreaterOrEqual(t, s.RestartLSNLogs(), uint64(10), "one record per ~%d bytes", maxLag)
	require.Empty(t, otherSlots(t, d.DB, slot), "temporary slots left behind")
}
