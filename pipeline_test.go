package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// failingRecorder records like recorder and fails on the INSERT of id failID.
type failingRecorder struct {
	recorder
	failID string
}

func (f *failingRecorder) HandleInsertMessage(idx int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	if string(m.Tuple.Columns[0].Data) == f.failID {
		return errors.New("handler refuses " + f.failID)
	}
	return f.recorder.HandleInsertMessage(idx, m, reln, info)
}

// TestPipelinedPollHandlerErrorMidStream fails a handler in the middle of a peek far
// larger than the reader's queue (the reader is blocked when delivery stops): Run must
// return ErrHandler, the slot must stay at the COMMIT of the last transaction before
// the failure, and a new Syncer must get exactly the failed and later transactions.
//
// It runs through lib/pq (rows through database/sql) and through pgx's stdlib driver
// (rows read on pgx's own connection, peekread.go), each with one peek per poll and
// with every poll split (the slot and a temporary copy peeked at once): all must stop
// the read cleanly and deliver the same.
func TestPipelinedPollHandlerErrorMidStream(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		for _, split := range []bool{false, true} {
			name := driver
			if split {
				name += "/split"
			}
			t.Run(name, func(t *testing.T) { testPipelinedPollHandlerErrorMidStream(t, driver, split) })
		}
	}
}

func testPipelinedPollHandlerErrorMidStream(t *testing.T, driver string, split bool) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, name text)`)
	require.NoError(t, err)
	db, err := sql.Open(driver, d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	opts := []SyncerOpt{WithDB(db), ForTables("items"),
		WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
		WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond)}
	s, err := NewSyncer(opts...)
	require.NoError(t, err)
	const perTx = 2000
	before, err := s.CurrentFlushLSN(context.Background())
	require.NoError(t, err)
	var commits []pglogrepl.LSN // flush LSN after each transaction
	for tx := 0; tx < 3; tx++ {
		_, err := d.DB.Exec(`INSERT INTO items SELECT g, 'n' || g FROM generate_series($1::int, $2::int) g`, tx*perTx+1, tx*perTx+perTx)
		require.NoError(t, err)
		lsn, err := s.CurrentFlushLSN(context.Background())
		require.NoError(t, err)
		commits = append(commits, lsn)
	}
	s.Close()

	bad := &failingRecorder{failID: fmt.Sprint(perTx + 500)}
	s, err = NewSyncer(append(opts, WithMessageHandler(bad))...)
	require.NoError(t, err)
	if split {
		s.splitMinWAL = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = s.Run(ctx)
	require.ErrorIs(t, err, ErrHandler)
	// Read before Close: after it the Syncer's methods return ErrClosed.
	confirmed, err := s.ConfirmedFlushLSN(context.Background())
	require.NoError(t, err)
	s.Close()
	if driver == "pgx" {
		require.NotZero(t, s.pgconnPeeks.Load(), "pgx's connection must be read natively")
	} else {
		require.Zero(t, s.pgconnPeeks.Load())
	}
	if split {
		require.NotZero(t, s.splitPeeks.Load(), "the poll must have been split")
	}
	got := bad.snapshot()
	require.Len(t, got, 1+perTx+1+1+499, "tx 1 whole, then tx 2 up to the failing row")
	require.Equal(t, "COMMIT", got[perTx+1])

	require.Greater(t, confirmed, before, "tx 1 was processed: the slot is at its COMMIT")
	require.LessOrEqual(t, confirmed, commits[0], "tx 2 failed: the slot must not pass it")

	good := &recorder{}
	s, err = NewSyncer(append(opts, WithMessageHandler(good))...)
	require.NoError(t, err)
	if split {
		s.splitMinWAL = 1
	}
	defer s.Close()
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx) }()
	want := 2 * (perTx + 2)
	waitFor(t, 30*time.Second, func() bool { return len(good.snapshot()) >= want }, "tx 2 and 3 again")
	rcancel()
	require.NoError(t, <-done)
	lines := good.snapshot()
	require.Len(t, lines, want)
	require.Equal(t, "BEGIN", lines[0])
	require.Equal(t, fmt.Sprintf("INSERT public.items id=%d,name=n%d", perTx+1, perTx+1), lines[1])
	require.Equal(t, fmt.Sprintf("INSERT public.items id=%d,name=n%d", 3*perTx, 3*perTx), lines[want-2])
	require.Equal(t, "COMMIT", lines[want-1])
	if split {
		require.NotZero(t, s.splitPeeks.Load(), "the poll must have been split")
	}
	// A copy whose read was cancelled goes with its session (ending asynchronously).
	waitFor(t, 10*time.Second, func() bool {
		var slots int
		require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots`).Scan(&slots))
		return slots == 1
	}, "no slot copy left behind")
}
