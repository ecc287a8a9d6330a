package dbsync

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// TestBatcherNoKeyStopsAtItsTransaction: a change of a table without a record ID
// ends the poll with ErrNoKey; the transactions before its transaction in the poll
// are handed to the Batcher and forwarded past, nothing of its transaction is (the
// Batcher gets none of it, the slot stays at the COMMIT before it), and the handler
// does not get the change.
func TestBatcherNoKeyStopsAtItsTransaction(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE k (id int PRIMARY KEY)`, `CREATE TABLE nk (a int)`)
	h := &eventLog{}
	s := newTestSyncer(t, d, ForTables("k", "nk"), WithMessageHandler(h))
	b := &truncatingBatcher{}
	s.Batcher = b
	execAll(t, d.DB, `INSERT INTO k VALUES (1)`, `BEGIN; INSERT INTO k VALUES (2); INSERT INTO nk VALUES (1); COMMIT`)
	msgs, err := s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, "BRICBIRIC", msgTypes(msgs))

	err = runInBackground(s).wait(t, 30*time.Second)
	require.ErrorIs(t, err, ErrNoKey)
	require.ErrorContains(t, err, "public.nk at LSN")
	require.Equal(t, []string{`upsert public.k ["1"] map[id:1]`}, b.opList())
	require.Equal(t, []string{`INSERT k ["1"]`, `INSERT k ["2"]`}, h.got())
	c, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	require.Equal(t, msgs[3].LSN, c, "forwarded to the first transaction's COMMIT, not into the second")
}

// TestEventsProcessorForwardPoints: the slot moves past the processed rows' last
// COMMIT or non-transactional logical message, never into a transaction; once a poll
// was processed whole, to the poll's WAL bound, past other tables' writes too.
func TestEventsProcessorForwardPoints(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE e (id int PRIMARY KEY)`, `CREATE TABLE other (id int)`)
	var polls []string
	take := []int{5, 1, -1} // rows processed per call (-1: all)
	proc := func(msgs []PGMSG, err error) (int, bool) {
		if err != nil {
			return 0, false
		}
		polls = append(polls, msgTypes(msgs))
		n := take[len(polls)-1]
		if n < 0 {
			return len(msgs), true
		}
		return n, false
	}
	s := newTestSyncer(t, d, ForTables("e"), WithEventsProcessor(proc))
	execAll(t, d.DB, `INSERT INTO e VALUES (1)`,
		`BEGIN; INSERT INTO e VALUES (2); SELECT pg_logical_emit_message(false, 'p', 'm'); INSERT INTO e VALUES (3); COMMIT`,
		`INSERT INTO other VALUES (1)`)
	end := flushLSN(t, d.DB)
	require.NoError(t, runInBackground(s).wait(t, 30*time.Second))
	// Call 1: 5 rows are the first transaction and the message (decoded when written,
	// so before the transaction around it): forwarded past both. Call 2: the second
	// transaction alone; one row (its BEGIN) moves nothing. Call 3: the same again,
	// all processed: the slot goes to the poll's bound.
	require.Equal(t, []string{"BRICMBIIC", "BRIIC", "BRIIC"}, polls)
	var past bool
	require.NoError(t, d.DB.QueryRow(`SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
		s.ReplicationSlot(), end).Scan(&past))
	require.True(t, past, "the whole last poll was processed: the slot is past the other table's write")
}

// TestEventsProcessorPartialTransactionBacksOff: a processor that reports fewer rows
// than its poll's first whole transaction (its sink failed midway, say) made no
// progress, and the poll comes again after the idle backoff, as when it reports 0 —
// not at once: Run re-read the slot and called it back to back (~600 times a second
// here, each a peek decoding the WAL again). Once it takes the rows, the slot moves.
//
// Reporting 0 of a poll cut short by MaxMessagesToRead spun the same way.
func TestEventsProcessorPartialTransactionBacksOff(t *testing.T) {
	for _, c := range []struct {
		name      string
		take, max int
	}{{"part of a transaction", 3, 0}, {"none of a poll cut short", 0, 2}} {
		t.Run(c.name, func(t *testing.T) { testEventsProcessorBacksOff(t, c.take, c.max) })
	}
}

func testEventsProcessorBacksOff(t *testing.T, take, max int) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE e (id int PRIMARY KEY)`)
	var calls []time.Time
	var polls []string
	proc := func(msgs []PGMSG, err error) (int, bool) {
		if err != nil {
			return 0, false
		}
		calls = append(calls, time.Now())
		polls = append(polls, msgTypes(msgs))
		if len(calls) < 5 {
			return take, false // none, or BEGIN, RELATION and the first INSERT only
		}
		return len(msgs), true
	}
	// Idle backoff 5 ms doubling to 50 ms (newTestSyncer): 5 + 10 + 20 + 40 ms at least
	// between the first call and the fifth.
	s := newTestSyncer(t, d, ForTables("e"), WithEventsProcessor(proc), WithMaxMessagesToRead(max))
	execAll(t, d.DB, `INSERT INTO e VALUES (1), (2), (3)`)
	end := flushLSN(t, d.DB)
	require.NoError(t, runInBackground(s).wait(t, 30*time.Second))
	require.Equal(t, []string{"BRIIIC", "BRIIIC", "BRIIIC", "BRIIIC", "BRIIIC"}, polls)
	require.GreaterOrEqual(t, calls[4].Sub(calls[0]), 75*time.Millisecond, "calls at %v", calls)
	var past bool
	require.NoError(t, d.DB.QueryRow(`SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
		s.ReplicationSlot(), end).Scan(&past))
	require.True(t, past)
}

// TestBatcherDeferredKeyMoves: with a DEFERRABLE primary key (PostgreSQL then needs
// REPLICA IDENTITY FULL for updates and deletes), two rows can hold one key inside a
// transaction. The Batcher's net effect must follow rows, not keys: a swap
// (UPDATE ... SET id = 3 - id) lost the row moved first (the second row's move
// deleted its old key, which the first row held by then); a row moved onto a held key
// and on again deleted the row that kept that key; a delete of the holder deleted the
// row moved onto its key. The Batcher's store must end equal to the table.
func TestBatcherDeferredKeyMoves(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE sw (id int, v text)`,
		`ALTER TABLE sw ADD CONSTRAINT sw_pk PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED`,
		`ALTER TABLE sw REPLICA IDENTITY FULL`)
	s := newTestSyncer(t, d, ForTables("sw"))
	b := &truncatingBatcher{}
	s.Batcher = b
	execAll(t, d.DB, `INSERT INTO sw VALUES (1, 'a'), (2, 'b'), (3, 'c'), (5, 'e'), (7, 'g'), (8, 'h')`)
	r := runInBackground(s)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))

	execAll(t, d.DB,
		// A swap: {1: b, 2: a}.
		`UPDATE sw SET id = 3 - id WHERE id IN (1, 2)`,
		// c moves onto 5, which e holds, then on to 6: {5: e, 6: c}.
		`BEGIN; UPDATE sw SET id = 5 WHERE id = 3; UPDATE sw SET id = 6 WHERE id = 5 AND v = 'c'; COMMIT`,
		// c moves back onto 5, and e, which holds it, is deleted: {5: c}.
		`BEGIN; UPDATE sw SET id = 5 WHERE id = 6; DELETE FROM sw WHERE id = 5 AND v = 'e'; COMMIT`,
		// A row inserted and deleted in one transaction, and a plain update.
		`BEGIN; INSERT INTO sw VALUES (9, 'i'); DELETE FROM sw WHERE id = 9; UPDATE sw SET v = 'g2' WHERE id = 7; COMMIT`,
		// A second swap, of a row updated before in the same poll: {7: h, 8: g2}.
		`UPDATE sw SET id = 15 - id WHERE id IN (7, 8)`)
	r = runInBackground(s)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))

	want := queryStrings(t, d.DB, `SELECT id || ' ' || v FROM sw ORDER BY 1`)
	require.Equal(t, []string{"1 b", "2 a", "5 c", "7 h", "8 g2"}, want)
	b.mu.Lock()
	var got []string
	for _, doc := range b.upserts["public.sw"] {
		got = append(got, fmt.Sprintf("%v %v", doc["id"], doc["v"]))
	}
	b.mu.Unlock()
	sort.Strings(got)
	require.Equal(t, want, got, "the Batcher's store; calls: %q", b.opList())
}

