package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// txHandler is a MessageHandler that holds a transaction of the Syncer's pool from
// each BEGIN to its COMMIT, as a consumer writing each source transaction into the
// same database in one transaction does: one connection of the pool stays taken while
// the transaction's messages are delivered.
type txHandler struct {
	recorder
	db *sql.DB
	tx *sql.Tx
}

func (h *txHandler) HandleBeginMessage(i int, m *pglogrepl.BeginMessage) error {
	tx, err := h.db.BeginTx(context.Background(), nil)
	if err != nil {
		return err
	}
	h.tx = tx
	return h.recorder.HandleBeginMessage(i, m)
}

func (h *txHandler) HandleCommitMessage(i int, m *pglogrepl.CommitMessage) error {
	if err := h.tx.Commit(); err != nil {
		return err
	}
	return h.recorder.HandleCommitMessage(i, m)
}

// TestTxHandlerOnPoolOfThree: WithDB says Run needs two connections, one more for a
// handler that uses the pool: with three, a handler holding one across a transaction
// stalled Run for good once a poll was split (the split held two, the handler the
// third, and the first RELATION's catalog read waited for a fourth): no row was
// delivered in 30 s. A poll is split only on a pool that may open four now; on four
// it is split and the same handler gets every row.
func TestTxHandlerOnPoolOfThree(t *testing.T) {
	for _, open := range []int{3, 4} {
		t.Run(fmt.Sprint(open), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE one (id int PRIMARY KEY)`)
			db, err := sql.Open("postgres", d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			db.SetMaxOpenConns(open)
			h := &txHandler{db: db}
			s := newTestSyncer(t, d, WithDB(db), ForTables("one"), WithMessageHandler(h))
			s.splitMinWAL = 1
			execAll(t, d.DB, `INSERT INTO one SELECT generate_series(1, 3000)`)
			r := runInBackground(s)
			r.waitFor(t, 30*time.Second, func() bool { return len(h.snapshot()) >= 3002 }, "rows, have %d", len(h.snapshot()))
			require.NoError(t, r.stop(t))
			got := h.snapshot()
			require.Len(t, got, 3002)
			for i := 1; i <= 3000; i++ {
				require.Equal(t, fmt.Sprintf("INSERT public.one id=%d", i), got[i])
			}
			require.Equal(t, open >= 4, s.splitPeeks.Load() > 0, "split polls on a pool of %d", open)
		})
	}
}
