package dbsync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(pgtest.MainWithExamples(m)) }

// recorder is a MessageHandler that records every message as a line.
type recorder struct {
	DefaultMessageHandler
	mu    sync.Mutex
	lines []string
	// failOn, when set, makes the handler fail on lines for which it returns an error.
	failOn func(line string) error
	// commits counts COMMIT messages handled.
	commits int
}

func (r *recorder) add(format string, args ...any) error {
	line := fmt.Sprintf(format, args...)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failOn != nil {
		if err := r.failOn(line); err != nil {
			return err
		}
	}
	r.lines = append(r.lines, line)
	return nil
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

func (r *recorder) setFail(f func(string) error) {
	r.mu.Lock()
	r.failOn = f
	r.mu.Unlock()
}

func tupleText(reln *pglogrepl.RelationMessage, t *pglogrepl.TupleData) string {
	if t == nil {
		return "-"
	}
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		switch c.DataType {
		case 'n':
			parts[i] = reln.Columns[i].Name + "=NULL"
		case 'u':
			parts[i] = reln.Columns[i].Name + "=UNCHANGED"
		default:
			parts[i] = reln.Columns[i].Name + "=" + string(c.Data)
		}
	}
	return strings.Join(parts, ",")
}

func (r *recorder) HandleBeginMessage(_ int, m *pglogrepl.BeginMessage) error {
	return r.add("BEGIN")
}

func (r *recorder) HandleCommitMessage(_ int, m *pglogrepl.CommitMessage) error {
	if err := r.add("COMMIT"); err != nil {
		return err
	}
	r.mu.Lock()
	r.commits++
	r.mu.Unlock()
	return nil
}

func (r *recorder) HandleRelationMessage(_ int, m *pglogrepl.RelationMessage, info *PGTableInfo) error {
	if info == nil || info.Namespace != m.Namespace || info.TableName != m.RelationName {
		return fmt.Errorf("relation %s.%s got table info %+v", m.Namespace, m.RelationName, info)
	}
	return nil
}

func (r *recorder) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, _ *PGTableInfo) error {
	return r.add("INSERT %s.%s %s", reln.Namespace, reln.RelationName, tupleText(reln, m.Tuple))
}

func (r *recorder) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, _ *PGTableInfo) error {
	return r.add("UPDATE %s.%s %s old:%s", reln.Namespace, reln.RelationName, tupleText(reln, m.NewTuple), tupleText(reln, m.OldTuple))
}

func (r *recorder) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, _ *PGTableInfo) error {
	return r.add("DELETE %s.%s %s", reln.Namespace, reln.RelationName, tupleText(reln, m.OldTuple))
}

func (r *recorder) HandleTruncateMessage(_ int, m *pglogrepl.TruncateMessage, relns []*pglogrepl.RelationMessage, _ []*PGTableInfo) error {
	names := make([]string, len(relns))
	for i, r := range relns {
		names[i] = r.Namespace + "." + r.RelationName
	}
	return r.add("TRUNCATE %s cascade=%v restart=%v", strings.Join(names, ","),
		m.Option&pglogrepl.TruncateOptionCascade != 0, m.Option&pglogrepl.TruncateOptionRestartIdentity != 0)
}

func (r *recorder) HandleLogicalMessage(_ int, m *pglogrepl.LogicalDecodingMessage) error {
	return r.add("MESSAGE %s %s transactional=%v", m.Prefix, m.Content, m.Transactional)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: "+msg, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitLines(t *testing.T, rec *recorder, n int) {
	t.Helper()
	waitFor(t, 20*time.Second, func() bool { return len(rec.snapshot()) >= n }, "%d lines, have %v", n, rec)
}

func (r *recorder) String() string { return strings.Join(r.snapshot(), "\n") }