// TestStopAtCommitForwardsThatTransaction: ErrStopProcessingMessages returned by
// HandleCommitMessage counts that transaction as processed: the slot moves past it
// (and the Batcher gets it), and the next read starts with the transaction after.
// Returned by a change handler, the transaction comes again whole.
func TestStopAtCommitForwardsThatTransaction(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t1 (id int PRIMARY KEY)`)
	h := &eventLog{stopAtCommit: true}
	s := newTestSyncer(t, d, ForTables("t1"), WithMessageHandler(h))
	b := &truncatingBatcher{}
	s.Batcher = b
	execAll(t, d.DB, `INSERT INTO t1 VALUES (1)`, `INSERT INTO t1 VALUES (2)`)
	require.NoError(t, runInBackground(s).wait(t, 30*time.Second))
	require.Equal(t, []string{`INSERT t1 ["1"]`}, h.got())
	require.Equal(t, []string{`upsert public.t1 ["1"] map[id:1]`}, b.opList())
	msgs, err := s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, "BRIC", msgTypes(msgs))
	ins, err := Parse(msgs[2].Data)
	require.NoError(t, err)
	require.Equal(t, "2", string(ins.(*pglogrepl.InsertMessage).Tuple.Columns[0].Data))

	// Stopping at the INSERT leaves its transaction in the slot.
	s.Batcher = nil
	h2 := &recorder{failOn: func(line string) error {
		if strings.HasPrefix(line, "INSERT") {
			return ErrStopProcessingMessages
		}
		return nil
	}}
	s.MessageHandler = h2
	require.NoError(t, runInBackground(s).wait(t, 30*time.Second))
	again, err := s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, msgs, again)
	require.Equal(t, []string{"BEGIN"}, h2.snapshot())
}

// TestEventsProcessorNotToldOfStop: Run's context ending while a poll's peek runs is
// a clean stop, not a failed poll: the processor is not called with the context's
// error (it was, with "context canceled", on every such shutdown).
func TestEventsProcessorNotToldOfStop(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE e (id int PRIMARY KEY, v text)`)
	var errs []error
	var mu sync.Mutex
	proc := func(msgs []PGMSG, err error) (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
		return len(msgs), false
	}
	s := newTestSyncer(t, d, ForTables("e"), WithEventsProcessor(proc),
		WithPGConnStr(d.DSN()+" application_name=ep_stop_under_test"))
	execAll(t, d.DB, `INSERT INTO e SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g`)
	r := runInBackground(s)
	waitFor(t, 30*time.Second, func() bool {
		return len(queryStrings(t, d.DB, `SELECT pid::text FROM pg_stat_activity
			WHERE application_name = 'ep_stop_under_test' AND state = 'active' AND query LIKE '-- One poll:%'`)) > 0 // sql/peek.sql
	}, "the peek to run")
	require.NoError(t, r.stop(t))
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, errs)
}
