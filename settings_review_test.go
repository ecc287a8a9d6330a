package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// settingsRole creates a superuser role of its own for t whose sessions in d's
// database get the given settings (ALTER ROLE ... IN DATABASE ... SET), so that the
// test's own pool (d.DB) keeps the defaults. It returns a DSN for that role.
func settingsRole(t *testing.T, d *pgtest.Database, settings [][2]string) string {
	t.Helper()
	role := pgtest.Ident(t, "role")
	execAll(t, d.DB, `CREATE ROLE `+pq.QuoteIdentifier(role)+` LOGIN SUPERUSER REPLICATION`)
	t.Cleanup(func() {
		d.DB.Exec(`DROP OWNED BY ` + pq.QuoteIdentifier(role) + ` CASCADE`)
		d.DB.Exec(`DROP ROLE ` + pq.QuoteIdentifier(role))
	})
	for _, set := range settings {
		execAll(t, d.DB, `ALTER ROLE `+pq.QuoteIdentifier(role)+` IN DATABASE `+pq.QuoteIdentifier(d.Name)+` SET `+set[0]+` = `+pq.QuoteLiteral(set[1]))
	}
	return d.DSN() + " user=" + role
}

const settingsTable = `CREATE TABLE items (id int PRIMARY KEY, d date, ts timestamptz, tl timestamp, iv interval,
	f float8, f4 real, b bytea, m money, n numeric, s text, tsa timestamptz[], r tstzrange, tt timetz)`

func settingsInsert(from, to int) string {
	return fmt.Sprintf(`INSERT INTO items SELECT g, DATE '2024-01-31' + g, TIMESTAMPTZ '2024-03-01 12:34:56.789+02' + g * interval '1 hour',
		TIMESTAMP '2024-03-01 12:34:56' + g * interval '1 day', interval '1 year 2 mons 3 days 04:05:06.7' * g,
		0.1::float8 * g + 0.2, (g / 3.0)::real, '\x00ff5c'::bytea || g::text::bytea, 1234.56::money * g, 1.5 * g,
		'é ü '||g, ARRAY[TIMESTAMPTZ '2020-01-01 00:00+00' + g * interval '1 minute'],
		tstzrange(TIMESTAMPTZ '2020-01-01 00:00+00', TIMESTAMPTZ '2021-01-01 00:00+00' + g * interval '1 day'),
		TIMETZ '12:00:00+05:45'
		FROM generate_series(%d, %d) g`, from, to)
}

// TestClientEncodingOfRoleRefused: lib/pq asks for client_encoding UTF8 when it
// connects, pgx does not, so with pgx a client_encoding set for the role or the
// database (ALTER ROLE/DATABASE ... SET client_encoding = 'LATIN1') applied to
// dbsync's sessions: pgoutput converted every text value to it, and Run delivered
// 'é ü' as the LATIN1 bytes "\xe9 \xfc" (not UTF-8, not the stored value). Run and
// GetMessages now refuse such a session with ErrConfig naming the remedy, and with
// client_encoding=UTF8 in the connection string the same role gets the values right.
func TestClientEncodingOfRoleRefused(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, s text)`)
	dsn := settingsRole(t, d, [][2]string{{"client_encoding", "LATIN1"}})
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	var enc string
	require.NoError(t, db.QueryRow(`SELECT current_setting('client_encoding')`).Scan(&enc))
	require.Equal(t, "LATIN1", enc, "pgx leaves the role's client_encoding")
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, WithDB(db), ForTables("items"), WithMessageHandler(rec))
	execAll(t, d.DB, `INSERT INTO items VALUES (1, 'é ü')`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = s.Run(ctx)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "client_encoding is LATIN1")
	require.Contains(t, err.Error(), "client_encoding=UTF8")
	require.NoError(t, ctx.Err(), "Run must refuse at once")
	chs, _ := rec.snapshot()
	require.Empty(t, chs)
	_, err = s.GetMessages(0, false, nil)
	require.ErrorIs(t, err, ErrConfig)
	require.NoError(t, s.Close())

	db8, err := sql.Open("pgx", dsn+" client_encoding=UTF8")
	require.NoError(t, err)
	t.Cleanup(func() { db8.Close() })
	h := newCacheHandler()
	s8, stop := startSyncer(t, dsn, s.ReplicationSlot(), h, WithDB(db8), WithPublication(pgtest.Ident(t, "pub")))
	waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 1 }, "the insert")
	require.Equal(t, StringMap{"id": int32(1), "s": "é ü"}, h.tableRows("public.items")[`["1"]`])
	stats, err := s8.RefreshContext(ctx, `SELECT * FROM items`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
	require.Equal(t, []string{`insert public.items ["1"]`, `refresh public.items ["1"]`}, h.eventList())
	require.Equal(t, StringMap{"id": int32(1), "s": "é ü"}, h.tableRows("public.items")[`["1"]`])
	require.NoError(t, stop())
}
