package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// settingsRole creates a superuser role of its own for t whose sessions in d's
// database get the given settings (ALTER ROLE ... IN DATABASE ... SET), so that the
// test's own pool (d.DB) keeps the defaults. It returns a DSN for that role.
func settingsRole(t *testing.T, d *pgtest.Database, name string, settings [][2]string) string {
	t.Helper()
	role := pgtest.Ident(t, name)
	execAll(t, d.DB, `CREATE ROLE `+pq.QuoteIdentifier(role)+` LOGIN SUPERUSER REPLICATION`)
	t.Cleanup(func() {
		d.DB.Exec(`DROP OWNED BY ` + pq.QuoteIdentifier(role) + ` CASCADE`)
		d.DB.Exec(`DROP ROLE ` + pq.QuoteIdentifier(role))
	})
	for _, set := range settings {
		value := pq.QuoteLiteral(set[1])
		if set[0] == "search_path" {
			value = set[1] // a list of names, as SQL
		}
		execAll(t, d.DB, `ALTER ROLE `+pq.QuoteIdentifier(role)+` IN DATABASE `+pq.QuoteIdentifier(d.Name)+` SET `+set[0]+` = `+value)
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

// runSettingsScenario runs a Syncer on db over items and checks that changes, a
// Refresh and a Snapshot (both while writes go on) leave a cache equal to the table.
func runSettingsScenario(t *testing.T, d *pgtest.Database, dsn string, db *sql.DB, opts ...SyncerOpt) {
	t.Helper()
	h := newCacheHandler()
	all := append([]SyncerOpt{ForTables("items"), WithDB(db), WithSnapshotChunkSize(3)}, opts...)
	s, stop := startSyncer(t, dsn, pgtest.Ident(t, "slot"), h, all...)
	execAll(t, d.DB, settingsInsert(1, 10))
	waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) >= 10 }, "10 inserts, have %d", len(h.eventList()))
	require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "public.items")), "changes")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		_, errs[0] = s.RefreshContext(ctx, `SELECT * FROM items WHERE id <= 5`)
	}()
	go func() { defer wg.Done(); errs[1] = s.Snapshot(ctx, "items") }()
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			if _, err := d.DB.Exec(`UPDATE items SET n = n + 1, ts = ts + interval '1 second' WHERE id = $1`, i%10+1); err != nil {
				errs[2] = err
				return
			}
		}
		_, errs[2] = d.DB.Exec(settingsInsert(11, 20))
	}()
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "%d", i)
	}
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, ctx.Err())
	require.NoError(t, stop())
	require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "public.items")), "after refresh and snapshot")
}

