package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// batcherKeys returns the record IDs a recBatcher upserted into public.items, sorted
// numerically, and how many upserts it got in all (one per record ID per call).
func batcherKeys(b *recBatcher) (keys []string, upserts int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.upserts["public.items"] {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		var a, c int
		fmt.Sscanf(keys[i], `["%d"]`, &a)
		fmt.Sscanf(keys[j], `["%d"]`, &c)
		return a < c
	})
	return keys, len(b.ops)
}

// committedKeys returns the keys of every committed transaction a txLog got, in
// delivery order, re-deliveries included.
func committedKeys(h *txLog) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, tx := range h.txs {
		if tx.committed {
			out = append(out, tx.keys...)
		}
	}
	return out
}

// TestBatcherStopMidPoll: Run's context ends while the handler holds the INSERT of the
// 1,500th of 3,000 one-row transactions read by one poll (many of the reader's 1 MiB
// batches). The Batcher gets transactions 1..1499, once each, and no row of the held
// transaction or after; the slot is forwarded past 1499 exactly: the next run delivers
// 1500..3000, each once, to the MessageHandler and the Batcher.
func TestBatcherStopMidPoll(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
	h := newTxLog(`["1500"]`)
	held := h.held
	b := &recBatcher{}
	s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(h))
	s.Batcher = b
	execAll(t, d.DB, `SET synchronous_commit = off`,
		`DO $$ BEGIN FOR i IN 1..3000 LOOP INSERT INTO items VALUES (i, repeat('x', 1000)); COMMIT; END LOOP; END $$`)
	r := runInBackground(s)
	t.Cleanup(h.unhold)
	h.waitHeld(t, held)
	r.cancel()
	h.unhold()
	require.NoError(t, r.wait(t, 20*time.Second))
	keys, n := batcherKeys(b)
	require.Equal(t, keyRange(1, 1499), keys)
	require.Equal(t, 1499, n, "each transaction once")
	require.Equal(t, keyRange(1, 1499), committedKeys(h))

	runRestOnce(t, s, d.DB, 1500, 3000)
}

// TestBatcherHandlerStopsMidPoll: the handler returns ErrStopProcessingMessages at the
// INSERT of the 1,500th of 3,000 one-row transactions. Run returns nil; the Batcher
// got 1..1499 and the next run starts at 1500.
func TestBatcherHandlerStopsMidPoll(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
	rec := &recorder{failOn: func(line string) error {
		if strings.HasPrefix(line, "INSERT public.items id=1500,") {
			return ErrStopProcessingMessages
		}
		return nil
	}}
	b := &recBatcher{}
	s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(rec))
	s.Batcher = b
	execAll(t, d.DB, `SET synchronous_commit = off`,
		`DO $$ BEGIN FOR i IN 1..3000 LOOP INSERT INTO items VALUES (i, repeat('x', 1000)); COMMIT; END LOOP; END $$`)
	require.NoError(t, runInBackground(s).wait(t, 30*time.Second))
	keys, n := batcherKeys(b)
	require.Equal(t, keyRange(1, 1499), keys)
	require.Equal(t, 1499, n)

	runRestOnce(t, s, d.DB, 1500, 3000)
}

// panickyBatcher panics in its first BatchUpsert.
type panickyBatcher struct {
	recBatcher
	calls atomic.Int32
}

func (b *panickyBatcher) BatchUpsert(doctype string, docs map[string]StringMap) (any, error) {
	if b.calls.Add(1) == 1 {
		panic("batcher bug")
	}
	return b.recBatcher.BatchUpsert(doctype, docs)
}

