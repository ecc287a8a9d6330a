package dbsync

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestGetMessagesCancelledNamed: a statement of GetMessages (or Forward) that the
// server cancels while the caller's context is live (pg_cancel_backend from another
// session; a statement_timeout would do the same) came back as the bare server error
// ("peek slot s: pq: canceling statement due to user request (57014)"), named by no
// Err* value, though Run retries the same error as harmless. It is
// ErrStatementCancelled (errors.Is), with the server's error in the chain and a
// message saying what to do, through lib/pq and pgx; the slot is not moved, and the
// same call succeeds afterwards.
func TestGetMessagesCancelledNamed(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			s := newTestSyncer(t, d, WithDB(db), ForTables("items"))
			const per, txs = 500, 40
			for tx := 0; tx < txs; tx++ {
				_, err := d.DB.Exec(`INSERT INTO items SELECT g, repeat('x', 1000) FROM generate_series($1::int, $1::int + $2::int - 1) g`, tx*per+1, per)
				require.NoError(t, err)
			}
			before := queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot())

			// GetMessages: the peek (20 MB of rows, more than the socket buffers hold)
			// is still sending while the first row is held; another session cancels it.
			held, release := make(chan struct{}), make(chan struct{})
			s.getMessagesRow = func(n int) {
				if n == 1 {
					close(held)
					<-release
				}
			}
			type result struct {
				msgs []PGMSG
				err  error
			}
			done := make(chan result, 1)
			go func() {
				msgs, err := s.GetMessages(0, false, nil)
				done <- result{msgs, err}
			}()
			<-held
			require.Equal(t, 1, signalBackends(t, d.DB, "the peek to cancel",
				`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '-- One poll: pgoutput rows%' AND state = 'active'`))
			close(release)
			res := <-done
			s.getMessagesRow = nil
			require.ErrorIs(t, res.err, ErrStatementCancelled, "%v", res.err)
			require.NotErrorIs(t, res.err, ErrClosed)
			code, _, ok := serverError(res.err)
			require.True(t, ok, "%v", res.err)
			require.Equal(t, "57014", code)
			require.Contains(t, res.err.Error(), "call GetMessages again")
			require.Equal(t, before, queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()))

			// The same call succeeds afterwards.
			msgs, err := s.GetMessages(0, false, nil)
			require.NoError(t, err)
			inserts := 0
			for _, m := range msgs {
				if m.Data[0] == 'I' {
					inserts++
				}
			}
			require.Equal(t, txs*per, inserts)

			require.NoError(t, s.Forward(len(msgs)))
			require.Equal(t, []string{"true"}, queryStrings(t, d.DB, `SELECT (confirmed_flush_lsn >= $2::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = $1`,
				s.ReplicationSlot(), msgs[len(msgs)-1].LSN.String()))
		})
	}
}

// TestConnectionSettingsErrConfig: a connection string the driver refuses when it
// connects is a configuration error, yet it came back from NewSyncer (and from Run of
// a Syncer made with WithSetup(false)) without ErrConfig: through WithDB with pgx's
// driver, pgx's parse error ("cannot parse ...: invalid default_query_exec_mode") or
// its refusal of statement_cache_capacity=0 with the default exec mode ("cannot use
// QueryExecModeCacheStatement with disabled statement cache"); through WithPGConnStr
// (lib/pq), a key of pgx's, which lib/pq sends to the server as a setting, refused
// with 42704 "unrecognized configuration parameter". All are ErrConfig now, saying
// what to fix, the driver's error still in the chain, and no password in the message.
func TestConnectionSettingsErrConfig(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	const secret = "hunter2-secret"
	for _, c := range []struct {
		name  string
		pgx   bool
		extra string
		says  string
	}{
		{"pgx exec mode", true, "default_query_exec_mode=bogus", "invalid default_query_exec_mode"},
		{"pgx cache capacity", true, "statement_cache_capacity=0", "with disabled statement cache"},
		{"pgx describe cache", true, "default_query_exec_mode=cache_describe description_cache_capacity=0", "with disabled description cache"},
		{"lib/pq with a pgx key", false, "default_query_exec_mode=simple_protocol", `unrecognized configuration parameter "default_query_exec_mode"`},
	} {
		dsn := d.DSN() + " password=" + secret + " " + c.extra
		var opt SyncerOpt
		if c.pgx {
			db, err := sql.Open("pgx", dsn)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			opt = WithDB(db)
		} else {
			opt = WithPGConnStr(dsn)
		}
		_, err := NewSyncer(opt, ForTables("items"), WithReplicationSlot(pgtest.Ident(t, "slot")))
		require.ErrorIs(t, err, ErrConfig, "%s: %v", c.name, err)
		require.ErrorContains(t, err, c.says, c.name)
		require.ErrorContains(t, err, "connection string", c.name)
		require.NotContains(t, err.Error(), secret, c.name)

		s, err := NewSyncer(opt, WithSetup(false), WithReplicationSlot(pgtest.Ident(t, "slot")), WithMessageHandler(DefaultMessageHandler{}))
		require.NoError(t, err, c.name)
		err = s.Run(t.Context())
		require.ErrorIs(t, err, ErrConfig, "%s: %v", c.name, err)
		require.NotContains(t, err.Error(), secret, c.name)
		require.NoError(t, s.Close())
	}
}