// TestSettingsOfRole: settings a role carries into every session of dbsync's
// (ALTER ROLE ... IN DATABASE ... SET) leave changes, a Refresh and a parallel
// Snapshot (run while updates and inserts go on) agreeing with the table, value for
// value and record ID for record ID, for timestamps, dates, intervals, floats,
// bytea, money, numeric, text, arrays and ranges: output settings are pinned by the
// peek and the selections; the others (timeouts, isolation) do not reach them.
// lib/pq asks for client_encoding UTF8 itself (pgx: TestClientEncodingOfRoleRefused).
func TestSettingsOfRole(t *testing.T) {
	for _, tc := range []struct {
		name    string
		set     [][2]string
		drivers []string
	}{
		{"none", nil, nil},
		{"DateStyleSQLDMY", [][2]string{{"DateStyle", "SQL, DMY"}}, nil},
		{"DateStyleGerman", [][2]string{{"DateStyle", "German, DMY"}}, nil},
		{"IntervalSQLStd", [][2]string{{"IntervalStyle", "sql_standard"}}, nil},
		{"IntervalISO", [][2]string{{"IntervalStyle", "iso_8601"}}, nil},
		{"TZKathmandu", [][2]string{{"TimeZone", "Asia/Kathmandu"}}, nil},
		{"efd0", [][2]string{{"extra_float_digits", "0"}}, nil},
		{"efdm3", [][2]string{{"extra_float_digits", "-3"}}, nil},
		{"byteaEscape", [][2]string{{"bytea_output", "escape"}}, nil},
		{"idleInTx", [][2]string{{"idle_in_transaction_session_timeout", "50ms"}}, nil},
		{"lockTimeout", [][2]string{{"lock_timeout", "10ms"}}, nil},
		{"serializable", [][2]string{{"default_transaction_isolation", "serializable"}}, nil},
		{"latin1", [][2]string{{"client_encoding", "LATIN1"}}, []string{"postgres"}},
		{"lcmonetary", [][2]string{{"lc_monetary", "C.utf8"}, {"lc_numeric", "C.utf8"}}, nil},
		{"all", [][2]string{{"DateStyle", "German, DMY"}, {"IntervalStyle", "iso_8601"}, {"TimeZone", "Asia/Kathmandu"}, {"extra_float_digits", "-3"}, {"bytea_output", "escape"}}, nil},
	} {
		drivers := tc.drivers
		if drivers == nil {
			drivers = []string{"postgres", "pgx"}
		}
		for _, driver := range drivers {
			t.Run(tc.name+"/"+driver, func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, settingsTable)
				dsn := settingsRole(t, d, "role", tc.set)
				db, err := sql.Open(driver, dsn)
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				for _, set := range tc.set {
					var got string
					require.NoError(t, db.QueryRow(`SELECT current_setting($1)`, set[0]).Scan(&got))
					switch {
					case driver == "postgres" && set[0] == "DateStyle":
						require.Equal(t, "ISO, MDY", got, "lib/pq sets DateStyle itself")
					case driver == "postgres" && set[0] == "client_encoding":
						require.Equal(t, "UTF8", got, "lib/pq sets client_encoding itself")
					default:
						require.Equal(t, set[1], got, "the role's setting reaches the pool's sessions")
					}
				}
				runSettingsScenario(t, d, dsn, db)
			})
		}
	}
}

// TestWithDBPoolLimits: a WithDB pool of two or three connections (what the README
// says Run needs), or none kept idle, or connections closed after a few
// milliseconds, runs Run with a concurrent Refresh and Snapshot (up to four chunks
// read at once) to the end, with the cache equal to the table.
func TestWithDBPoolLimits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		open     int
		idle     int
		lifetime time.Duration
		opts     []SyncerOpt
	}{
		{"open2", 2, 2, 0, nil},
		{"open2par4", 2, 2, 0, []SyncerOpt{WithSnapshotParallel(4)}},
		{"open3par4", 3, 3, 0, []SyncerOpt{WithSnapshotParallel(4)}},
		{"idle0", 0, -1, 0, []SyncerOpt{WithSnapshotParallel(2)}},
		{"open2idle0life", 2, -1, 20 * time.Millisecond, []SyncerOpt{WithSnapshotParallel(3)}},
		{"life", 0, 2, 5 * time.Millisecond, []SyncerOpt{WithSnapshotParallel(3)}},
	} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(tc.name+"/"+driver, func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, settingsTable)
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				db.SetMaxOpenConns(tc.open)
				db.SetMaxIdleConns(tc.idle)
				db.SetConnMaxLifetime(tc.lifetime)
				runSettingsScenario(t, d, d.DSN(), db, tc.opts...)
			})
		}
	}
}

var _ = strings.Contains

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
	dsn := settingsRole(t, d, "role", [][2]string{{"client_encoding", "LATIN1"}})
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

