package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
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
