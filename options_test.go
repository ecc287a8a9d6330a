package dbsync

import (
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

func env(m map[string]string) SyncerOpt {
	return withLookupEnv(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
}

func resolved(t *testing.T, opts ...SyncerOpt) *Syncer {
	t.Helper()
	s, err := NewSyncer(append(opts, WithSetup(false))...)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConfigDefaults(t *testing.T) {
	s := resolved(t, env(nil))
	require.Equal(t, "dbsync_ctrl", s.CtrlNamespace())
	require.Equal(t, "dbsync_mypub", s.Publication())
	require.Equal(t, "dbsync_replslot", s.ReplicationSlot())
	require.Equal(t, "dbsync_wmtable", s.WMTable())
	require.Equal(t, "host=localhost port=5432 user=postgres dbname=postgres sslmode=prefer", s.connStr)
	require.Equal(t, DefaultDelayBetweenPeekRetries, s.DelayBetweenPeekRetries)
	require.Equal(t, DefaultMaxMessagesToRead, s.MaxMessagesToRead)
	require.Equal(t, DefaultMinPollInterval, s.MinPollInterval)
	require.Equal(t, int64(DefaultMaxRestartLSNLag), s.MaxRestartLSNLag)
}

func TestConfigEnvOverridesDefaults(t *testing.T) {
	s := resolved(t, env(map[string]string{
		"POSTGRES_NAME": "legacy", "POSTGRES_HOST": "db.example", "POSTGRES_PORT": "6543",
		"POSTGRES_USER": "app user", "POSTGRES_PASSWORD": "s3cr'et",
		"DBSYNC_CTRL_NAMESPACE": "ctl", "DBSYNC_PUBNAME": "pub1", "DBSYNC_REPLSLOT": "slot1", "DBSYNC_WM_TABLENAME": "wm1",
	}))
	require.Equal(t, "ctl", s.CtrlNamespace())
	require.Equal(t, "pub1", s.Publication())
	require.Equal(t, "slot1", s.ReplicationSlot())
	require.Equal(t, "wm1", s.WMTable())
	require.Equal(t, `host=db.example port=6543 user='app user' dbname=legacy sslmode=prefer password='s3cr\'et'`, s.connStr)
	require.NotContains(t, RedactConnString(s.connStr), "s3cr")

	// POSTGRES_DB wins over the legacy POSTGRES_NAME.
	s = resolved(t, env(map[string]string{"POSTGRES_DB": "new", "POSTGRES_NAME": "legacy"}))
	require.Contains(t, s.connStr, "dbname=new ")
}

func TestConfigOptionsOverrideEnv(t *testing.T) {
	s := resolved(t, env(map[string]string{
		"POSTGRES_HOST": "envhost", "DBSYNC_CTRL_NAMESPACE": "ctl", "DBSYNC_PUBNAME": "pub1", "DBSYNC_REPLSLOT": "slot1", "DBSYNC_WM_TABLENAME": "wm1",
	}), WithPGConnStr("host=opthost dbname=x"), WithCtrlNamespace("octl"), WithPublication("opub"), WithReplicationSlot("oslot"), WithWMTable("owm"))
	require.Equal(t, "octl", s.CtrlNamespace())
	require.Equal(t, "opub", s.Publication())
	require.Equal(t, "oslot", s.ReplicationSlot())
	require.Equal(t, "owm", s.WMTable())
	require.Equal(t, "host=opthost dbname=x", s.connStr)
}

func TestConfigInvalid(t *testing.T) {
	for name, opt := range map[string]SyncerOpt{
		"slot with upper case":   WithReplicationSlot("MySlot"),
		"slot with dash":         WithReplicationSlot("my-slot"),
		"negative max":           WithMaxMessagesToRead(-1),
		"backoff factor < 1":     WithPollBackoff(time.Second, 0.5, time.Minute),
		"backoff max < initial":  WithPollBackoff(time.Second, 2, time.Millisecond),
		"nil db":                 WithDB(nil),
		"negative poll interval": WithMinPollInterval(-time.Millisecond),
		"negative restart lag":   WithMaxRestartLSNLag(-1),
		"long publication":       WithPublication(string(make([]byte, 64))),
		"zero chunk size":        WithSnapshotChunkSize(0),
		"zero chunks in flight":  WithSnapshotChunksInFlight(0),
		"zero parallel chunks":   WithSnapshotParallel(0),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewSyncer(opt, WithSetup(false), env(nil))
			require.ErrorIs(t, err, ErrConfig)
		})
	}
}

func TestRedactConnString(t *testing.T) {
	for in, want := range map[string]string{
		"host=x password=secret user=u":     "host=x password=*** user=u",
		`host=x password='a b\' c' user=u`:  "host=x password=*** user=u",
		"postgres://u:secret@h:5432/db?x=1": "postgres://u:***@h:5432/db?x=1",
		"host=x user=u":                     "host=x user=u",
		"postgres://u:p@ss@h/db":            "postgres://u:***@h/db",
		"postgres://u:p%40ss@h/db?a=b@c":    "postgres://u:***@h/db?a=b@c",
		"postgres://u@h/db":                 "postgres://u@h/db",
	} {
		require.Equal(t, want, RedactConnString(in), in)
	}
}

// TestIdleBackoffSequence: empty polls wait DelayBetweenPeekRetries, then grow by the
// factor up to the cap, and start over after a reset (changes arrived). No sleeping:
// the backoff is a pure sequence.
func TestIdleBackoffSequence(t *testing.T) {
	s := &Syncer{DelayBetweenPeekRetries: 100 * time.Millisecond, TimerDelayBackoffFactor: 2, MaxDelayBetweenEmptyPeeks: time.Second}
	b := s.idleBackoff()
	var got []time.Duration
	for i := 0; i < 6; i++ {
		got = append(got, b.NextBackOff())
	}
	ms := time.Millisecond
	require.Equal(t, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second}, got)
	b.Reset()
	require.Equal(t, 100*ms, b.NextBackOff())

	s = &Syncer{DelayBetweenPeekRetries: 100 * time.Millisecond, TimerDelayBackoffFactor: 1.5, MaxDelayBetweenEmptyPeeks: 5 * time.Second}
	b = s.idleBackoff()
	got = got[:0]
	for i := 0; i < 4; i++ {
		got = append(got, b.NextBackOff())
	}
	require.Equal(t, []time.Duration{100 * ms, 150 * ms, 225 * ms, 337500 * time.Microsecond}, got)
}

