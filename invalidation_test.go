package dbsync

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// gateHandler records inserts and blocks in the first one until release is closed.
type gateHandler struct {
	DefaultMessageHandler
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	keys    []string
}

func newGateHandler() *gateHandler {
	return &gateHandler{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateHandler) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	ch, err := DecodeChange(m, r, i)
	if err != nil {
		return err
	}
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	g.mu.Lock()
	g.keys = append(g.keys, ch.Key)
	g.mu.Unlock()
	return nil
}

// waitEntered waits until the first insert is held in the handler.
func (g *gateHandler) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the first insert was not delivered within 20 s")
	}
}

// startGated runs a Syncer on d for table items with slot and publication pub (created
// by setup), delivering to a gateHandler; both stop when the test ends.
func startGated(t *testing.T, d *pgtest.Database, slot, pub string) (*gateHandler, *running) {
	t.Helper()
	h := newGateHandler()
	s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(slot), WithPublication(pub),
		WithMessageHandler(h), WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	r := runInBackground(s)
	t.Cleanup(r.cancel)
	return h, r
}

func (g *gateHandler) delivered() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.keys...)
}

// TestSlotInvalidated lets PostgreSQL invalidate a slot while its Syncer's handler is
// busy (max_slot_wal_keep_size exceeded, then a checkpoint) and checks that every entry
// point reports ErrSlotInvalidated, with the remedy, instead of retrying or delivering
// from the wrong place: the running Syncer (its advance past the busy delivery fails),
// setup of a new Syncer on the slot, GetMessages and ConfirmedFlushLSN (Forward
// moves the slot through the same advance as Run).
// Status still reports the slot (wal_status lost, no restart_lsn). Then the remedy the
// errors name: the slot is dropped, a new Syncer creates a fresh one and delivers
// what is written afterwards.
//
// It runs on a cluster of its own: max_slot_wal_keep_size would invalidate the slots of
// other tests too.
func TestSlotInvalidated(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{Settings: pgtest.SlotInvalidationSettings})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	d := srv.NewDatabase(t)
	ctx := context.Background()
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
	h, r := startGated(t, d, slot, pub)
	execAll(t, d.DB, `INSERT INTO items VALUES (1, 'first')`)
	h.waitEntered(t)

	// The handler holds the first transaction; the slot is not acquired meanwhile (a
	// peek releases it before its rows are read), so the checkpoint invalidates it
	// without terminating anyone.
	execAll(t, d.DB, `INSERT INTO items VALUES (2, 'second')`)
	pgtest.InvalidateSlot(t, d.DB, slot)
	close(h.release)

	// The delivery of row 1 completes; advancing past it fails, and Run returns on its
	// own: the error is not one to retry.
	runErr := r.wait(t, 20*time.Second)
	require.ErrorIs(t, runErr, ErrSlotInvalidated)
	require.Contains(t, runErr.Error(), "drop it with SELECT pg_drop_replication_slot("+pq.QuoteLiteral(slot)+")")
	require.Equal(t, []string{`["1"]`}, h.delivered(), "row 2's WAL is gone; nothing may be delivered from after the loss")

	// Setup of a new Syncer on the slot refuses it.
	_, err = NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(slot), WithPublication(pub),
		WithMessageHandler(DefaultMessageHandler{}))
	require.ErrorIs(t, err, ErrSlotInvalidated)
	require.Contains(t, err.Error(), "pg_drop_replication_slot")

	// A Syncer without setup: Status reports the slot; reading and moving it fail.
	ro, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub), WithSetup(false))
	require.NoError(t, err)
	defer ro.Close()
	st, err := ro.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, "lost", st.WALStatus)
	require.Equal(t, pglogrepl.LSN(0), st.RestartLSN)
	require.Equal(t, int64(0), st.RetainedWALBytes)
	_, err = ro.GetMessagesContext(ctx, 100, false, nil)
	require.ErrorIs(t, err, ErrSlotInvalidated)
	_, err = ro.ConfirmedFlushLSN(ctx)
	require.ErrorIs(t, err, ErrSlotInvalidated)
	require.NotErrorIs(t, runErr, ErrSlotMissing)

	// The remedy the errors name: drop the slot, set up again, rebuild from what follows.
	execAll(t, d.DB, `SELECT pg_drop_replication_slot(`+pq.QuoteLiteral(slot)+`)`)
	h2, r2 := startGated(t, d, slot, pub)
	close(h2.release)
	execAll(t, d.DB, `INSERT INTO items VALUES (3, 'third')`)
	waitFor(t, 20*time.Second, func() bool { return len(h2.delivered()) == 1 }, "the insert after re-creating the slot")
	require.NoError(t, r2.stop(t))
	require.Equal(t, []string{`["3"]`}, h2.delivered(), "a new slot starts at its creation")
}
