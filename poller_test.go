package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

func msgTypes(msgs []PGMSG) string {
	b := make([]byte, len(msgs))
	for i, m := range msgs {
		b[i] = m.Data[0]
	}
	return string(b)
}

// TestGetMessagesAndForward: peeking does not consume; Forward(n) moves the slot to the
// COMMIT of the last whole transaction within the first n rows; consume forwards.
func TestGetMessagesAndForward(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE g (id int PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("g"))
	execAll(t, d.DB, `INSERT INTO g VALUES (1)`, `INSERT INTO g VALUES (2), (3)`, `INSERT INTO g VALUES (4)`)

	msgs, err := s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, "BRICBIICBIC", msgTypes(msgs), "RELATION once per call, before the first change of the table")
	again, err := s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, msgs, again, "a peek does not consume")

	// Forward past the first transaction and half of the second: only the first goes.
	require.NoError(t, s.Forward(7))
	msgs, err = s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, "BRIICBIC", msgTypes(msgs))
	require.Equal(t, byte('C'), msgs[4].Data[0])
	commit, err := Parse(msgs[4].Data)
	require.NoError(t, err)
	require.Equal(t, commit.(*pglogrepl.CommitMessage).TransactionEndLSN, msgs[4].LSN, "the COMMIT row's LSN is the end of the commit record")

	// consume = true forwards past everything returned.
	msgs, err = s.GetMessages(0, true, nil)
	require.NoError(t, err)
	require.Len(t, msgs, 8)
	msgs, err = s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Empty(t, msgs)
	c, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	f, err := s.CurrentFlushLSN(t.Context())
	require.NoError(t, err)
	require.LessOrEqual(t, c, f)
}

// TestEventsProcessor: whole polls go to the processor; the slot moves only past the
// transactions inside what it reports as processed.
//
// With every poll split (the slot and a temporary copy peeked at once) the processor
// gets the same transactions; the copy's call may describe the relation again.
func TestEventsProcessor(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprintf("split=%v", split), func(t *testing.T) { testEventsProcessor(t, split) })
	}
}

