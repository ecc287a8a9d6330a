package dbsync

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// eventLog is a MessageHandler that records logical messages, row changes and
// TRUNCATEs as lines, in order.
type eventLog struct {
	DefaultMessageHandler
	mu     sync.Mutex
	events []string
	// stopAtCommit makes HandleCommitMessage return ErrStopProcessingMessages.
	stopAtCommit bool
}

func (h *eventLog) add(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, fmt.Sprintf(format, args...))
}

func (h *eventLog) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

func (h *eventLog) HandleLogicalMessage(_ int, m *pglogrepl.LogicalDecodingMessage) error {
	h.add("MESSAGE %s transactional=%v", m.Content, m.Transactional)
	return nil
}

func (h *eventLog) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	c, err := DecodeChange(m, reln, info)
	if err != nil {
		return err
	}
	h.add("INSERT %s %s", info.TableName, c.Key)
	return nil
}

func (h *eventLog) HandleTruncateMessage(_ int, _ *pglogrepl.TruncateMessage, _ []*pglogrepl.RelationMessage, infos []*PGTableInfo) error {
	h.add("TRUNCATE %s", infos[0].TableName)
	return nil
}

func (h *eventLog) HandleCommitMessage(int, *pglogrepl.CommitMessage) error {
	if h.stopAtCommit {
		return ErrStopProcessingMessages
	}
	return nil
}

