package dbsync

import (
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// failOnce fails the insert of id (a text column value) once, then takes it.
type failOnce struct {
	*cacheHandler
	fail atomic.Value // string: the id to fail on
}

var errFailOnce = errors.New("fail once")

func (h *failOnce) HandleInsertMessage(i int, m *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, info *PGTableInfo) error {
	if id, _ := h.fail.Load().(string); id != "" && string(m.Tuple.Columns[0].Data) == id {
		h.fail.Store("")
		return errFailOnce
	}
	return h.cacheHandler.HandleInsertMessage(i, m, r, info)
}

// TestRunStopCyclesLeaveNothing: a Syncer run and stopped 30 times (Stop, Run's
// context, a handler error ending Run), with changes delivered in each run, holds no
// pool connection and no goroutine of its own between runs, and every change is
// delivered once, in order.
func TestRunStopCyclesLeaveNothing(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE c (id int PRIMARY KEY)`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := &failOnce{cacheHandler: newCacheHandler()}
			s := newTestSyncer(t, d, WithDB(db), ForTables("c"), WithMessageHandler(h))
			// One run first: the pool and the runtime's own goroutines are warm.
			r := runInBackground(s)
			execAll(t, d.DB, `INSERT INTO c VALUES (0)`)
			r.waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 1 }, "first insert")
			require.NoError(t, r.stop(t))
			base := runtime.NumGoroutine()
			var want []string
			want = append(want, `insert public.c ["0"]`)
			for i := 1; i <= 30; i++ {
				execAll(t, d.DB, fmt.Sprintf(`INSERT INTO c VALUES (%d)`, i))
				want = append(want, fmt.Sprintf(`insert public.c [%q]`, fmt.Sprint(i)))
				switch i % 3 {
				case 0:
					done := make(chan error, 1)
					go func() { done <- s.Start() }()
					waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == len(want) }, "insert %d", i)
					s.Stop()
					require.NoError(t, <-done)
				case 1:
					r := runInBackground(s)
					r.waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == len(want) }, "insert %d", i)
					require.NoError(t, r.stop(t))
				case 2:
					h.fail.Store(fmt.Sprint(i))
					require.ErrorIs(t, s.Run(t.Context()), errFailOnce)
					r := runInBackground(s)
					r.waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == len(want) }, "insert %d", i)
					require.NoError(t, r.stop(t))
				}
				require.Zero(t, db.Stats().InUse, "run %d: connections in use after Run returned", i)
				waitGoroutines(t, base)
			}
			require.Equal(t, want, h.eventList())
			require.LessOrEqual(t, db.Stats().OpenConnections, 4)
		})
	}
}
