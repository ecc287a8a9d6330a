package dbsync

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestWithDBPoolLeftAsConfigured: a pool given with WithDB keeps the caller's limits
// (at most 3 connections open throughout setup, Run, a Snapshot and Close; a 300 ms
// connection lifetime still closes connections) and stays open after Close and after
// a NewSyncer whose setup failed.
func TestWithDBPoolLeftAsConfigured(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`, `INSERT INTO items SELECT generate_series(1, 50)`)
	db, err := sql.Open("postgres", d.DSN())
	require.NoError(t, err)
	defer db.Close()
	db.SetMaxOpenConns(3)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(300 * time.Millisecond)

	_, err = NewSyncer(WithDB(db), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication("nopub"))
	require.ErrorIs(t, err, ErrPublicationMissing)
	require.NoError(t, db.Ping(), "a failed NewSyncer leaves the caller's pool open")

	var maxOpen atomic.Int64
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if n := int64(db.Stats().OpenConnections); n > maxOpen.Load() {
				maxOpen.Store(n)
			}
			select {
			case <-stopWatch:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	rec := &recorder{}
	s := newTestSyncer(t, d, WithDB(db), ForTables("items"), WithMessageHandler(rec), WithSnapshotParallel(4), WithSnapshotChunkSize(10))
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO items VALUES (100)`)
	waitLines(t, rec, 3)
	require.NoError(t, s.Snapshot(context.Background(), "items"))
	time.Sleep(700 * time.Millisecond) // past the lifetime, while polling
	require.NoError(t, r.stop(t))
	require.NoError(t, s.Close())
	close(stopWatch)
	<-watched

	st := db.Stats()
	require.Equal(t, 3, st.MaxOpenConnections)
	require.LessOrEqual(t, maxOpen.Load(), int64(3))
	require.Positive(t, st.MaxLifetimeClosed, "connections still closed after their lifetime")
	require.Positive(t, st.MaxIdleClosed, "the idle limit of 1 still applies")
	require.NoError(t, db.Ping(), "Close leaves the caller's pool open")
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM items`).Scan(&n))
	require.Equal(t, 51, n)
}

// TestConfigWithDBWins: WithDB wins over WithPGConnStr and POSTGRES_*, given before or
// after them (a connection string is then not even parsed), and Close leaves the pool
// open.
func TestConfigWithDBWins(t *testing.T) {
	db, err := sql.Open("postgres", "host=127.0.0.1 port=1")
	require.NoError(t, err)
	defer db.Close()
	for _, opts := range [][]SyncerOpt{
		{WithDB(db), WithPGConnStr("host=other password=ab cd")},
		{WithPGConnStr("host=other"), WithDB(db)},
	} {
		s := resolved(t, append(opts, env(map[string]string{"POSTGRES_HOST": "envhost"}))...)
		require.Same(t, db, s.DB())
		require.NoError(t, s.Close())
		// Nothing listens on port 1: the ping fails to connect, but not as closed.
		require.NotContains(t, errText(db.PingContext(context.Background())), "database is closed")
	}
}