func testEventsProcessor(t *testing.T, split bool) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE e (id int PRIMARY KEY)`)
	var mu sync.Mutex
	var polls []string
	calls := 0
	proc := func(msgs []PGMSG, err error) (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		require.NoError(t, err)
		calls++
		polls = append(polls, msgTypes(dropRepeatedRelations(t, msgs)))
		if calls == 1 {
			return 6, false // all of the first transaction and part of the second
		}
		return len(msgs), true
	}
	s := newTestSyncer(t, d, ForTables("e"), WithEventsProcessor(proc))
	if split {
		s.splitMinWAL = 1
	}
	execAll(t, d.DB, `INSERT INTO e VALUES (1)`, `INSERT INTO e VALUES (2), (3)`)
	err := s.Run(t.Context())
	require.NoError(t, err, "stop=true ends Run cleanly")
	if split {
		require.NotZero(t, s.splitPeeks.Load(), "the polls must have been split")
	}
	// First call: both transactions; 6 rows processed covers only the first, so the
	// slot moves past it and the next call reads the second transaction again.
	require.Equal(t, []string{"BRICBIIC", "BRIIC"}, polls)
}

// recBatcher is a Batcher that keeps what it was given (upserts by table and record
// ID, deletes in order) and every call in order (ops).
type recBatcher struct {
	mu      sync.Mutex
	upserts map[string]map[string]StringMap
	deletes []string
	ops     []string
	fail    error
}

func (b *recBatcher) opList() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.ops...)
}

func (b *recBatcher) BatchUpsert(doctype string, docs map[string]StringMap) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return nil, b.fail
	}
	if b.upserts == nil {
		b.upserts = map[string]map[string]StringMap{}
	}
	if b.upserts[doctype] == nil {
		b.upserts[doctype] = map[string]StringMap{}
	}
	for _, k := range slices.Sorted(maps.Keys(docs)) {
		b.upserts[doctype][k] = docs[k]
		b.ops = append(b.ops, fmt.Sprintf("upsert %s %s %v", doctype, k, docs[k]))
	}
	return nil, nil
}

func (b *recBatcher) BatchDelete(doctype string, ids []string) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return nil, b.fail
	}
	for _, id := range ids {
		b.deletes = append(b.deletes, doctype+" "+id)
		b.ops = append(b.ops, fmt.Sprintf("delete %s %s", doctype, id))
		delete(b.upserts[doctype], id)
	}
	return nil, nil
}

// TestBatcherNetEffect: a Batcher gets each poll's net effect per table; when it fails
// the slot is not forwarded and the same changes come again.
func TestBatcherNetEffect(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE bt (id text PRIMARY KEY, v text)`)
	b := &recBatcher{fail: errors.New("index down")}
	s := newTestSyncer(t, d, ForTables("bt"))
	s.Batcher = b
	execAll(t, d.DB,
		`INSERT INTO bt VALUES ('1', 'a'), ('2', 'b'), ('3', 'c')`,
		`UPDATE bt SET v = 'a2' WHERE id = '1'`,
		`DELETE FROM bt WHERE id = '2'`,
		`UPDATE bt SET id = '4' WHERE id = '3'`)
	before, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	err = s.Run(t.Context())
	require.ErrorIs(t, err, ErrHandler)
	after, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	require.Equal(t, before, after, "a failed Batcher forwards nothing")

	b.fail = nil
	r := runInBackground(s)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))

	var relid uint32
	require.NoError(t, d.DB.QueryRow(`SELECT 'bt'::regclass::oid`).Scan(&relid))
	info := s.tables.get(relid)
	require.NotNil(t, info, "the syncer described bt")
	require.Equal(t, []string{"id"}, info.PrimaryKey)
	id := func(k string) string {
		s, err := info.GetRecordID(StringMap{"id": k})
		require.NoError(t, err)
		return s
	}
	require.Equal(t, map[string]map[string]StringMap{"public.bt": {
		id("1"): {"id": "1", "v": "a2"},
		id("4"): {"id": "4", "v": "c"},
	}}, b.upserts)
	sort.Strings(b.deletes)
	want := []string{"public.bt " + id("2"), "public.bt " + id("3")}
	sort.Strings(want)
	require.Equal(t, want, b.deletes)
}

// TestStopStartIsRunning: Start blocks until Stop; IsRunning tracks it; a second Run
// while running is refused.
func TestStopStartIsRunning(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE st (id int PRIMARY KEY)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("st"), WithMessageHandler(rec))
	require.False(t, s.IsRunning())
	done := make(chan error, 1)
	go func() { done <- s.Start() }()
	waitFor(t, 5*time.Second, s.IsRunning, "running")
	require.ErrorIs(t, s.Run(t.Context()), ErrAlreadyRunning)
	execAll(t, d.DB, `INSERT INTO st VALUES (1)`)
	waitLines(t, rec, 3)
	s.Stop()
	require.NoError(t, <-done)
	require.False(t, s.IsRunning())
	s.Stop() // idempotent
}

// TestConnectionLossIsRetried: killing the syncer's server sessions mid-run does not
// stop it; changes made meanwhile arrive, none lost.
func TestConnectionLossIsRetried(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE cl (id int PRIMARY KEY)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("cl"), WithMessageHandler(rec), WithPGConnStr(d.DSN()+" application_name=dbsync_under_test"))
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO cl VALUES (1)`)
	waitLines(t, rec, 3)
	for i := 0; i < 3; i++ {
		execAll(t, d.DB, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'dbsync_under_test'`)
		execAll(t, d.DB, `INSERT INTO cl VALUES (`+string(rune('2'+i))+`)`)
	}
	waitLines(t, rec, 12)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{
		"BEGIN", "INSERT public.cl id=1", "COMMIT",
		"BEGIN", "INSERT public.cl id=2", "COMMIT",
		"BEGIN", "INSERT public.cl id=3", "COMMIT",
		"BEGIN", "INSERT public.cl id=4", "COMMIT",
	}, rec.snapshot())
}

