package dbsync

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestWakeKeepsRetryBackoff: under RetryOnHandlerError a failing transaction is
// retried after the retry backoff (100 ms doubling, with jitter), and Wake, which a
// Refresh or Snapshot calls after each high watermark, does not cut that backoff
// short. It did: with Wake called every 5 ms the failing transaction was read and
// handed over again at that rate. Once the handler succeeds the row is delivered.
func TestWakeKeepsRetryBackoff(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE wk (id int PRIMARY KEY)`)
	var attempts atomic.Int64
	var failing atomic.Bool
	failing.Store(true)
	h := &recorder{}
	h.setFail(func(line string) error {
		if strings.HasPrefix(line, "INSERT") {
			attempts.Add(1)
			if failing.Load() {
				return errors.New("sink down")
			}
		}
		return nil
	})
	s := newTestSyncer(t, d, ForTables("wk"), WithMessageHandler(h), WithHandlerErrorPolicy(RetryOnHandlerError))
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO wk VALUES (1)`)
	require.Eventually(t, func() bool { return attempts.Load() >= 1 }, 10*time.Second, time.Millisecond)

	stop := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(stop) {
		s.Wake()
		time.Sleep(5 * time.Millisecond)
	}
	// 1.5 s of backoff from 100 ms doubling (each wait 0.5-1.5 times its interval):
	// at most 7 attempts in all with the fastest jitter, 1 + 300 with every Wake obeyed.
	n := attempts.Load()
	t.Logf("attempts in 1.5 s of waking: %d", n)
	require.LessOrEqual(t, n, int64(7), "Wake cut the retry backoff short")
	require.GreaterOrEqual(t, n, int64(2), "the transaction was retried")

	failing.Store(false)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Contains(t, h.snapshot(), "INSERT public.wk id=1")
}
