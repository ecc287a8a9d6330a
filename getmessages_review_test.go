package dbsync

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// TestGetMessagesLimitAboveInt4: numMessages is the peek's upto_nchanges, an int4. A
// larger limit (math.MaxInt, say, meant as "no limit") is ErrConfig naming the range,
// not the server's "out of range for type integer"; the slot is not read or moved,
// and the largest valid limit works.
func TestGetMessagesLimitAboveInt4(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE g (id int PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("g"))
	execAll(t, d.DB, `INSERT INTO g VALUES (1)`)
	before, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	for _, n := range []int{math.MaxInt32 + 1, math.MaxInt} {
		for _, consume := range []bool{false, true} {
			msgs, err := s.GetMessages(n, consume, nil)
			require.ErrorIs(t, err, ErrConfig, "GetMessages(%d, %v)", n, consume)
			require.Contains(t, err.Error(), "2147483647")
			require.Empty(t, msgs)
		}
	}
	after, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	require.Equal(t, before, after)
	msgs, err := s.GetMessages(math.MaxInt32, true, nil)
	require.NoError(t, err)
	require.Equal(t, "BRIC", msgTypes(msgs))
	msgs, err = s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Empty(t, msgs)
}

// TestGetMessagesLimitReturnsWholeTransactions: numMessages below a transaction's size
// still returns the whole transaction (upto_nchanges is checked at transaction
// boundaries), and nothing of the next; Forward inside that transaction does not move
// the slot; consume forwards exactly past what was returned; on a slot with nothing of
// the publication left while other tables write, Forward(0) after a limited call that
// returned nothing moves the slot to that call's flush LSN.
func TestGetMessagesLimitReturnsWholeTransactions(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE g (id int PRIMARY KEY)`, `CREATE TABLE other (id int)`)
	s := newTestSyncer(t, d, ForTables("g"))
	execAll(t, d.DB, `INSERT INTO g VALUES (1), (2), (3)`, `INSERT INTO g VALUES (4)`)
	confirmed := func() pglogrepl.LSN {
		c, err := s.ConfirmedFlushLSN(t.Context())
		require.NoError(t, err)
		return c
	}
	start := confirmed()
	msgs, err := s.GetMessages(1, false, nil)
	require.NoError(t, err)
	require.Equal(t, "BRIIIC", msgTypes(msgs))
	require.NoError(t, s.Forward(5))
	require.Equal(t, start, confirmed(), "5 rows end inside the transaction: the slot stays")

	msgs, err = s.GetMessages(1, true, nil)
	require.NoError(t, err)
	require.Equal(t, "BRIIIC", msgTypes(msgs))
	require.Equal(t, msgs[5].LSN, confirmed(), "consume forwards to the returned transaction's COMMIT, no further")
	msgs, err = s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, "BRIC", msgTypes(msgs))
	require.NoError(t, s.Forward(len(msgs)))

	execAll(t, d.DB, `INSERT INTO other VALUES (1)`)
	f, err := s.CurrentFlushLSN(t.Context())
	require.NoError(t, err)
	msgs, err = s.GetMessages(3, false, nil)
	require.NoError(t, err)
	require.Empty(t, msgs)
	require.NoError(t, s.Forward(0))
	require.GreaterOrEqual(t, confirmed(), f, "an empty, complete call lets Forward(0) move the slot to its flush LSN")
}

// TestGetMessagesAfterClose: after Close, GetMessages and Forward return ErrClosed
// (as Run does), whether the Syncer opened its pool (closed with it: the error was
// database/sql's untyped "sql: database is closed") or was given one (WithDB, still
// open: Forward moved the slot of a closed Syncer). The slot does not move.
func TestGetMessagesAfterClose(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE g (id int PRIMARY KEY)`)
	for i, own := range []bool{true, false} {
		opts := []SyncerOpt{ForTables("g"), WithReplicationSlot(pgtest.Ident(t, fmt.Sprintf("slot%d", i)))}
		if !own {
			opts = append(opts, WithDB(d.DB))
		}
		s := newTestSyncer(t, d, opts...)
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO g VALUES (%d)`, i))
		msgs, err := s.GetMessages(0, false, nil)
		require.NoError(t, err)
		require.Equal(t, "BRIC", msgTypes(msgs))
		before, err := s.ConfirmedFlushLSN(t.Context())
		require.NoError(t, err)
		require.NoError(t, s.Close())

		got, err := s.GetMessages(0, false, nil)
		require.ErrorIs(t, err, ErrClosed, "own pool: %v", own)
		require.Empty(t, got)
		_, err = s.GetMessages(0, true, nil)
		require.ErrorIs(t, err, ErrClosed, "own pool: %v", own)
		require.ErrorIs(t, s.Forward(len(msgs)), ErrClosed, "own pool: %v", own)

		var after string
		require.NoError(t, d.DB.QueryRow(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`,
			s.ReplicationSlot()).Scan(&after))
		require.Equal(t, before.String(), after, "own pool: %v: a closed Syncer does not move the slot", own)
	}
}