// TestSearchPathOfRole: a role's search_path (empty, or a schema before public holding
// a table named like the published one) reaches dbsync's sessions. dbsync's own
// statements do not depend on it; a bare table name in Snapshot or a Refresh query
// is resolved on it, as documented, and fails with ErrConfig when it names no table
// or a table the publication does not carry.
func TestSearchPathOfRole(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, s text)`, `CREATE SCHEMA shadow`, `CREATE TABLE shadow.items (id int PRIMARY KEY, s text)`,
				`INSERT INTO shadow.items VALUES (99, 'shadow')`)
			for i, tc := range []struct{ path, bareErr, snapErr string }{
				{`''`, `relation "items" does not exist`, `table "items" does not exist`},
				{"shadow, public", `table shadow.items is not in publication`, `table shadow.items is not in publication`},
			} {
				dsn := settingsRole(t, d, fmt.Sprint("role", i), [][2]string{{"search_path", tc.path}})
				db, err := sql.Open(driver, dsn)
				require.NoError(t, err)
				h := newCacheHandler()
				s, stop := startSyncer(t, dsn, pgtest.Ident(t, fmt.Sprint("slot", i)), h, WithDB(db), ForTables("public.items"))
				execAll(t, d.DB, fmt.Sprintf(`INSERT INTO public.items VALUES (%d, 'a')`, i+1))
				waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 1 }, "the insert")
				stats, err := s.RefreshContext(context.Background(), `SELECT * FROM public.items`)
				require.NoError(t, err)
				require.Equal(t, RefreshStats{Selected: i + 1, Emitted: i + 1}, stats)
				_, err = s.RefreshContext(context.Background(), `SELECT * FROM items`)
				require.ErrorIs(t, err, ErrConfig)
				require.Contains(t, err.Error(), tc.bareErr)
				require.NoError(t, s.Snapshot(context.Background(), "public.items"))
				err = s.Snapshot(context.Background(), "items")
				require.ErrorIs(t, err, ErrConfig)
				require.Contains(t, err.Error(), tc.snapErr)
				want := []string{fmt.Sprintf(`insert public.items ["%d"]`, i+1)}
				for round := 0; round < 2; round++ {
					for k := 1; k <= i+1; k++ {
						want = append(want, fmt.Sprintf(`refresh public.items ["%d"]`, k))
					}
				}
				require.Equal(t, want, h.eventList())
				require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "public.items")))
				require.NoError(t, stop())
				require.NoError(t, db.Close())
			}
		})
	}
}

// TestSplitPeekShortConnLifetime: a WithDB pool of four connections (the least a split
// poll takes: canSplit), none kept idle,
// each closed 1 ms after it was opened, while a poll is split (the slot and a
// temporary copy read on two connections) and a Refresh and a parallel Snapshot run:
// every change comes once in order, the cache equals the table, and no slot copy
// is left behind.
func TestSplitPeekShortConnLifetime(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			db.SetMaxOpenConns(4)
			db.SetMaxIdleConns(0)
			db.SetConnMaxLifetime(time.Millisecond)
			h := newCacheHandler()
			s, err := NewSyncer(WithDB(db), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
				ForTables("items"), WithMessageHandler(h), WithSnapshotChunkSize(500), WithSnapshotParallel(2))
			require.NoError(t, err)
			t.Cleanup(func() { s.Close() })
			s.splitMinWAL = 1 << 20
			const n = 4000
			for tx := 0; tx < 20; tx++ {
				_, err := d.DB.Exec(`INSERT INTO items SELECT g, repeat('x', 2000) FROM generate_series($1::int, $1::int + 199) g`, tx*200+1)
				require.NoError(t, err)
			}
			r := runInBackground(s)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var rerr, serr error
			done := make(chan struct{})
			go func() { defer close(done); _, rerr = s.RefreshContext(ctx, `SELECT * FROM items WHERE id % 7 = 0`) }()
			serr = s.Snapshot(ctx, "items")
			<-done
			require.NoError(t, rerr)
			require.NoError(t, serr)
			waitCaughtUp(t, d.DB, s.ReplicationSlot())
			require.NoError(t, r.stop(t))
			var ins []string
			for _, e := range h.eventList() {
				if strings.HasPrefix(e, "insert ") {
					ins = append(ins, e)
				}
			}
			require.Len(t, ins, n)
			for i, e := range ins {
				require.Equal(t, fmt.Sprintf(`insert public.items ["%d"]`, i+1), e)
			}
			require.Positive(t, db.Stats().MaxLifetimeClosed)
			require.Positive(t, s.splitPeeks.Load())
			require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "public.items")))
			require.Equal(t, []string{s.ReplicationSlot()}, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE database = current_database()`))
		})
	}
}

