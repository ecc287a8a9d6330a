package dbsync

import (
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSQLASCIIEncodingError: a SQL_ASCII database stores text bytes unchecked, and
// pgoutput converts each text value to the client encoding (UTF8: lib/pq asks for it;
// a pgx session in another is refused, TestPgxOnNonUTF8Database),
// which fails (22021) on bytes that are not UTF-8. Run stops with ErrEncoding, after
// delivering the changes of earlier polls and without forwarding the slot past the
// failing transaction; skipping that transaction as ErrEncoding's documentation says
// (peek with client_encoding SQL_ASCII, advance to its COMMIT's lsn) lets a new Run
// go on with the next change. A LATIN1 database needs nothing of this: PostgreSQL
// converts its text to UTF-8.
func TestSQLASCIIEncodingError(t *testing.T) {
	ctx := context.Background()
	t.Run("SQL_ASCII", func(t *testing.T) {
		d := pgtest.Shared(t).NewDatabaseWithEncoding(t, "SQL_ASCII")
		execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
		rec := &changeRecorder{}
		s := newTestSyncer(t, d, WithDB(d.DB), ForTables("items"), WithMessageHandler(rec))
		r := runInBackground(s)
		execAll(t, d.DB, `INSERT INTO items VALUES (1, 'plain')`)
		waitForChanges(t, rec, r, 1)
		waitCaughtUp(t, d.DB, s.ReplicationSlot())
		before, err := s.ConfirmedFlushLSN(ctx)
		require.NoError(t, err)
		// é in LATIN1 (0xe9), stored as is: SQL_ASCII converts nothing.
		execAll(t, d.DB, `INSERT INTO items VALUES (2, convert_from('\xe974e9'::bytea, 'LATIN1'))`,
			`INSERT INTO items VALUES (3, 'after')`)
		err = r.wait(t, 20*time.Second)
		require.ErrorIs(t, err, ErrEncoding)
		require.ErrorContains(t, err, "22021")
		require.ErrorContains(t, err, "pg_replication_slot_advance")
		after, err := s.ConfirmedFlushLSN(ctx)
		require.NoError(t, err)
		require.Equal(t, before, after, "nothing forwarded past the failing change")
		ch, _ := rec.snapshot()
		require.Len(t, ch, 1)
		require.Equal(t, `["1"]`, ch[0].Key)

		// The documented skip: the failing transaction's COMMIT, seen with
		// client_encoding SQL_ASCII.
		conn, err := d.DB.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.ExecContext(ctx, `SET client_encoding = 'SQL_ASCII'`)
		require.NoError(t, err)
		rows, err := conn.QueryContext(ctx, `SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
			'proto_version', '1', 'publication_names', $2)`, s.ReplicationSlot(), s.Publication())
		require.NoError(t, err)
		var commits []string
		for rows.Next() {
			var lsn string
			var data []byte
			require.NoError(t, rows.Scan(&lsn, &data))
			if data[0] == 'C' {
				commits = append(commits, lsn)
			}
		}
		require.NoError(t, rows.Err())
		require.Len(t, commits, 2, "the failing transaction and the next one")
		_, err = conn.ExecContext(ctx, `RESET client_encoding`)
		require.NoError(t, err)
		_, err = conn.ExecContext(ctx, `SELECT pg_replication_slot_advance($1, $2::pg_lsn)`, s.ReplicationSlot(), commits[0])
		require.NoError(t, err)

		r = runInBackground(s)
		waitForChanges(t, rec, r, 2)
		require.NoError(t, r.stop(t))
		ch, _ = rec.snapshot()
		require.Len(t, ch, 2)
		require.Equal(t, `["3"]`, ch[1].Key)
		require.Equal(t, "after", ch[1].New["v"])
	})
	t.Run("LATIN1", func(t *testing.T) {
		d := pgtest.Shared(t).NewDatabaseWithEncoding(t, "LATIN1")
		execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
		rec := &changeRecorder{}
		s := newTestSyncer(t, d, WithDB(d.DB), ForTables("items"), WithMessageHandler(rec))
		r := runInBackground(s)
		execAll(t, d.DB, `INSERT INTO items VALUES (2, convert_from('\xe974e9'::bytea, 'LATIN1'))`)
		waitForChanges(t, rec, r, 1)
		require.NoError(t, r.stop(t))
		ch, _ := rec.snapshot()
		require.Equal(t, "été", ch[0].New["v"])
	})
}