// TestExactSequences: inserts, updates, deletes and truncates across several tables and
// transactions arrive exactly, in commit order — including changes made before the
// syncer ran and interleaved transactions that commit out of start order.
func TestExactSequences(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB,
		`CREATE TABLE a (id int PRIMARY KEY, v text)`,
		`CREATE TABLE b (k1 int, k2 text, n int, PRIMARY KEY (k1, k2))`,
		`CREATE TABLE c (id int PRIMARY KEY REFERENCES a(id), note text)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("a", "b", "public.c"), WithMessageHandler(rec))

	execAll(t, d.DB,
		`INSERT INTO a VALUES (1, 'one'), (2, 'two')`,
		`BEGIN; INSERT INTO b VALUES (1, 'x', 10); UPDATE a SET v = 'uno' WHERE id = 1; INSERT INTO c VALUES (1, 'n1'); COMMIT`,
		`UPDATE b SET k2 = 'y', n = 11 WHERE k1 = 1`,
		`DELETE FROM a WHERE id = 2`,
		`INSERT INTO a VALUES (3, NULL)`)
	r := runInBackground(s)
	// Two transactions interleaved: T2 starts later but commits first.
	t1, err := d.DB.Begin()
	require.NoError(t, err)
	_, err = t1.Exec(`INSERT INTO b VALUES (2, 'z', 20)`)
	require.NoError(t, err)
	execAll(t, d.DB, `INSERT INTO a VALUES (4, 'four')`)
	require.NoError(t, t1.Commit())
	execAll(t, d.DB,
		`TRUNCATE b`,
		`TRUNCATE a, c RESTART IDENTITY CASCADE`)

	want := []string{
		"BEGIN", "INSERT public.a id=1,v=one", "INSERT public.a id=2,v=two", "COMMIT",
		"BEGIN", "INSERT public.b k1=1,k2=x,n=10", "UPDATE public.a id=1,v=uno old:-", "INSERT public.c id=1,note=n1", "COMMIT",
		"BEGIN", "UPDATE public.b k1=1,k2=y,n=11 old:k1=1,k2=x,n=NULL", "COMMIT",
		"BEGIN", "DELETE public.a id=2,v=NULL", "COMMIT",
		"BEGIN", "INSERT public.a id=3,v=NULL", "COMMIT",
		"BEGIN", "INSERT public.a id=4,v=four", "COMMIT",
		"BEGIN", "INSERT public.b k1=2,k2=z,n=20", "COMMIT",
		"BEGIN", "TRUNCATE public.b cascade=false restart=false", "COMMIT",
		"BEGIN", "TRUNCATE public.a,public.c cascade=true restart=true", "COMMIT",
	}
	waitLines(t, rec, len(want))
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, want, rec.snapshot())
}

// TestAwkwardNames: mixed case, spaces, quotes and dots in schema, table, publication,
// control schema and watermark table names work, and cannot change the SQL.
func TestAwkwardNames(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB,
		`CREATE SCHEMA "My Schema"`,
		`CREATE TABLE "My Schema"."Odd ""Table"".x" ("Id" int PRIMARY KEY, "the value" text)`,
		`CREATE TABLE "Plain" (id int PRIMARY KEY)`)
	rec := &recorder{}
	s := newTestSyncer(t, d,
		ForTables(`"My Schema"."Odd ""Table"".x"`, "Plain"),
		WithPublication(`Pub "with" quotes; DROP TABLE x --`),
		WithCtrlNamespace(`Ctrl NS`),
		WithWMTable(`wm'table"`),
		WithMessageHandler(rec))
	// Setup again on the same objects is a no-op.
	_, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(s.ReplicationSlot()), WithPublication(s.Publication()),
		WithCtrlNamespace(`Ctrl NS`), WithWMTable(`wm'table"`))
	require.NoError(t, err)

	execAll(t, d.DB,
		`INSERT INTO "My Schema"."Odd ""Table"".x" VALUES (1, 'a b')`,
		`INSERT INTO "Plain" VALUES (7)`,
		`DELETE FROM "My Schema"."Odd ""Table"".x"`)
	r := runInBackground(s)
	want := []string{
		"BEGIN", `INSERT My Schema.Odd "Table".x Id=1,the value=a b`, "COMMIT",
		"BEGIN", `INSERT public.Plain id=7`, "COMMIT",
		"BEGIN", `DELETE My Schema.Odd "Table".x Id=1,the value=NULL`, "COMMIT",
	}
	waitLines(t, rec, len(want))
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, want, rec.snapshot())

	var pubTables int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_publication_tables WHERE pubname = $1`, s.Publication()).Scan(&pubTables))
	require.Equal(t, 3, pubTables, "two user tables and the watermark table")
	var x int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM "Ctrl NS"."wm'table"""`).Scan(&x))
}

