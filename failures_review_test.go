package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
	"log/slog"
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
	r.waitFor(t, 20*time.Second, func() bool {
		return len(rec2.snapshot()) >= len(want)
	}, "the redelivery, have %v", rec2)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, want, rec2.snapshot())
}

// TestTerminatePeekMidStream ends, with pg_terminate_backend, the backend streaming a
// poll's rows while the handler holds a row in the middle of a 20 MB backlog of 40
// transactions: the slot's own peek, or (split poll) the peek of the slot's
// temporary copy, through lib/pq and pgx. Run retries (transient) and a consumer that
// drops transactions whose commit LSN is not after the last one it applied ends with
// exactly the rows written, in order; the transactions handled before the break are
// not all delivered again (the slot was forwarded past them).
func TestTerminatePeekMidStream(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		for _, target := range []string{"peek", "copy"} {
			t.Run(driver+"/"+target, func(t *testing.T) {
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
				if target == "copy" {
					s.splitMinWAL = 1 << 20
				}
				for tx := 0; tx < txs; tx++ {
					_, err := d.DB.Exec(`INSERT INTO items SELECT g, repeat('x', 1000) FROM generate_series($1::int, $1::int + $2::int - 1) g`, tx*per+1, per)
					require.NoError(t, err)
				}
				r := runInBackground(s)
				t.Cleanup(r.cancel)
				t.Cleanup(h.unhold)
				h.waitHeld(t, held)
				var q string
				if target == "copy" {
					q = `SELECT pg_terminate_backend(active_pid, 10000) FROM pg_replication_slots WHERE slot_name LIKE $1 || '_split_%' AND active_pid IS NOT NULL`
				} else {
					q = `SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '-- One poll: pgoutput rows%' AND state = 'active' AND $1 <> ''`
				}
				require.Equal(t, 1, signalBackends(t, d.DB, "a backend to terminate", q, s.ReplicationSlot()))
				h.unhold()
				want := keyRange(1, txs*per)
				r.waitFor(t, 60*time.Second, func() bool {
					k, _ := h.applied()
					return len(k) >= len(want)
				}, "all rows")
				waitCaughtUp(t, d.DB, s.ReplicationSlot())
				require.NoError(t, r.stop(t))
				keys, redelivered := h.applied()
				require.Equal(t, want, keys)
				require.Less(t, redelivered, txs/2, "the handled transactions were forwarded past")
				if target == "copy" {
					require.NotZero(t, s.splitPeeks.Load())
				}
				require.Contains(t, logs.String(), "poll failed; retrying")
				t.Logf("transactions delivered again: %d; %s", redelivered, logs)
			})
		}
	}
}