// TestBatcherPanicThenRunAgain: BatchUpsert panics. The panic reaches Run's caller
// after the slot lock and the poll's connections were released, nothing of the poll
// forwarded; a second Run delivers every transaction, once, to the Batcher.
func TestBatcherPanicThenRunAgain(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
	b := &panickyBatcher{}
	s := newTestSyncer(t, d, ForTables("items"))
	s.Batcher = b
	execAll(t, d.DB, `DO $$ BEGIN FOR i IN 1..2000 LOOP INSERT INTO items VALUES (i, repeat('x', 1000)); COMMIT; END LOOP; END $$`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err, p := runRecovering(ctx, s)
	require.NoError(t, err)
	require.Equal(t, "batcher bug", p)
	require.False(t, s.IsRunning())
	require.Zero(t, s.DB().Stats().InUse)
	msgs, err := s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Len(t, msgs, 1+2000*3, "nothing forwarded: one RELATION, and BEGIN, INSERT, COMMIT of each")

	r := runInBackground(s)
	r.waitFor(t, 30*time.Second, func() bool { k, _ := batcherKeys(&b.recBatcher); return len(k) >= 2000 }, "the redelivery")
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	keys, n := batcherKeys(&b.recBatcher)
	require.Equal(t, keyRange(1, 2000), keys)
	require.Equal(t, 2000, n)
}

// TestEventsProcessorPanicThenRunAgain: an EventsProcessor panics on its first poll.
// The second Run gets the same rows from the start.
func TestEventsProcessorPanicThenRunAgain(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	var calls atomic.Int32
	var first, second []PGMSG
	proc := func(msgs []PGMSG, err error) (int, bool) {
		if err != nil {
			return 0, false
		}
		if calls.Add(1) == 1 {
			first = msgs
			panic("processor bug")
		}
		second = append(second, msgs...)
		return len(msgs), false
	}
	s := newTestSyncer(t, d, ForTables("items"), WithEventsProcessor(proc))
	execAll(t, d.DB, `INSERT INTO items SELECT generate_series(1, 100)`, `INSERT INTO items VALUES (101)`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err, p := runRecovering(ctx, s)
	require.NoError(t, err)
	require.Equal(t, "processor bug", p)
	require.False(t, s.IsRunning())
	require.Zero(t, s.DB().Stats().InUse)
	require.Len(t, first, 3+100+3, "BEGIN, RELATION, 100 INSERTs, COMMIT; BEGIN, INSERT, COMMIT")

	r := runInBackground(s)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, first, second)
}

// TestBatcherFailureAtStopReported: Run's context ends while the handler holds a row
// in the middle of a poll; the Batcher then fails to take the poll's completed
// transactions. Under StopOnHandlerError Run returns the Batcher's error (wrapping
// ErrHandler), as it does when a handler's ErrStopProcessingMessages ends the poll
// (TestBatcherFailureNotHiddenByStop), not nil as if those transactions had been
// applied; the slot is not forwarded.
func TestBatcherFailureAtStopReported(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	h := newTxLog(`["50"]`)
	held := h.held
	s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(h))
	s.Batcher = &recBatcher{fail: errors.New("batcher down")}
	before, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	execAll(t, d.DB, `DO $$ BEGIN FOR i IN 1..100 LOOP INSERT INTO items VALUES (i); COMMIT; END LOOP; END $$`)
	r := runInBackground(s)
	t.Cleanup(h.unhold)
	h.waitHeld(t, held)
	r.cancel()
	h.unhold()
	err = r.wait(t, 20*time.Second)
	require.ErrorIs(t, err, ErrHandler)
	require.Contains(t, err.Error(), "batcher down")
	require.NotContains(t, err.Error(), "context canceled", "the stop is not a failure")
	after, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	require.Equal(t, before, after)
}