func TestParseMalformed(t *testing.T) {
	for _, in := range [][]byte{nil, {'I'}, {'I', 0, 0, 0, 1, 'N', 0, 5}, {'U', 0, 0, 0, 1, 'K'}, {'Z', 1, 2}, {'R', 0, 0}} {
		_, err := Parse(in)
		require.ErrorIs(t, err, ErrMalformedMessage, "%q", in)
	}
}

// TestMinPollIntervalPacesPolls writes a row every 10 ms for a second while a Syncer
// keeps up: with MinPollInterval 200 ms it peeks at most about once per 200 ms (and
// still delivers every row, in order); polling back to back (0) peeks more often (as
// often as the flush LSN moved when it looked: an idle look waits 100 ms).
// Peeks are counted on pgx's connection (pgconnPeeks).
func TestMinPollIntervalPacesPolls(t *testing.T) {
	d := pgtest.NewDatabase(t)
	peeks := map[time.Duration]uint64{}
	for i, interval := range []time.Duration{200 * time.Millisecond, 0} {
		db, err := sql.Open("pgx", d.DSN())
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		table := fmt.Sprintf("paced%d", i)
		execAll(t, d.DB, `CREATE TABLE `+table+` (id int PRIMARY KEY)`)
		h := newCacheHandler()
		s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, fmt.Sprintf("slot%d", i)), h, ForTables(table), WithDB(db),
			WithMinPollInterval(interval))
		execAll(t, d.DB, `INSERT INTO `+table+` VALUES (0)`)
		waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) >= 1 }, "the first insert")
		before := s.pgconnPeeks.Load()
		start := time.Now()
		for n := 1; n <= 100; n++ {
			_, err := d.DB.Exec(`INSERT INTO `+table+` VALUES ($1)`, n)
			require.NoError(t, err)
			time.Sleep(10 * time.Millisecond)
		}
		waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 101 }, "100 inserts")
		elapsed := time.Since(start)
		peeks[interval] = s.pgconnPeeks.Load() - before
		events := h.eventList()
		require.Equal(t, `insert public.`+table+` ["0"]`, events[0])
		for n, e := range events[1:] {
			require.Equal(t, fmt.Sprintf(`insert public.%s ["%d"]`, table, n+1), e)
		}
		require.NoError(t, stop())
		if interval > 0 {
			// One poll per interval over the whole time, plus the one in flight.
			require.LessOrEqual(t, peeks[interval], uint64(elapsed/interval)+2, "peeks in %v", elapsed)
		}
	}
	t.Logf("peeks: %v", peeks)
	require.Greater(t, peeks[0], peeks[200*time.Millisecond], "back-to-back polls must peek more often")
}

// TestEventsProcessorStopForwardsProcessed: Run's context ending while an
// EventsProcessor handles a poll (a Ctrl-C, a deploy) still forwards the slot past
// the rows it reports processed, as Run does for a MessageHandler: the advance ran
// under Run's ended context and failed, so every processed transaction came again.
func TestEventsProcessorStopForwardsProcessed(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE e (id int PRIMARY KEY)`)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var calls atomic.Int32
	proc := func(msgs []PGMSG, err error) (int, bool) {
		if err != nil || len(msgs) == 0 {
			return 0, false
		}
		calls.Add(1)
		cancel() // the stop comes while the poll is being processed
		return len(msgs), false
	}
	s := newTestSyncer(t, d, ForTables("e"), WithEventsProcessor(proc))
	execAll(t, d.DB, `INSERT INTO e VALUES (1)`, `INSERT INTO e VALUES (2)`)
	end := flushLSN(t, d.DB)
	require.NoError(t, s.Run(ctx))
	require.Equal(t, int32(1), calls.Load())
	require.Equal(t, []string{"true"}, queryStrings(t, d.DB,
		`SELECT (confirmed_flush_lsn >= $2::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot(), end),
		"the slot must be past both processed transactions")
	left, err := s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Empty(t, left, "nothing processed may come again")
}
