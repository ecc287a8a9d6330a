package dbsync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// runRecovering runs s.Run(ctx) and returns its error, or the value a panic out of
// it carried.
func runRecovering(ctx context.Context, s *Syncer) (err error, panicked any) {
	defer func() { panicked = recover() }()
	return s.Run(ctx), nil
}

// TestHandlerPanicThenRunAgain: a handler panics in the middle of a transaction. The
// panic goes out of Run to its caller (dbsync does not swallow it) and nothing of
// that poll is forwarded. A caller that recovers it (a supervisor restarting the
// consumer) and runs the Syncer again gets every transaction from the one the
// handler was in, whole, in order: the slot lock, the poll's reader goroutine and
// its connection must not be left behind by the panic. (Before, Run's slot lock
// stayed held on a connection nobody would release, so every later Run of the slot
// in this process returned ErrSlotInUse.)
func TestHandlerPanicThenRunAgain(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE p (id int PRIMARY KEY)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("p"), WithMessageHandler(rec))
	execAll(t, d.DB, `INSERT INTO p VALUES (1)`,
		// More rows than the poll's reader queues ahead of the handler.
		`INSERT INTO p SELECT generate_series(2, 3001)`,
		`INSERT INTO p VALUES (4000)`)
	rec.setFail(func(line string) error {
		if line == "INSERT public.p id=3" {
			panic("handler bug")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err, p := runRecovering(ctx, s)
	require.NoError(t, err)
	require.Equal(t, "handler bug", p)
	require.False(t, s.IsRunning())
	require.Zero(t, s.DB().Stats().InUse, "no connection held after Run returned (the peek's reader, the slot lock)")
	require.Equal(t, []string{"BEGIN", "INSERT public.p id=1", "COMMIT", "BEGIN", "INSERT public.p id=2"}, rec.snapshot())

	rec2 := &recorder{}
	s.MessageHandler = rec2
	r := runInBackground(s)
	want := []string{"BEGIN", "INSERT public.p id=1", "COMMIT", "BEGIN"}
	for i := 2; i <= 3001; i++ {
		want = append(want, fmt.Sprintf("INSERT public.p id=%d", i))
	}
	want = append(want, "COMMIT", "BEGIN", "INSERT public.p id=4000", "COMMIT")
	waitFor(t, 20*time.Second, func() bool {
		select {
		case err := <-r.done:
			t.Fatalf("Run returned: %v", err)
		default:
		}
		return len(rec2.snapshot()) >= len(want)
	}, "the redelivery, have %v", rec2)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, want, rec2.snapshot())
}