// TestReadOnlyRoleNamed: dbsync writes its control tables and watermarks, which a role
// or database with default_transaction_read_only on refuses (25006). The error was the
// server's alone ("write low watermark of selection ...: pq: cannot execute INSERT in
// a read-only transaction"), and through lib/pq, whose BeginTx says READ WRITE, setup
// and Run worked and only Refresh and Snapshot failed so: it is now ErrConfig naming
// the setting and how to turn it off for dbsync's role.
func TestReadOnlyRoleNamed(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
			dsn := settingsRole(t, d, "role", [][2]string{{"default_transaction_read_only", "on"}})
			db, err := sql.Open(driver, dsn)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			opts := []SyncerOpt{WithDB(db), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
				ForTables("items"), WithPollBackoff(5*time.Millisecond, 2, 50*time.Millisecond)}
			requireNamed := func(err error) {
				t.Helper()
				require.ErrorIs(t, err, ErrConfig)
				require.Contains(t, err.Error(), "default_transaction_read_only")
				require.Contains(t, err.Error(), "cannot execute")
			}
			if driver == "pgx" {
				// pgx begins setup's transaction with the session's default: read only.
				_, err := NewSyncer(opts...)
				requireNamed(err)
				execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
			} else {
				rec := &changeRecorder{}
				s, err := NewSyncer(append(opts, WithMessageHandler(rec))...)
				require.NoError(t, err, "lib/pq begins setup's transaction READ WRITE")
				r := runInBackground(s)
				execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
				require.Equal(t, `["1"]`, rec.waitChanges(t, 1)[0].Key)
				_, err = s.RefreshContext(context.Background(), `SELECT * FROM items`)
				requireNamed(err)
				requireNamed(s.Snapshot(context.Background(), "items"))
				require.NoError(t, r.stop(t))
				require.NoError(t, s.Close())
			}

			// The remedy the error names works.
			dbw, err := sql.Open(driver, dsn+" options='-c default_transaction_read_only=off'")
			require.NoError(t, err)
			t.Cleanup(func() { dbw.Close() })
			h := newCacheHandler()
			s, stop := startSyncer(t, dsn, pgtest.Ident(t, "slot"), h, WithDB(dbw), WithPublication(pgtest.Ident(t, "pub")), ForTables("items"))
			stats, err := s.RefreshContext(context.Background(), `SELECT * FROM items`)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
			require.NoError(t, stop())
		})
	}
}

// TestPgxOnNonUTF8Database: a pgx session's client_encoding is the database's
// encoding (pgx does not ask for one), so in a SQL_ASCII database pgoutput converted
// nothing and Run delivered bytes that are not UTF-8 ('é' stored in LATIN1:
// "\xe9t\xe9") where the README promises ErrEncoding, and in a LATIN1 database it
// delivered "été" as LATIN1 bytes too. Run now refuses such a session with ErrConfig;
// with client_encoding=UTF8 in the connection string the SQL_ASCII database stops
// Run with ErrEncoding and the LATIN1 one delivers "été", as through lib/pq.
func TestPgxOnNonUTF8Database(t *testing.T) {
	for _, enc := range []string{"SQL_ASCII", "LATIN1"} {
		t.Run(enc, func(t *testing.T) {
			d := pgtest.Shared(t).NewDatabaseWithEncoding(t, enc)
			execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
			db, err := sql.Open("pgx", d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			rec := &changeRecorder{}
			s := newTestSyncer(t, d, WithDB(db), ForTables("items"), WithMessageHandler(rec))
			execAll(t, d.DB, `INSERT INTO items VALUES (1, convert_from('\xe974e9'::bytea, 'LATIN1'))`)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = s.Run(ctx)
			require.ErrorIs(t, err, ErrConfig)
			require.Contains(t, err.Error(), "client_encoding is "+enc)
			chs, _ := rec.snapshot()
			require.Empty(t, chs)
			require.NoError(t, s.Close())

			db8, err := sql.Open("pgx", d.DSN()+" client_encoding=UTF8")
			require.NoError(t, err)
			t.Cleanup(func() { db8.Close() })
			s8 := newTestSyncer(t, d, WithDB(db8), WithMessageHandler(rec))
			if enc == "SQL_ASCII" {
				require.ErrorIs(t, s8.Run(ctx), ErrEncoding)
				chs, _ = rec.snapshot()
				require.Empty(t, chs)
				return
			}
			r := runInBackground(s8)
			require.Equal(t, "été", rec.waitChanges(t, 1)[0].New["v"])
			require.NoError(t, r.stop(t))
		})
	}
}