// TestRowLimitNonTransactionalMessages: with MaxMessagesToRead, a run of
// non-transactional logical messages longer than the row limit and no COMMIT among
// them. Each message is a point the slot may be forwarded past, so every poll makes
// progress: each message is delivered exactly once, in order, and the slot reaches
// the flush LSN. (Before, the slot could only move to a COMMIT: the same 5 messages
// were read again forever.)
func TestRowLimitNonTransactionalMessages(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t1 (id int PRIMARY KEY)`)
	h := &eventLog{}
	s := newTestSyncer(t, d, ForTables("t1"), WithMessageHandler(h), WithMaxMessagesToRead(5))
	var want []string
	for i := range 12 {
		execAll(t, d.DB, fmt.Sprintf(`SELECT pg_logical_emit_message(false, 'hb', 'm%d')`, i))
		want = append(want, fmt.Sprintf("MESSAGE m%d transactional=false", i))
	}
	// The commit flushes the WAL (a non-transactional message alone does not on
	// PostgreSQL 15), and the polls read up to the flush LSN.
	execAll(t, d.DB, `BEGIN; INSERT INTO t1 VALUES (1); SELECT pg_logical_emit_message(true, 'hb', 'tx'); COMMIT`)
	want = append(want, `INSERT t1 ["1"]`, "MESSAGE tx transactional=true")
	r := runInBackground(s)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, want, h.got())

	// The low-level API forwards past messages too.
	// (A non-transactional message alone does not flush the WAL on PostgreSQL 15; the
	// INSERT's commit does, and the peeks read up to the flush LSN.)
	execAll(t, d.DB, `SELECT pg_logical_emit_message(false, 'hb', 'a')`, `SELECT pg_logical_emit_message(false, 'hb', 'b')`,
		`INSERT INTO t1 VALUES (2)`)
	content := func(m PGMSG) string {
		msg, err := Parse(m.Data)
		require.NoError(t, err)
		lm, ok := msg.(*pglogrepl.LogicalDecodingMessage)
		require.True(t, ok, "%T", msg)
		return string(lm.Content)
	}
	msgs, err := s.GetMessages(2, false, nil)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	require.Equal(t, []string{"a", "b"}, []string{content(msgs[0]), content(msgs[1])})
	require.NoError(t, s.Forward(1))
	msgs, err = s.GetMessages(2, false, nil)
	require.NoError(t, err)
	require.Equal(t, "b", content(msgs[0]), "the first message was forwarded past, the second was not")

	err = s.Forward(-1)
	require.ErrorIs(t, err, ErrConfig)
}

// TestForwardPoint: the rows the slot may be forwarded past.
func TestForwardPoint(t *testing.T) {
	require.True(t, forwardPoint([]byte{'C', 0}))
	require.True(t, forwardPoint([]byte{'M', 0}), "non-transactional message")
	require.False(t, forwardPoint([]byte{'M', 1}), "transactional message")
	require.False(t, forwardPoint([]byte{'M'}))
	require.False(t, forwardPoint([]byte{'I', 0}))
	require.False(t, forwardPoint([]byte{'B', 0}))
	require.False(t, forwardPoint(nil))
}

// truncatingBatcher is a recBatcher that implements BatchTruncater.
type truncatingBatcher struct{ recBatcher }

func (b *truncatingBatcher) BatchTruncate(doctype string) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ops = append(b.ops, "truncate "+doctype)
	return nil, nil
}

// TestBatcherTruncate: a TRUNCATE reaches the Batcher as BatchTruncate, before the
// deletes and upserts of what was written after it in the same poll; what the poll
// upserted before it is dropped. A Batcher without BatchTruncater makes the poll end
// with ErrConfig before the handler gets the TRUNCATE or the slot moves past its
// transaction (the transactions before it are flushed and forwarded past).
func TestBatcherTruncate(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t1 (id int PRIMARY KEY)`)
	h := &eventLog{}
	s := newTestSyncer(t, d, ForTables("t1"), WithMessageHandler(h))
	execAll(t, d.DB, `INSERT INTO t1 VALUES (1), (2)`, `INSERT INTO t1 VALUES (3); TRUNCATE t1; INSERT INTO t1 VALUES (4)`)

	plain := &recBatcher{}
	s.Batcher = plain
	err := runInBackground(s).wait(t, 30*time.Second)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "TRUNCATE of public.t1")
	require.Contains(t, err.Error(), "does not implement BatchTruncater")
	require.Equal(t, []string{`upsert public.t1 ["1"] map[id:1]`, `upsert public.t1 ["2"] map[id:2]`}, plain.opList(),
		"the transaction before the TRUNCATE's was processed and flushed")
	require.NotContains(t, h.got(), "TRUNCATE t1", "the handler did not get the TRUNCATE")

	b := &truncatingBatcher{}
	s.Batcher = b
	r := runInBackground(s)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{"truncate public.t1", `upsert public.t1 ["4"] map[id:4]`}, b.opList())
	require.Equal(t, []string{`INSERT t1 ["1"]`, `INSERT t1 ["2"]`, `INSERT t1 ["3"]`,
		`INSERT t1 ["3"]`, "TRUNCATE t1", `INSERT t1 ["4"]`}, h.got(),
		"the first run stopped inside the TRUNCATE's transaction, which the second delivered again from its start")
}

// TestBatcherFailureNotHiddenByStop: a handler asks to stop at COMMIT and the
// Batcher then fails: Run returns the Batcher's error (not nil, as if it had stopped
// cleanly), and the slot is not forwarded.
func TestBatcherFailureNotHiddenByStop(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t1 (id int PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("t1"), WithMessageHandler(&eventLog{stopAtCommit: true}))
	before, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	s.Batcher = &recBatcher{fail: errors.New("batcher down")}
	execAll(t, d.DB, `INSERT INTO t1 VALUES (1)`)
	err = runInBackground(s).wait(t, 30*time.Second)
	require.ErrorIs(t, err, ErrHandler)
	require.Contains(t, err.Error(), "batcher down")
	after, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	require.Equal(t, before, after)

	// An EventsProcessor decides itself how many rows it processed: a Batcher beside
	// it would never see a poll's net effect, so the combination is refused.
	s.EventsProcessor = func([]PGMSG, error) (int, bool) { return 0, true }
	err = s.Run(t.Context())
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "EventsProcessor")
}
