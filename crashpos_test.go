package dbsync

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// failOnceTxLog is a txLog whose delivery of failKey fails once (after txLog held it,
// if it is also the held key): a handler whose own write fails because the server
// it writes to crashed.
type failOnceTxLog struct {
	*txLog
	failKey string
	mu      sync.Mutex
	failed  bool
}

func (h *failOnceTxLog) HandleInsertMessage(n int, m *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	if err := h.txLog.HandleInsertMessage(n, m, r, i); err != nil {
		return err
	}
	c, err := DecodeChange(m, r, i)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.Key == h.failKey && !h.failed {
		h.failed = true
		return errors.New("the handler's own server restarted")
	}
	return nil
}

// slotFallsBackSetup starts a cluster of its own (the tests crash it) with a database
// holding the table items (published) and the table other (not), for pinRestartLSN.
func slotFallsBackSetup(t *testing.T) (*pgtest.Server, *pgtest.Database) {
	t.Helper()
	srv, err := pgtest.Start(pgtest.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`, `CREATE TABLE other (id int)`)
	return srv, d
}

// slotConfirmed reads the slot's confirmed_flush_lsn.
func slotConfirmed(t *testing.T, db *sql.DB, slot string) pglogrepl.LSN {
	t.Helper()
	var s string
	require.NoError(t, db.QueryRow(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s))
	l, err := pglogrepl.ParseLSN(s)
	require.NoError(t, err)
	return l
}

// pinRestartLSN opens a transaction with an xid on its own connection, so that no
// later advance moves the slot's restart_lsn (the candidate a running-xacts record
// gives is where decoding of the oldest open transaction must restart, which is no
// later than restart_lsn: snapbuild.c, SnapBuildProcessRunningXacts) and none saves the
// slot while it stays open; then CHECKPOINT saves the slot as it is. Advances after
// it are kept only in the server's memory until the next checkpoint, and a crash
// (which ends the transaction) brings the slot back to where it was here.
func pinRestartLSN(t *testing.T, d *pgtest.Database, slot string) {
	t.Helper()
	conn, err := d.DB.Conn(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = conn.ExecContext(t.Context(), `BEGIN`)
	require.NoError(t, err)
	_, err = conn.ExecContext(t.Context(), `INSERT INTO other VALUES (1)`)
	require.NoError(t, err)
	execAll(t, d.DB, `CHECKPOINT`)
	waitCaughtUp(t, d.DB, slot)
}

// TestCrashSlotFallsBackMaxMessages: the server crashes (immediate shutdown) while a
// handler holds transaction 6, after the Syncer forwarded the slot past transactions
// 1-5 with advances PostgreSQL kept only in memory, so the slot falls back to before
// transaction 1. The handler's next write fails (its server restarted; RetryOnHandlerError),
// and the retried poll, with MaxMessagesToRead bounding it to one transaction, reads
// transaction 1 again. The poller's copy of the slot's position was still past 5: it
// did not forward the slot past 1 ("already past it") and polled again at once,
// reading transaction 1 again and again; 6 and 7 never came. Run now forwards
// past what it delivered again and goes on: every row arrives, 1-5 delivered a second
// time (README, "What comes again").
func TestCrashSlotFallsBackMaxMessages(t *testing.T) {
	_, d := slotFallsBackSetup(t)
	srv := d.Server
	h := &failOnceTxLog{txLog: newTxLog(`["6"]`), failKey: `["6"]`}
	logs := &pgtest.Buffer{}
	s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(h), WithMaxMessagesToRead(4),
		WithMaxRestartLSNLag(0), WithHandlerErrorPolicy(RetryOnHandlerError),
		WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	r := runInBackground(s)
	t.Cleanup(r.cancel)
	slot := s.ReplicationSlot()
	waitCaughtUp(t, d.DB, slot)
	pinRestartLSN(t, d, slot)
	saved := slotConfirmed(t, d.DB, slot)
	for id := 1; id <= 5; id++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO items VALUES (%d)`, id))
	}
	r.waitFor(t, 20*time.Second, func() bool { k, _ := h.applied(); return len(k) == 5 }, "rows 1-5")
	waitCaughtUp(t, d.DB, slot)
	before := slotConfirmed(t, d.DB, slot)
	held := h.held
	execAll(t, d.DB, `INSERT INTO items VALUES (6)`)
	h.waitHeld(t, held)
	require.NoError(t, srv.Restart(true))
	h.unhold()

	db2, err := sql.Open("postgres", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db2.Close() })
	after := slotConfirmed(t, db2, slot)
	require.Less(t, after, before, "the slot must fall back (the test's precondition)")
	require.LessOrEqual(t, after, saved, "the slot must fall back to before transaction 1 (the test's precondition)")
	execAll(t, db2, `INSERT INTO items VALUES (7)`)
	r.waitFor(t, 30*time.Second, func() bool { k, _ := h.applied(); return len(k) == 7 }, "rows 1-7")
	waitCaughtUp(t, db2, slot)
	require.NoError(t, r.stop(t))
	keys, redelivered := h.applied()
	require.Equal(t, keyRange(1, 7), keys)
	require.Equal(t, 5, redelivered, "transactions 1-5 come again, once each")
	require.Equal(t, 1, strings.Count(logs.String(), "the slot is behind where this Syncer forwarded it"), logs.String())
}