// TestTerminateBetweenDeliveryAndAdvance ends every session of the Syncer's pool
// (pg_terminate_backend) while the handler holds the last row of a poll: delivery
// then completes and the advance runs on a connection whose session is gone. Run
// goes on (database/sql replaces the dead connection, or the poll is retried); the
// rows written before and after arrive, a consumer dropping re-delivered
// transactions applies each once, in order, and the slot reaches the flush LSN.
func TestTerminateBetweenDeliveryAndAdvance(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			db, err := sql.Open(driver, d.DSN()+" application_name=dbsync_between")
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := newTxLog(`["3"]`)
			held := h.held
			s := newTestSyncer(t, d, WithDB(db), ForTables("items"), WithMessageHandler(h))
			execAll(t, d.DB, `INSERT INTO items VALUES (1)`, `INSERT INTO items VALUES (2), (3)`)
			r := runInBackground(s)
			t.Cleanup(r.cancel)
			t.Cleanup(h.unhold)
			h.waitHeld(t, held)
			var n int
			require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
				WHERE application_name = 'dbsync_between') k`).Scan(&n))
			require.NotZero(t, n)
			h.unhold()
			execAll(t, d.DB, `INSERT INTO items VALUES (4)`)
			r.waitFor(t, 30*time.Second, func() bool {
				k, _ := h.applied()
				return len(k) >= 4
			}, "all rows")
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			require.NoError(t, r.stop(t))
			keys, redelivered := h.applied()
			require.Equal(t, keyRange(1, 4), keys)
			t.Logf("terminated %d sessions; transactions delivered again: %d", n, redelivered)
		})
	}
}

// TestStopWhileHandlerBlocks: Run's context is cancelled while the handler blocks in
// the first of 3,000 one-row transactions. Run waits for the handler, then returns
// nil without handing over another row (before, the ~500 rows the poll's reader had
// queued ahead were all delivered after the cancel: Stop waited for all of them); the
// slot is not forwarded past the unfinished transaction, and the next run delivers
// everything from it on.
func TestStopWhileHandlerBlocks(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	h := newTxLog(`["1"]`)
	held := h.held
	s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(h))
	execAll(t, d.DB, `SET synchronous_commit = off`,
		`DO $$ BEGIN FOR i IN 1..3000 LOOP INSERT INTO items VALUES (i); COMMIT; END LOOP; END $$`)
	r := runInBackground(s)
	t.Cleanup(h.unhold)
	h.waitHeld(t, held)
	r.cancel()
	select {
	case err := <-r.done:
		t.Fatalf("Run returned while its handler blocks: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	h.unhold()
	require.NoError(t, r.wait(t, 20*time.Second))
	first, _ := h.applied()
	h.mu.Lock()
	require.Len(t, h.txs, 1, "no row handed over after the cancel but the one held")
	require.Equal(t, []string{`["1"]`}, h.txs[0].keys)
	h.mu.Unlock()
	require.Empty(t, first, "the held transaction's COMMIT was not handed over")

	h2 := newTxLog("none")
	s.MessageHandler = h2
	r2 := runInBackground(s)
	waitFor(t, 30*time.Second, func() bool { k, _ := h2.applied(); return len(first)+len(k) >= 3000 }, "the rest")
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r2.stop(t))
	second, _ := h2.applied()
	require.Equal(t, keyRange(1, 3000), append(first, second...), "the second run starts right after what the first processed")
}

// TestSlotDroppedWhileRunning: the slot is dropped while Run runs, between polls
// (then the next write makes the poll's peek fail) or while the handler holds a row
// (the advance after it fails). Run returns ErrSlotMissing, not a retry, saying to
// run setup again, and names neither a publication nor anything else.
func TestSlotDroppedWhileRunning(t *testing.T) {
	for _, when := range []string{"idle", "held"} {
		t.Run(when, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			h := newTxLog(`["2"]`)
			held := h.held
			s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(h))
			r := runInBackground(s)
			t.Cleanup(r.cancel)
			t.Cleanup(h.unhold)
			execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
			waitFor(t, 20*time.Second, func() bool { k, _ := h.applied(); return len(k) == 1 }, "row 1")
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			if when == "held" {
				execAll(t, d.DB, `INSERT INTO items VALUES (2)`)
				h.waitHeld(t, held)
			}
			execAll(t, d.DB, `SELECT pg_drop_replication_slot(`+pq.QuoteLiteral(s.ReplicationSlot())+`)`)
			h.unhold()
			execAll(t, d.DB, `INSERT INTO items VALUES (3)`)
			err := r.wait(t, 20*time.Second)
			require.ErrorIs(t, err, ErrSlotMissing)
			require.NotErrorIs(t, err, ErrPublicationMissing)
			require.ErrorContains(t, err, "run setup again")
		})
	}
}

// TestPublicationTableDroppedWhileRunning: ALTER PUBLICATION ... DROP TABLE while Run
// runs: the table's changes committed before it are delivered, those after it are
// not, Run goes on without error; ADD TABLE brings the table's later changes back.
func TestPublicationTableDroppedWhileRunning(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE b (id int PRIMARY KEY)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("a", "b"), WithMessageHandler(rec))
	pub := pq.QuoteIdentifier(s.Publication())
	r := runInBackground(s)
	t.Cleanup(r.cancel)
	execAll(t, d.DB, `INSERT INTO a VALUES (1)`, `INSERT INTO b VALUES (1)`,
		`ALTER PUBLICATION `+pub+` DROP TABLE b`,
		`INSERT INTO a VALUES (2)`, `INSERT INTO b VALUES (2)`,
		`BEGIN; INSERT INTO b VALUES (3); INSERT INTO a VALUES (3); COMMIT`)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	execAll(t, d.DB, `ALTER PUBLICATION `+pub+` ADD TABLE b`, `INSERT INTO b VALUES (4)`)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{
		"BEGIN", "INSERT public.a id=1", "COMMIT",
		"BEGIN", "INSERT public.b id=1", "COMMIT",
		"BEGIN", "INSERT public.a id=2", "COMMIT", // b's alone: an empty transaction, not sent
		"BEGIN", "INSERT public.a id=3", "COMMIT",
		"BEGIN", "INSERT public.b id=4", "COMMIT",
	}, rec.snapshot())
}

// TestHandlerErrorOnCommit: the handler takes every row of a transaction and fails on
// its COMMIT. Run returns ErrHandler naming the COMMIT; the slot stays before that
// transaction (after the one before it), and the next run delivers it whole again.
func TestHandlerErrorOnCommit(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE c (id int PRIMARY KEY)`)
	boom := errors.New("sink refused the commit")
	rec := &recorder{}
	commits := 0
	rec.failOn = func(line string) error {
		if line == "COMMIT" {
			commits++
			if commits == 2 {
				return boom
			}
		}
		return nil
	}
	s := newTestSyncer(t, d, ForTables("c"), WithMessageHandler(rec))
	execAll(t, d.DB, `INSERT INTO c VALUES (1)`)
	afterFirst := flushLSN(t, d.DB)
	execAll(t, d.DB, `BEGIN; INSERT INTO c VALUES (2); INSERT INTO c VALUES (3); COMMIT`)
	beforeThird := flushLSN(t, d.DB)
	execAll(t, d.DB, `INSERT INTO c VALUES (4)`)
	err := s.Run(t.Context())
	require.ErrorIs(t, err, ErrHandler)
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "COMMIT at LSN")
	require.Equal(t, []string{"BEGIN", "INSERT public.c id=1", "COMMIT", "BEGIN", "INSERT public.c id=2", "INSERT public.c id=3"}, rec.snapshot())
	var afterOK, beforeOK bool
	require.NoError(t, d.DB.QueryRow(`SELECT confirmed_flush_lsn >= $2::pg_lsn, confirmed_flush_lsn < $3::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
		s.ReplicationSlot(), afterFirst, beforeThird).Scan(&afterOK, &beforeOK))
	require.True(t, afterOK, "forwarded past the first transaction")
	require.True(t, beforeOK, "not past the one whose COMMIT failed")

	rec2 := &recorder{}
	s.MessageHandler = rec2
	r := runInBackground(s)
	waitLines(t, rec2, 7)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{"BEGIN", "INSERT public.c id=2", "INSERT public.c id=3", "COMMIT", "BEGIN", "INSERT public.c id=4", "COMMIT"}, rec2.snapshot())
}

// TestServerRestartWhileIdle restarts the server (fast shutdown, then immediate: a
// crash) while Run waits for changes, through lib/pq and pgx. Run does not return: it
// retries, and delivers the rows written after each restart; a consumer dropping
// re-delivered transactions applies every row once, in order. After the restarts Run
// holds its slot lock again (a second Syncer on the slot gets ErrSlotInUse).
func TestServerRestartWhileIdle(t *testing.T) {
	prev := slotLockKeepalive
	t.Cleanup(func() { slotLockKeepalive = prev })
	slotLockKeepalive = 100 * time.Millisecond
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			srv, err := pgtest.Start(pgtest.Options{})
			require.NoError(t, err)
			t.Cleanup(func() { srv.Stop() })
			d := srv.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := newTxLog("none")
			s := newTestSyncer(t, d, WithDB(db), ForTables("items"), WithMessageHandler(h))
			r := runInBackground(s)
			t.Cleanup(r.cancel)
			ins := func(id int) {
				t.Helper()
				c, err := sql.Open("postgres", d.DSN())
				require.NoError(t, err)
				defer c.Close()
				execAll(t, c, fmt.Sprintf(`INSERT INTO items VALUES (%d)`, id))
			}
			ins(1)
			waitFor(t, 20*time.Second, func() bool { k, _ := h.applied(); return len(k) == 1 }, "row 1")
			for i, crash := range []bool{false, true} {
				require.NoError(t, srv.Restart(crash))
				ins(i + 2)
				r.waitFor(t, 60*time.Second, func() bool {
					k, _ := h.applied()
					return len(k) == i+2
				}, "row %d", i+2)
			}
			keys, redelivered := h.applied()
			require.Equal(t, keyRange(1, 3), keys)
			t.Logf("transactions delivered again: %d", redelivered)
			other, err := sql.Open("postgres", d.DSN())
			require.NoError(t, err)
			defer other.Close()
			waitFor(t, 20*time.Second, func() bool {
				b, err := NewSyncer(WithDB(other), WithReplicationSlot(s.ReplicationSlot()), WithPublication(s.Publication()),
					WithMessageHandler(DefaultMessageHandler{}), WithSetup(false))
				require.NoError(t, err)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				return errors.Is(b.Run(ctx), ErrSlotInUse)
			}, "the slot lock to be held again")
			require.NoError(t, r.stop(t))
		})
	}
}

// TestSlotHeldByWalsender: a walsender consumer (START_REPLICATION on a replication
// connection, as pg_recvlogical) holds the slot while Run runs. Run retries a few
// times, then returns ErrSlotInUse saying that only one process may drive the slot,
// having delivered nothing.
func TestSlotHeldByWalsender(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(rec))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rc, err := pgconn.Connect(ctx, d.Server.URL(d.Name)+"&replication=database")
	require.NoError(t, err)
	defer rc.Close(context.Background())
	require.NoError(t, pglogrepl.StartReplication(ctx, rc, s.ReplicationSlot(), 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names " + pq.QuoteLiteral(s.Publication())}}))
	execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
	err = s.Run(ctx)
	require.ErrorIs(t, err, ErrSlotInUse)
	require.ErrorContains(t, err, "make sure only one process drives this slot")
	require.NoError(t, ctx.Err())
	require.Empty(t, rec.snapshot())
}

// signalBackends runs q (a SELECT of pg_cancel_backend or pg_terminate_backend over
// the backends it picks) until it signals at least one, within 10 s, and returns how
// many it signalled that time.
func signalBackends(t *testing.T, db *sql.DB, what, q string, args ...any) int {
	t.Helper()
	var n int
	waitFor(t, 10*time.Second, func() bool {
		rows, err := db.Query(q, args...)
		require.NoError(t, err)
		for rows.Next() {
			n++
		}
		require.NoError(t, rows.Err())
		rows.Close()
		return n > 0
	}, what)
	return n
}
