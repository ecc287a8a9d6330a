package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestRunNeedsTwoConnections: a poll's connection streams the peek's rows while they
// are delivered, and delivering a RELATION of a table not described yet reads the
// catalog on a second connection. On a *sql.DB limited to one connection, with a
// backlog of 5,000 rows in one transaction (more than the reader goroutine queues
// ahead of delivery), that second connection never came: Run hung with nothing
// delivered until its context ended. Run now refuses such a pool at once with
// ErrConfig (an EventsProcessor, which gets whole polls read before delivery, still
// runs on it), and on a pool of two delivers the backlog in order.
func TestRunNeedsTwoConnections(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE one (id int PRIMARY KEY)`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			db.SetMaxOpenConns(1)
			h := &eventLog{}
			s := newTestSyncer(t, d, WithDB(db), ForTables("one"), WithMessageHandler(h))
			execAll(t, d.DB, `INSERT INTO one SELECT generate_series(1, 5000)`)

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = s.Run(ctx)
			require.ErrorIs(t, err, ErrConfig)
			require.Contains(t, err.Error(), "SetMaxOpenConns(2)")
			require.NoError(t, ctx.Err(), "Run must refuse at once, not when its context ends")
			require.Empty(t, h.got())

			// An EventsProcessor reads each poll whole before it gets it: one
			// connection is enough.
			var rows atomic.Int64
			ep := newTestSyncer(t, d, WithDB(db), ForTables("one"), WithReplicationSlot(pgtest.Ident(t, "ep")))
			ep.EventsProcessor = func(msgs []PGMSG, err error) (int, bool) {
				rows.Add(int64(len(msgs)))
				return len(msgs), false
			}
			execAll(t, d.DB, `INSERT INTO one SELECT generate_series(5001, 7000)`)
			epr := runInBackground(ep)
			// This slot was created after the first 5,000: BEGIN, RELATION, 2,000
			// INSERTs, COMMIT.
			waitFor(t, 20*time.Second, func() bool { return rows.Load() >= 2003 }, "2,003 rows, have %d", rows.Load())
			waitCaughtUp(t, d.DB, ep.ReplicationSlot())
			require.NoError(t, epr.stop(t))
			require.EqualValues(t, 2003, rows.Load())

			db.SetMaxOpenConns(2)
			r := runInBackground(s)
			waitFor(t, 20*time.Second, func() bool { return len(h.got()) >= 7000 }, "7,000 inserts, have %d", len(h.got()))
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			require.NoError(t, r.stop(t))
			got := h.got()
			require.Len(t, got, 7000)
			for i, e := range got {
				require.Equal(t, fmt.Sprintf(`INSERT one ["%d"]`, i+1), e)
			}
		})
	}
}

// txLog is a MessageHandler that records each delivered transaction (its commit LSN
// and the keys it inserted) and can hold the delivery of one key once until released.
type txLog struct {
	DefaultMessageHandler
	mu      sync.Mutex
	txs     []loggedTx
	cur     *loggedTx
	holdKey string
	held    chan struct{}
	release chan struct{}
	once    sync.Once
}

// unhold releases the held key's delivery; it may be called more than once.
func (h *txLog) unhold() { h.once.Do(func() { close(h.release) }) }

type loggedTx struct {
	commit    pglogrepl.LSN
	keys      []string
	committed bool
}

func newTxLog(holdKey string) *txLog {
	return &txLog{holdKey: holdKey, held: make(chan struct{}), release: make(chan struct{})}
}

func (h *txLog) HandleBeginMessage(_ int, m *pglogrepl.BeginMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.txs = append(h.txs, loggedTx{commit: m.FinalLSN})
	h.cur = &h.txs[len(h.txs)-1]
	return nil
}

func (h *txLog) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	c, err := DecodeChange(m, r, i)
	if err != nil {
		return err
	}
	if c.Key == h.holdKey {
		h.mu.Lock()
		hold := h.held != nil
		held := h.held
		h.held = nil
		h.mu.Unlock()
		if hold {
			close(held)
			<-h.release
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur.keys = append(h.cur.keys, c.Key)
	return nil
}

func (h *txLog) HandleCommitMessage(int, *pglogrepl.CommitMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur.committed = true
	return nil
}

// applied returns the keys a consumer that drops re-delivered transactions (commit
// LSN not after the last applied one) applies, in order, and how many delivered
// transactions it dropped as re-deliveries.
func (h *txLog) applied() (keys []string, redelivered int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var last pglogrepl.LSN
	for _, tx := range h.txs {
		if !tx.committed {
			continue
		}
		if tx.commit <= last {
			redelivered++
			continue
		}
		last = tx.commit
		keys = append(keys, tx.keys...)
	}
	return keys, redelivered
}

func (h *txLog) waitHeld(t *testing.T, held chan struct{}) {
	t.Helper()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the held key was not delivered within 30 s")
	}
}

func keyRange(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf(`["%d"]`, i))
	}
	return out
}

// TestServerCrashMidPoll restarts the server while a Syncer's handler is in the
// middle of a backlog of 27 transactions of 500 rows of 1 kB (13 MB: more than the
// socket buffers hold, so the peek's stream breaks), after an earlier poll forwarded
// the slot past 3 transactions; then more is written. Run keeps going, retrying with
// backoff (logged): every committed row arrives, transactions whole and in commit
// order, and a consumer that drops transactions whose commit LSN is not after the
// last applied one ends with exactly the rows written, in order. With crash
// (immediate shutdown) the slot may fall back to its last saved position, so
// transactions may come again (README, "What comes again"); how many is not pinned:
// PostgreSQL also saves a logical slot whenever an advance moves its restart_lsn,
// which restart_lsn upkeep (restartlsn.go) makes frequent (in runs so far none came
// again).
func TestServerCrashMidPoll(t *testing.T) {
	for _, crash := range []bool{true, false} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			srv, err := pgtest.Start(pgtest.Options{})
			require.NoError(t, err)
			t.Cleanup(func() { srv.Stop() })
			d := srv.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
			const per = 500
			insert := func(db *sql.DB, tx int) {
				t.Helper()
				_, err := db.Exec(`INSERT INTO items SELECT g, repeat('x', 1000) FROM generate_series($1::int, $1::int + $2::int - 1) g`, tx*per+1, per)
				require.NoError(t, err)
			}
			h := newTxLog(fmt.Sprintf(`["%d"]`, 15*per+per/2))
			held := h.held
			logs := &pgtest.Buffer{}
			s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(h),
				WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
			r := runInBackground(s)
			t.Cleanup(r.cancel)
			for tx := 0; tx < 3; tx++ {
				insert(d.DB, tx)
			}
			waitFor(t, 30*time.Second, func() bool { k, _ := h.applied(); return len(k) == 3*per }, "the first 3 transactions")
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			s.Stop()
			require.NoError(t, <-r.done)
			for tx := 3; tx < 30; tx++ {
				insert(d.DB, tx)
			}
			r = runInBackground(s)
			t.Cleanup(r.cancel)
			h.waitHeld(t, held)
			require.NoError(t, srv.Restart(crash))
			h.unhold()

			db2, err := sql.Open("postgres", d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db2.Close() })
			for tx := 30; tx < 35; tx++ {
				insert(db2, tx)
			}
			want := keyRange(1, 35*per)
			waitFor(t, 60*time.Second, func() bool { k, _ := h.applied(); return len(k) >= len(want) }, "all rows")
			waitCaughtUp(t, db2, s.ReplicationSlot())
			require.NoError(t, r.stop(t))
			keys, redelivered := h.applied()
			require.Equal(t, want, keys)
			require.Contains(t, logs.String(), "poll failed; retrying")
			t.Logf("transactions delivered again: %d", redelivered)
		})
	}
}

// TestStatementTimeoutOfRole: a statement_timeout set for the role or database (here
// the database: ALTER DATABASE ... SET, 500 ms) applies to dbsync's sessions too. A
// handler that takes longer than that over a poll's rows keeps the peek's statement
// running (its rows are streamed as the handlers take them), so the server cancelled
// it (57014) and Run ended with that error; the next run would meet it again. The peek
// (both of a split poll's: the slot's and its copy's) and the advance now run with
// statement_timeout off when the server has one, and the pool's sessions keep the
// database's setting.
func TestStatementTimeoutOfRole(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprintf("split=%v", split), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`,
				`ALTER DATABASE `+pq.QuoteIdentifier(d.Name)+` SET statement_timeout = '500ms'`)
			const per = 500
			h := newTxLog(fmt.Sprintf(`["%d"]`, 2*per+1))
			held := h.held
			s := newTestSyncer(t, d, ForTables("items"), WithMessageHandler(h))
			if split {
				s.splitMinWAL = 1 << 20
			}
			for tx := 0; tx < 40; tx++ {
				_, err := d.DB.Exec(`INSERT INTO items SELECT g, repeat('x', 2000) FROM generate_series($1::int, $1::int + $2::int - 1) g`, tx*per+1, per)
				require.NoError(t, err)
			}
			r := runInBackground(s)
			t.Cleanup(r.cancel)
			t.Cleanup(h.unhold)
			h.waitHeld(t, held)
			// The peek (40 MB of rows: more than the socket buffers hold) is still
			// sending while the handler holds; release it once the statement ran past
			// the timeout. (pg_stat_activity shows the first 1,024 bytes of
			// sql/peek.sql: its comment.)
			waitFor(t, 20*time.Second, func() bool {
				var n int
				require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
					AND state = 'active' AND query LIKE '-- One poll: pgoutput rows%' AND now() - query_start > interval '1 second'`).Scan(&n))
				if split {
					return n == 2
				}
				return n == 1
			}, "the peek to run for a second")
			h.unhold()
			want := keyRange(1, 40*per)
			r.waitFor(t, 30*time.Second, func() bool {
				k, _ := h.applied()
				return len(k) >= len(want)
			}, "all rows")
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			require.NoError(t, r.stop(t))
			keys, redelivered := h.applied()
			require.Equal(t, want, keys)
			require.Zero(t, redelivered)
			if split {
				require.NotZero(t, s.splitPeeks.Load())
			}
			var timeout string
			require.NoError(t, s.DB().QueryRow(`SHOW statement_timeout`).Scan(&timeout))
			require.Equal(t, "500ms", timeout, "the pool's sessions keep the database's setting")
		})
	}
}