// TestErrCancelledCallersOwn: a 57014 of a call whose context ended is the caller's
// own cancellation (lib/pq has the server cancel the statement then), not
// ErrStatementCancelled; any other error is left as it is.
func TestErrCancelledCallersOwn(t *testing.T) {
	cancelled := &pq.Error{Code: "57014", Message: "canceling statement due to user request"}
	got := errCancelled(context.Background(), "GetMessages", cancelled)
	require.ErrorIs(t, got, ErrStatementCancelled)
	require.ErrorIs(t, got, cancelled)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.Equal(t, error(cancelled), errCancelled(ctx, "GetMessages", cancelled))
	other := &pgconn.PgError{Code: "42P01"}
	require.Equal(t, error(other), errCancelled(context.Background(), "Forward", other))
	require.NoError(t, errCancelled(context.Background(), "Forward", nil))
}

// TestUnknownSettingInQueryIsNotConnString: a 42704 "unrecognized configuration
// parameter" of a statement (a Refresh query reading current_setting of a setting
// the server does not know) is the query's fault (ErrConfig, "selection query"), not
// the connection string's: only a refusal as the session starts (FATAL) says to fix
// the connection string.
func TestUnknownSettingInQueryIsNotConnString(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`, `INSERT INTO items VALUES (1)`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"))
	_, err := s.RefreshContext(context.Background(), `SELECT id FROM items WHERE current_setting('no_such_setting') IS NOT NULL`)
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, `unrecognized configuration parameter "no_such_setting"`)
	require.NotContains(t, err.Error(), "connection string")
}

// TestConnectionRefusedNotErrConfig: README ("connection string") names which refusals
// as a connection starts are ErrConfig: settings the driver or the server refuses. An
// unknown database or role is the server's error as it is (SQLSTATE 3D000, 28000 in
// the chain, through either driver), not ErrConfig.
func TestConnectionRefusedNotErrConfig(t *testing.T) {
	d := pgtest.NewDatabase(t)
	for _, c := range []struct{ extra, code string }{{" dbname=no_such_db", "3D000"}, {" user=no_such_user", "28000"}} {
		_, err := NewSyncer(WithPGConnStr(d.DSN()+c.extra), WithReplicationSlot(pgtest.Ident(t, "slot")))
		require.NotErrorIs(t, err, ErrConfig, c.extra)
		code, _, ok := serverError(err)
		require.True(t, ok, "%s: %v", c.extra, err)
		require.Equal(t, c.code, code, c.extra)
		db, err := sql.Open("pgx", d.DSN()+c.extra)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		_, err = NewSyncer(WithDB(db), WithReplicationSlot(pgtest.Ident(t, "slot")))
		require.NotErrorIs(t, err, ErrConfig, c.extra)
		code, _, ok = serverError(err)
		require.True(t, ok, "%s: %v", c.extra, err)
		require.Equal(t, c.code, code, c.extra)
	}
}

// TestLowLevelCallWaitingHonoursContext: a GetMessagesContext or ForwardContext that
// waits for another GetMessages of the Syncer (still reading its rows: held here after
// its first row) returns when its context ends, with the context's error, rather than
// when the other call is done: its docs say it returns with ctx's error when ctx ends.
// The slot is not moved; the held call then completes.
func TestLowLevelCallWaitingHonoursContext(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("items"))
	execAll(t, d.DB, `INSERT INTO items VALUES (1)`, `INSERT INTO items VALUES (2)`)
	held, release := make(chan struct{}), make(chan struct{})
	s.getMessagesRow = func(n int) {
		if n == 1 {
			close(held)
			<-release
		}
	}
	type result struct {
		msgs []PGMSG
		err  error
	}
	first := make(chan result, 1)
	go func() {
		msgs, err := s.GetMessages(0, false, nil)
		first <- result{msgs, err}
	}()
	<-held
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	for _, c := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"GetMessages", func(ctx context.Context) error { _, err := s.GetMessagesContext(ctx, 0, false, nil); return err }},
		{"Forward", func(ctx context.Context) error { return s.ForwardContext(ctx, 1) }},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- c.call(ctx) }()
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.DeadlineExceeded, c.name)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s waiting for another call did not return when its context ended", c.name)
		}
		cancel()
	}
	before := queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot())
	close(release)
	res := <-first
	require.NoError(t, res.err)
	var kinds []byte
	for _, m := range res.msgs {
		kinds = append(kinds, m.Data[0])
	}
	require.Equal(t, "BRICBIC", string(kinds))
	require.Equal(t, before, queryStrings(t, d.DB, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()))
}
