package dbsync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

func TestSlotStateBound(t *testing.T) {
	old := pollWALWindow
	pollWALWindow = 1000
	defer func() { pollWALWindow = old }()

	st := &slotState{}
	require.Equal(t, pglogrepl.LSN(5000), st.bound(5000), "unknown confirmed position: flush bound")
	st.confirmed = 4500
	require.Equal(t, pglogrepl.LSN(5000), st.bound(5000), "backlog within the window")
	st.confirmed = 1000
	require.Equal(t, pglogrepl.LSN(2000), st.bound(5000), "backlog larger than the window")
	st.grow(true, false)
	require.Equal(t, pglogrepl.LSN(3000), st.bound(5000), "no whole transaction: window doubled")
	st.grow(true, false)
	require.Equal(t, pglogrepl.LSN(5000), st.bound(5000), "doubled again, capped by flush")
	st.grow(true, true)
	require.Equal(t, pglogrepl.LSN(2000), st.bound(5000), "a transaction came back: window reset")
	st.grow(false, false)
	require.Equal(t, uint64(0), st.window, "unbounded call: window unchanged")
}

// TestBoundedWindowsDeliverEverythingOnce drains a backlog through WAL windows much
// smaller than its transactions, one of them bigger than several windows: every change
// must arrive once, in commit order, and the slot must end at the flush LSN.
func TestBoundedWindowsDeliverEverythingOnce(t *testing.T) {
	old := pollWALWindow
	pollWALWindow = 32 << 10
	defer func() { pollWALWindow = old }()

	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, name text)`)
	require.NoError(t, err)
	rec := &recorder{}
	s, err := NewSyncer(WithDB(d.DB), ForTables("items"),
		WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
		WithMessageHandler(rec), WithMaxMessagesToRead(0), WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond))
	require.NoError(t, err)
	defer s.Close()

	var want []string
	id := 0
	for tx := 0; tx < 6; tx++ {
		n := 50
		if tx == 3 {
			n = 3000 // ~200 kB of WAL: several windows
		}
		_, err := d.DB.Exec(`INSERT INTO items SELECT g, 'n' || g FROM generate_series($1::int, $2::int) g`, id+1, id+n)
		require.NoError(t, err)
		want = append(want, "BEGIN")
		for i := id + 1; i <= id+n; i++ {
			want = append(want, fmt.Sprintf("INSERT public.items id=%d,name=n%d", i, i))
		}
		want = append(want, "COMMIT")
		id += n
	}
	flush, err := s.CurrentFlushLSN(context.Background())
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, 30*time.Second, func() bool {
		c, err := s.ConfirmedFlushLSN(context.Background())
		return err == nil && c >= flush
	}, "slot to reach the flush LSN %s", flush)
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, want, rec.snapshot())
}