// TestRestartDeliversEverythingOnce: a syncer stopped mid-stream and a new one on the
// same slot together deliver every committed transaction, in commit order; the second
// re-delivers at most the one transaction in flight when the first stopped.
func TestRestartDeliversEverythingOnce(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ev (id int PRIMARY KEY, batch int)`)
	const txs = 200
	first := &recorder{}
	stopAt := 60
	var once sync.Once
	stopped := make(chan struct{})
	s1 := newTestSyncer(t, d, ForTables("ev"), WithMessageHandler(first), WithMaxMessagesToRead(50))
	for i := 0; i < txs; i++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO ev SELECT g, %d FROM generate_series(%d, %d) g`, i, i*3, i*3+2))
	}
	// Stop the first syncer from inside a handler, in the middle of transaction stopAt.
	first.setFail(func(line string) error {
		if line == fmt.Sprintf("INSERT public.ev id=%d,batch=%d", stopAt*3+1, stopAt) {
			once.Do(func() { close(stopped) })
			return ErrStopProcessingMessages
		}
		return nil
	})
	r1 := runInBackground(s1)
	<-stopped
	require.NoError(t, <-r1.done, "ErrStopProcessingMessages stops cleanly")
	firstLines := first.snapshot()
	require.Equal(t, stopAt, first.commits, "transactions 0..%d completed before the stop", stopAt-1)
	s1.Close()

	second := &recorder{}
	s2 := newTestSyncer(t, d, ForTables("ev"), WithMessageHandler(second))
	r2 := runInBackground(s2)
	waitFor(t, 30*time.Second, func() bool {
		second.mu.Lock()
		defer second.mu.Unlock()
		return second.commits >= txs-stopAt
	}, "second syncer to deliver the rest")
	waitCaughtUp(t, d.DB, s2.ReplicationSlot())
	require.NoError(t, r2.stop(t))

	// The first saw transactions 0..stopAt-1 whole plus part of stopAt; the second starts
	// exactly at stopAt (the in-flight one comes again, whole) and ends at the last.
	var want []string
	for i := 0; i < txs; i++ {
		want = append(want, "BEGIN")
		for j := 0; j < 3; j++ {
			want = append(want, fmt.Sprintf("INSERT public.ev id=%d,batch=%d", i*3+j, i))
		}
		want = append(want, "COMMIT")
	}
	require.Equal(t, want[:stopAt*5+2], firstLines, "first syncer: in order, stopped inside transaction %d", stopAt)
	require.Equal(t, want[stopAt*5:], second.snapshot(), "second syncer: everything from the in-flight transaction on, once")
}

// TestFailingHandlerDoesNotForward: under StopOnHandlerError the slot stays before the
// failed transaction and Run returns ErrHandler; after the handler recovers the
// transaction is delivered. Under RetryOnHandlerError it is retried until it succeeds.
func TestFailingHandlerDoesNotForward(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE f (id int PRIMARY KEY)`)
	boom := errors.New("boom")
	rec := &recorder{failOn: func(line string) error {
		if line == "INSERT public.f id=2" {
			return boom
		}
		return nil
	}}
	s := newTestSyncer(t, d, ForTables("f"), WithMessageHandler(rec))
	execAll(t, d.DB, `INSERT INTO f VALUES (1)`)
	beforeFail := flushLSN(t, d.DB)
	execAll(t, d.DB, `BEGIN; INSERT INTO f VALUES (3); INSERT INTO f VALUES (2); COMMIT`, `INSERT INTO f VALUES (4)`)

	err := s.Run(t.Context())
	require.ErrorIs(t, err, ErrHandler)
	require.ErrorIs(t, err, boom)
	require.Equal(t, []string{"BEGIN", "INSERT public.f id=1", "COMMIT", "BEGIN", "INSERT public.f id=3"}, rec.snapshot())
	var confirmedOK, notPast bool
	require.NoError(t, d.DB.QueryRow(`SELECT confirmed_flush_lsn <= $2::pg_lsn, confirmed_flush_lsn > '0/0'
		FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot(), beforeFail).Scan(&notPast, &confirmedOK))
	require.True(t, notPast, "slot must not move past the failed transaction")

	// A restarted run re-delivers the failed transaction from its BEGIN.
	rec2 := &recorder{}
	var failures int
	rec2.failOn = func(line string) error {
		if line == "INSERT public.f id=2" && failures < 3 {
			failures++
			return boom
		}
		return nil
	}
	s2 := newTestSyncer(t, d, ForTables("f"), WithMessageHandler(rec2), WithHandlerErrorPolicy(RetryOnHandlerError))
	r := runInBackground(s2)
	want := []string{"BEGIN", "INSERT public.f id=3", "INSERT public.f id=2", "COMMIT", "BEGIN", "INSERT public.f id=4", "COMMIT"}
	waitFor(t, 30*time.Second, func() bool {
		l := rec2.snapshot()
		return len(l) >= 3*2+len(want)
	}, "retries then success: %v", rec2)
	waitCaughtUp(t, d.DB, s2.ReplicationSlot())
	require.NoError(t, r.stop(t))
	got := rec2.snapshot()
	// Three failed attempts each delivered BEGIN and id=3 before failing on id=2.
	require.Equal(t, append([]string{"BEGIN", "INSERT public.f id=3", "BEGIN", "INSERT public.f id=3", "BEGIN", "INSERT public.f id=3"}, want...), got)
}