// TestGetMessagesDoesNotPinRows: the rows a GetMessages call returned are the
// caller's; once the caller drops them, the Syncer must not keep them (their Data)
// alive. It kept the last call's rows for Forward, and after a smaller call the
// larger call's rows beyond the smaller one's length stayed referenced for good: a
// loop over GetMessages pinned as much memory as its largest call (here ~40 MB).
func TestGetMessagesDoesNotPinRows(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE big (id int PRIMARY KEY, v text)`)
	s := newTestSyncer(t, d, ForTables("big"))
	execAll(t, d.DB, `INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 40000) g`)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	msgs, err := s.GetMessages(0, true, nil)
	require.NoError(t, err)
	require.Len(t, msgs, 40003)
	var size int
	for _, m := range msgs {
		size += len(m.Data)
	}
	require.Greater(t, size, 39<<20)
	msgs = nil

	execAll(t, d.DB, `INSERT INTO big VALUES (0, 'x')`)
	small, err := s.GetMessages(0, true, nil)
	require.NoError(t, err)
	require.Equal(t, "BRIC", msgTypes(small))
	after := heap()
	runtime.KeepAlive(small)
	t.Logf("heap: %d MB before, %d MB after", base>>20, after>>20)
	require.Less(t, int64(after)-int64(base), int64(8<<20), "the first call's rows must not stay reachable")
}

// TestGetMessagesWhileRunRuns: GetMessages and Forward on a Syncer whose Run runs
// return ErrAlreadyRunning without touching the slot (they read it: a peek at the
// same moment as one of Run's makes one of them fail with ErrSlotInUse, the slot being
// active in the other session, and a Forward could move the slot past what Run had
// not delivered yet). Run goes on delivering.
func TestGetMessagesWhileRunRuns(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE gr (id int PRIMARY KEY)`)
	h := &recorder{}
	s := newTestSyncer(t, d, ForTables("gr"), WithMessageHandler(h))
	r := runInBackground(s)
	require.Eventually(t, s.IsRunning, 10*time.Second, 5*time.Millisecond)
	for i := 1; i <= 20; i++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO gr VALUES (%d)`, i))
		got, err := s.GetMessages(0, i%2 == 0, nil)
		require.ErrorIs(t, err, ErrAlreadyRunning)
		require.ErrorContains(t, err, "GetMessages while Run runs")
		require.Empty(t, got)
		require.ErrorIs(t, s.Forward(1), ErrAlreadyRunning)
	}
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	var inserts []string
	for _, l := range h.snapshot() {
		if strings.HasPrefix(l, "INSERT") {
			inserts = append(inserts, l)
		}
	}
	require.Len(t, inserts, 20, "Run delivered every row: %v", inserts)

	// Once Run returned, the low-level calls work again.
	execAll(t, d.DB, `INSERT INTO gr VALUES (21)`)
	msgs, err := s.GetMessages(0, true, nil)
	require.NoError(t, err)
	require.Equal(t, "BRIC", msgTypes(msgs))
}