func TestRetryBackoffNeverGivesUp(t *testing.T) {
	b := newRetryBackoff()
	for i := 0; i < 100; i++ {
		d := b.NextBackOff()
		require.Greater(t, d, time.Duration(0))
		require.LessOrEqual(t, d, 45*time.Second, "30 s cap plus jitter")
	}
}

// TestFlushWatchWait: while nothing is flushed the poller compares the flush LSN every
// 100 ms for the first 2 s, then every 250 ms.
func TestFlushWatchWait(t *testing.T) {
	for quiet, want := range map[time.Duration]time.Duration{
		0:                               100 * time.Millisecond,
		time.Second:                     100 * time.Millisecond,
		2*time.Second - time.Nanosecond: 100 * time.Millisecond,
		2 * time.Second:                 250 * time.Millisecond,
		time.Hour:                       250 * time.Millisecond,
	} {
		require.Equal(t, want, flushWatchWait(quiet), "quiet for %v", quiet)
	}
}

// TestConnStringFromEnvQuotesWhitespace: a POSTGRES_* value holding any whitespace
// (tab, newline) is quoted, so libpq's key=value parser (lib/pq's here) reads it whole
// instead of failing on what follows it, and printing a piece of the password in its
// error.
func TestConnStringFromEnvQuotesWhitespace(t *testing.T) {
	for _, pw := range []string{"abc\tTOPSECRET", "a\nb", "x y", `q'uo\te`, "plain"} {
		env := map[string]string{"POSTGRES_HOST": "h", "POSTGRES_USER": "u", "POSTGRES_PASSWORD": pw}
		cs := ConnStringFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		_, err := pq.NewConnector(cs)
		require.NoError(t, err, "%q", cs)
		require.NotContains(t, RedactConnString(cs), "TOPSECRET")
	}
}