// TestIdlePublicationDoesNotPinWAL: while the published table is idle and another
// table writes 50+ MB of WAL, the slot's restart_lsn and confirmed_flush_lsn keep up.
func TestIdlePublicationDoesNotPinWAL(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE watched (id int PRIMARY KEY)`, `CREATE TABLE busy (id bigserial PRIMARY KEY, pad text)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("watched"), WithMessageHandler(rec))
	r := runInBackground(s)
	start := flushLSN(t, d.DB)
	for i := 0; i < 12; i++ {
		execAll(t, d.DB, `INSERT INTO busy (pad) SELECT repeat('x', 400) FROM generate_series(1, 10000)`)
	}
	var written int64
	require.NoError(t, d.DB.QueryRow(`SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), $1::pg_lsn)::bigint`, start).Scan(&written))
	require.Greater(t, written, int64(50<<20), "the busy table must write more than 50 MB of WAL")
	// A checkpoint logs xl_running_xacts, which is where restart_lsn can move.
	execAll(t, d.DB, `CHECKPOINT`)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	execAll(t, d.DB, `CHECKPOINT`)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	var retained, lag int64
	require.NoError(t, d.DB.QueryRow(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
		pg_wal_lsn_diff(pg_current_wal_flush_lsn(), confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()).Scan(&retained, &lag))
	require.NoError(t, r.stop(t))
	t.Logf("WAL written %d bytes; retained by slot %d bytes; lag %d bytes", written, retained, lag)
	require.Less(t, retained, int64(1<<20), "slot retains under 1 MB of the %d bytes written", written)
	require.Less(t, lag, int64(1<<20))
	require.Empty(t, rec.snapshot(), "no changes of the watched table")
}

// TestCloseEndsWaitingRefreshAndRun: Close fails a Refresh that waits for a Run (it
// would otherwise block for good), and a closed Syncer does not run again (Run would
// otherwise poll on a pool given with WithDB until its context ends).
func TestCloseEndsWaitingRefreshAndRun(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`, `INSERT INTO items VALUES (1)`)
	s := newTestSyncer(t, d, WithDB(d.DB), ForTables("items"), WithMessageHandler(DefaultMessageHandler{}))
	done := make(chan error, 1)
	go func() { done <- s.Refresh(`SELECT * FROM items`) }()
	waitFor(t, 10*time.Second, func() bool {
		var n int
		require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM `+pq.QuoteIdentifier(s.CtrlNamespace())+`.`+pq.QuoteIdentifier(s.WMTable())).Scan(&n))
		return n > 0
	}, "the Refresh's low watermark")
	require.NoError(t, s.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrRefreshAbandoned)
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Refresh still waiting 10 s after Close")
	}
	require.ErrorIs(t, s.Run(context.Background()), ErrClosed)
	require.NoError(t, s.Close(), "a second Close")
}

// TestRunWithCancelledContext checks what Stop's documentation recommends instead of
// Start and Stop on two goroutines: Run with a context cancelled before it begins
// returns nil at once, delivers nothing and does not move the slot, and the Syncer
// runs again afterwards.
func TestRunWithCancelledContext(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, WithDB(d.DB), ForTables("items"), WithMessageHandler(rec))
	require.NoError(t, s.Setup(context.Background()))
	execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
	before, err := s.ConfirmedFlushLSN(context.Background())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	require.NoError(t, s.Run(ctx))
	require.Less(t, time.Since(start), 2*time.Second)
	require.False(t, s.IsRunning())
	require.Empty(t, rec.snapshot())
	after, err := s.ConfirmedFlushLSN(context.Background())
	require.NoError(t, err)
	require.Equal(t, before, after)

	r := runInBackground(s)
	waitLines(t, rec, 3)
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{"BEGIN", "INSERT public.items id=1", "COMMIT"}, rec.snapshot())
}
