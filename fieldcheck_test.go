package dbsync

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestRunChecksExportedFields: a poller setting set on the struct directly, out of the
// range its option accepts, makes Run return ErrConfig naming the field at once, before
// it reads the slot (an idle backoff of 0 would poll without a pause; a negative bound
// would reach the server as a bad upto_nchanges), and the slot is left where it was.
// The same Syncer runs once the field is set right.
func TestRunChecksExportedFields(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE fc (id int PRIMARY KEY, v text)`)
	s := newTestSyncer(t, d, ForTables("fc"), WithMessageHandler(DefaultMessageHandler{}))
	confirmed := func() string {
		return queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot())[0]
	}
	execAll(t, d.DB, `INSERT INTO fc VALUES (1, 'a')`)
	before := confirmed()
	good := *s.settingsForTest()
	cases := []struct {
		field string
		set   func(*Syncer)
	}{
		{"DelayBetweenPeekRetries", func(s *Syncer) { s.DelayBetweenPeekRetries = 0 }},
		{"DelayBetweenPeekRetries", func(s *Syncer) { s.DelayBetweenPeekRetries = -time.Second }},
		{"TimerDelayBackoffFactor", func(s *Syncer) { s.TimerDelayBackoffFactor = 0.5 }},
		{"TimerDelayBackoffFactor", func(s *Syncer) { s.TimerDelayBackoffFactor = math.NaN() }},
		{"MaxDelayBetweenEmptyPeeks", func(s *Syncer) { s.MaxDelayBetweenEmptyPeeks = time.Millisecond }},
		{"MinPollInterval", func(s *Syncer) { s.MinPollInterval = -time.Millisecond }},
		{"MaxMessagesToRead", func(s *Syncer) { s.MaxMessagesToRead = -1 }},
		{"MaxMessagesToRead", func(s *Syncer) { s.MaxMessagesToRead = math.MaxInt32 + 1 }},
		{"HandlerErrorPolicy", func(s *Syncer) { s.HandlerErrorPolicy = 7 }},
	}
	for _, c := range cases {
		s.restoreSettingsForTest(good)
		c.set(s)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.Run(ctx)
		cancel()
		require.ErrorIs(t, err, ErrConfig, c.field)
		require.ErrorContains(t, err, "Syncer."+c.field+" = ", c.field)
		require.False(t, errors.Is(err, context.DeadlineExceeded), "Run returned at once, not at the deadline")
		require.Equal(t, before, confirmed(), "%s: the slot was not read or moved", c.field)
	}

	// Set right, the same Syncer runs and forwards the slot.
	s.restoreSettingsForTest(good)
	r := runInBackground(s)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())

	// The snapshot settings are read by Snapshot, and may be set while Run runs
	// (as the demo does): Snapshot checks them and reads nothing when one is negative.
	for _, c := range []struct {
		field string
		set   func(*Syncer)
	}{
		{"SnapshotChunkSize", func(s *Syncer) { s.SnapshotChunkSize = -1 }},
		{"SnapshotChunksInFlight", func(s *Syncer) { s.SnapshotChunksInFlight = -2 }},
		{"SnapshotParallel", func(s *Syncer) { s.SnapshotParallel = -3 }},
	} {
		s.SnapshotChunkSize, s.SnapshotChunksInFlight, s.SnapshotParallel = good.chunk, good.inFlight, good.par
		c.set(s)
		err := s.Snapshot(context.Background(), "fc")
		require.ErrorIs(t, err, ErrConfig, c.field)
		require.ErrorContains(t, err, "Syncer."+c.field+" = ", c.field)
	}
	require.Empty(t, queryStrings(t, d.DB, `SELECT table_name FROM `+s.CtrlNamespace()+`.snapshot_progress`), "no Snapshot began")
	s.SnapshotChunkSize, s.SnapshotChunksInFlight, s.SnapshotParallel = 1, 0, 0
	require.NoError(t, s.Snapshot(context.Background(), "fc"))
	require.NoError(t, r.stop(t))
	require.NotEqual(t, before, confirmed())
}
