package dbsync

import (
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// slowWriter is a MessageHandler whose INSERT runs a statement of its own through the
// Syncer's pool (DB) that takes a while, as a handler writing to the same database
// does, and records that statement's outcome.
type slowWriter struct {
	recorder
	s       *Syncer
	stmt    string
	results chan error
}

func (h *slowWriter) HandleInsertMessage(i int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, t *PGTableInfo) error {
	_, err := h.s.DB().ExecContext(context.Background(), h.stmt)
	h.results <- err
	if err != nil {
		return err
	}
	return h.recorder.HandleInsertMessage(i, m, reln, t)
}

// TestSocketSweepSparesHealthyStatement: the sweep of the own pool's sockets after a
// stop (sockets.go) is for a server that does not answer; with the server answering,
// a statement that is simply long (here a handler's own write through DB(), live
// context, still running 20 s after Run's context ended) is not cut. It was: the
// sweep closed every socket waiting over 5 s in a read, so the handler's statement
// failed with a broken connection and Run returned that error.
func TestSocketSweepSparesHealthyStatement(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE sweep (id int PRIMARY KEY)`)
	h := &slowWriter{stmt: `SELECT pg_catalog.pg_sleep(27) /* sweep_victim */`, results: make(chan error, 1)}
	s := newTestSyncer(t, d, ForTables("sweep"), WithMessageHandler(h))
	h.s = s
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO sweep VALUES (1)`)
	waitFor(t, 20*time.Second, func() bool {
		return len(queryStrings(t, d.DB, `SELECT pid::text FROM pg_stat_activity WHERE query LIKE '%sweep_victim%' AND pid <> pg_backend_pid()`)) == 1
	}, "the handler's statement running")
	r.cancel()
	select {
	case err := <-h.results:
		require.NoError(t, err, "the handler's own statement, its context live, the server answering")
	case <-time.After(60 * time.Second):
		t.Fatal("the handler's statement did not end")
	}
	require.NoError(t, r.wait(t, 30*time.Second))
	require.Equal(t, []string{"BEGIN", "INSERT public.sweep id=1"}, h.snapshot())
}