// blockingBatcher holds its first BatchUpsert until released.
type blockingBatcher struct {
	recBatcher
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (b *blockingBatcher) BatchUpsert(doctype string, docs map[string]StringMap) (any, error) {
	b.once.Do(func() {
		close(b.held)
		<-b.release
	})
	return b.recBatcher.BatchUpsert(doctype, docs)
}

// TestStopWhileBatcherRuns: Run's context ends while BatchUpsert takes a poll. Run
// waits for it and then forwards the slot past everything it took: nothing comes
// again on the next run.
func TestStopWhileBatcherRuns(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	b := &blockingBatcher{held: make(chan struct{}), release: make(chan struct{})}
	s := newTestSyncer(t, d, ForTables("items"))
	s.Batcher = b
	execAll(t, d.DB, `DO $$ BEGIN FOR i IN 1..100 LOOP INSERT INTO items VALUES (i); COMMIT; END LOOP; END $$`)
	end := flushLSN(t, d.DB)
	r := runInBackground(s)
	select {
	case <-b.held:
	case <-time.After(30 * time.Second):
		t.Fatal("BatchUpsert not called")
	}
	r.cancel()
	select {
	case err := <-r.done:
		t.Fatalf("Run returned while BatchUpsert runs: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(b.release)
	require.NoError(t, r.wait(t, 20*time.Second))
	keys, n := batcherKeys(&b.recBatcher)
	require.Equal(t, keyRange(1, 100), keys)
	require.Equal(t, 100, n)
	require.Equal(t, []string{"true"}, queryStrings(t, d.DB,
		`SELECT (confirmed_flush_lsn >= $2::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot(), end))
	left, err := s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Empty(t, left)
}

// onWrite is an io.Writer that calls f once, at its first write containing sub.
type onWrite struct {
	sub  string
	once sync.Once
	f    func()
}

func (w *onWrite) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.sub) {
		w.once.Do(w.f)
	}
	return len(p), nil
}

// TestEventsProcessorStopAdvanceFails: an EventsProcessor asks to stop, and the
// advance after it fails with an error Run would retry (a walsender took the slot for
// a moment: ErrSlotInUse). Run must not go on polling and hand the poll again to a
// processor that asked to stop: it returns why the slot was not forwarded, as for a
// MessageHandler's ErrStopProcessingMessages (Run's documentation).
func TestEventsProcessorStopAdvanceFails(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rc *pgconn.PgConn
	var calls atomic.Int32
	var s *Syncer
	proc := func(msgs []PGMSG, err error) (int, bool) {
		if err != nil || len(msgs) == 0 {
			return 0, false
		}
		if calls.Add(1) == 1 {
			// A walsender takes the slot: the advance after this call fails.
			c, err := pgconn.Connect(ctx, d.Server.URL(d.Name)+"&replication=database")
			require.NoError(t, err)
			require.NoError(t, pglogrepl.StartReplication(ctx, c, s.ReplicationSlot(), 0, pglogrepl.StartReplicationOptions{
				PluginArgs: []string{"proto_version '1'", "publication_names " + pq.QuoteLiteral(s.Publication())}}))
			rc = c
		}
		return len(msgs), true
	}
	// The walsender goes once Run logs that it retries.
	released := make(chan struct{})
	logs := &onWrite{sub: "retrying", f: func() { rc.Close(context.Background()); close(released) }}
	s = newTestSyncer(t, d, ForTables("items"), WithEventsProcessor(proc),
		WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
	err := runInBackground(s).wait(t, 30*time.Second)
	require.Equal(t, int32(1), calls.Load(), "the processor asked to stop: not called again")
	require.ErrorIs(t, err, ErrSlotInUse)
	require.ErrorContains(t, err, "not forwarded")
	select {
	case <-released:
	default:
		rc.Close(context.Background())
	}
}

// runRestOnce runs s again with a fresh transaction log and Batcher until it caught
// up, and requires both to get exactly the transactions of keys from..to, each once.
func runRestOnce(t *testing.T, s *Syncer, db *sql.DB, from, to int) {
	t.Helper()
	h := newTxLog("none")
	b := &recBatcher{}
	s.MessageHandler, s.Batcher = h, b
	r := runInBackground(s)
	r.waitFor(t, 30*time.Second, func() bool { return len(committedKeys(h)) >= to-from+1 }, "the rest")
	waitCaughtUp(t, db, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, keyRange(from, to), committedKeys(h))
	keys, n := batcherKeys(b)
	require.Equal(t, keyRange(from, to), keys)
	require.Equal(t, to-from+1, n, "each transaction once")
}