// TestCrashSlotFallsBackEventsProcessor is TestCrashSlotFallsBackMaxMessages for an
// EventsProcessor: it is handed the poll of transaction 6 while the server crashes and
// takes none of it (its own server went away); the next polls, one transaction each,
// read transaction 1 again, which the poller did not forward past (its copy of the
// slot's position was past 5), so the processor got transaction 1 again and again.
func TestCrashSlotFallsBackEventsProcessor(t *testing.T) {
	_, d := slotFallsBackSetup(t)
	srv := d.Server
	var mu sync.Mutex
	var commits []pglogrepl.LSN // commit LSN of each transaction taken, in order
	var armed bool
	held, release := make(chan struct{}), make(chan struct{})
	s := newTestSyncer(t, d, ForTables("items"), WithMaxMessagesToRead(4), WithMaxRestartLSNLag(0))
	s.EventsProcessor = func(msgs []PGMSG, err error) (int, bool) {
		if err != nil {
			return 0, false
		}
		mu.Lock()
		hold := armed && len(msgs) > 0
		if hold {
			armed = false
		}
		mu.Unlock()
		if hold {
			close(held)
			<-release
			return 0, false
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			if first(m.Data) == 'B' {
				final, err := beginFinalLSN(m.Data)
				require.NoError(t, err)
				commits = append(commits, final)
			}
		}
		return len(msgs), false
	}
	// taken returns how many transactions were taken and how many of them again
	// (commit LSN not after the last one taken before).
	taken := func() (n, again int) {
		mu.Lock()
		defer mu.Unlock()
		var last pglogrepl.LSN
		for _, c := range commits {
			if c <= last {
				again++
				continue
			}
			last = c
			n++
		}
		return n, again
	}
	r := runInBackground(s)
	t.Cleanup(r.cancel)
	slot := s.ReplicationSlot()
	waitCaughtUp(t, d.DB, slot)
	pinRestartLSN(t, d, slot)
	saved := slotConfirmed(t, d.DB, slot)
	for id := 1; id <= 5; id++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO items VALUES (%d)`, id))
	}
	r.waitFor(t, 20*time.Second, func() bool { n, _ := taken(); return n == 5 }, "transactions 1-5")
	waitCaughtUp(t, d.DB, slot)
	mu.Lock()
	armed = true
	mu.Unlock()
	execAll(t, d.DB, `INSERT INTO items VALUES (6)`)
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("transaction 6 not handed over")
	}
	require.NoError(t, srv.Restart(true))
	close(release)

	db2, err := sql.Open("postgres", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db2.Close() })
	require.LessOrEqual(t, slotConfirmed(t, db2, slot), saved, "the slot must fall back to before transaction 1 (the test's precondition)")
	execAll(t, db2, `INSERT INTO items VALUES (7)`)
	r.waitFor(t, 30*time.Second, func() bool { n, _ := taken(); return n == 7 }, "transactions 1-7")
	waitCaughtUp(t, db2, slot)
	require.NoError(t, r.stop(t))
	n, again := taken()
	require.Equal(t, 7, n)
	require.Equal(t, 5, again, "transactions 1-5 come again, once each")
}

// TestCancelPeekMidStream cancels, with pg_cancel_backend, the backend streaming a
// poll's rows while the handler holds a row in the middle of a 20 MB backlog, through
// lib/pq and pgx. The peek runs with statement_timeout off, so its 57014 is an
// administrator's cancel (or another process's), which leaves the slot as it was:
// Run ended with the bare server error ("canceling statement due to user request")
// as if it were fatal, while a pg_terminate_backend of the same backend is retried.
// Run now retries it the same way (with backoff, logged), and a consumer that drops
// re-delivered transactions ends with exactly the rows written, in order.
func TestCancelPeekMidStream(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			const per, txs = 500, 40
			h := newTxLog(fmt.Sprintf(`["%d"]`, 5*per+per/2))
			held := h.held
			logs := &pgtest.Buffer{}
			s := newTestSyncer(t, d, WithDB(db), ForTables("items"), WithMessageHandler(h),
				WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
			for tx := 0; tx < txs; tx++ {
				_, err := d.DB.Exec(`INSERT INTO items SELECT g, repeat('x', 1000) FROM generate_series($1::int, $1::int + $2::int - 1) g`, tx*per+1, per)
				require.NoError(t, err)
			}
			r := runInBackground(s)
			t.Cleanup(r.cancel)
			t.Cleanup(h.unhold)
			h.waitHeld(t, held)
			require.Equal(t, 1, signalBackends(t, d.DB, "a backend to cancel",
				`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '-- One poll: pgoutput rows%' AND state = 'active'`))
			h.unhold()
			want := keyRange(1, txs*per)
			r.waitFor(t, 60*time.Second, func() bool {
				k, _ := h.applied()
				return len(k) >= len(want)
			}, "all rows")
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			require.NoError(t, r.stop(t))
			keys, _ := h.applied()
			require.Equal(t, want, keys)
			require.Contains(t, logs.String(), "poll cancelled by the server; retrying")
			require.Contains(t, logs.String(), "57014")
		})
	}
}

// TestGetMessagesForwardAcrossCrash: a GetMessages and Forward user forwards the slot
// past two transactions; the server crashes before PostgreSQL saved that position
// (pinRestartLSN), so the next GetMessages returns both transactions again, though
// "repeated calls return the same rows until Forward" (GetMessages' doc, which now
// says so); Forward past them and the next call returns only what came after.
func TestGetMessagesForwardAcrossCrash(t *testing.T) {
	_, d := slotFallsBackSetup(t)
	s := newTestSyncer(t, d, ForTables("items"))
	conn, err := d.DB.Conn(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = conn.ExecContext(t.Context(), `BEGIN`)
	require.NoError(t, err)
	_, err = conn.ExecContext(t.Context(), `INSERT INTO other VALUES (1)`)
	require.NoError(t, err)
	execAll(t, d.DB, `CHECKPOINT`)
	msgs, err := s.GetMessages(0, true, nil)
	require.NoError(t, err)
	require.Empty(t, msgs)

	execAll(t, d.DB, `INSERT INTO items VALUES (1)`, `INSERT INTO items VALUES (2)`)
	msgs, err = s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, "BRICBIC", msgTypes(msgs))
	first := msgs
	require.NoError(t, s.Forward(len(msgs)))
	msgs, err = s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Empty(t, msgs)

	require.NoError(t, d.Server.Restart(true))
	msgs, err = s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, first, msgs, "the transactions forwarded past before the crash come again")
	require.NoError(t, s.Forward(len(msgs)))
	db2, err := sql.Open("postgres", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db2.Close() })
	execAll(t, db2, `INSERT INTO items VALUES (3)`)
	msgs, err = s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, "BRIC", msgTypes(msgs))
}
