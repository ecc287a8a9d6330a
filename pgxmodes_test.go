package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// modeRecorder records changes and refresh rows with their typed values and record IDs.
type modeRecorder struct {
	DefaultMessageHandler
	mu    sync.Mutex
	lines []string
}

func valuesText(m StringMap) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		v := m[k]
		if tm, ok := v.(time.Time); ok {
			v = tm.UTC().Format(time.RFC3339Nano) + "@" + tm.Location().String()
		}
		parts[i] = fmt.Sprintf("%s=%T:%v", k, v, v)
	}
	return strings.Join(parts, " ")
}

func (r *modeRecorder) add(s string) {
	r.mu.Lock()
	r.lines = append(r.lines, s)
	r.mu.Unlock()
}

func (r *modeRecorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

func (r *modeRecorder) change(m pglogrepl.Message, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	c, err := DecodeChange(m, reln, info)
	if err != nil {
		return err
	}
	r.add(fmt.Sprintf("%v %s new:%s old:%s", c.Op, c.Key, valuesText(c.New), valuesText(c.Old)))
	return nil
}

func (r *modeRecorder) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	return r.change(m, reln, info)
}
func (r *modeRecorder) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	return r.change(m, reln, info)
}
func (r *modeRecorder) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	return r.change(m, reln, info)
}
func (r *modeRecorder) HandleLogicalMessage(_ int, m *pglogrepl.LogicalDecodingMessage) error {
	if strings.HasPrefix(m.Prefix, "dbsync") {
		return nil
	}
	r.add("MESSAGE " + m.Prefix)
	return nil
}
func (r *modeRecorder) HandleRefresh(key string, item DBItem) error {
	r.add(fmt.Sprintf("REFRESH %s %s", key, valuesText(item.Values)))
	return nil
}

type modeRowRecorder struct{ *modeRecorder }

func (r modeRowRecorder) HandleRefreshRow(row *RefreshRow) error {
	v, err := row.Values()
	if err != nil {
		return err
	}
	r.add(fmt.Sprintf("REFRESH %s %s", row.Key, valuesText(v)))
	return nil
}

const modesTable = `CREATE TABLE items (id bigint PRIMARY KEY, t text, n numeric, ts timestamptz, j jsonb, b bytea, arr int[], z text)`

func modesInsert(lo, hi int) string {
	return fmt.Sprintf(`INSERT INTO items SELECT g, 'text '' ' || g, g / 7.0, '2024-03-10 01:30:00.123456+00'::timestamptz + g * interval '1 hour', jsonb_build_object('g', g, 's', 'x"y'), decode(lpad(to_hex(g), 4, '0'), 'hex'), ARRAY[g, NULL, -g], NULL FROM generate_series(%d, %d) g`, lo, hi)
}

// modesScenario runs Run (with a forced split), Refresh, Snapshot, GetMessages and
// Forward on db and returns what the handler saw, without LSNs.
func modesScenario(t *testing.T, d *pgtest.Database, db *sql.DB, rowHandler bool) []string {
	t.Helper()
	execAll(t, d.DB, modesTable, modesInsert(1, 5))
	rec := &modeRecorder{}
	var h MessageHandler = rec
	if rowHandler {
		h = modeRowRecorder{rec}
	}
	s := newTestSyncer(t, d, WithDB(db), ForTables("public.items"), WithMessageHandler(h), WithSnapshotChunkSize(2))
	execAll(t, d.DB, modesInsert(6, 8), `UPDATE items SET t = 'upd', z = 'zz' WHERE id = 6`, `DELETE FROM items WHERE id = 7`,
		`SELECT pg_logical_emit_message(false, 'user', 'm')`)
	s.splitMinWAL = 1
	r := runInBackground(s)
	waitFor(t, 30*time.Second, func() bool { return len(rec.snapshot()) >= 6 }, "changes, have %v", rec.snapshot())
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	_, err := s.RefreshContext(context.Background(), `SELECT * FROM public.items WHERE id IN (2, 6)`)
	require.NoError(t, err)
	require.NoError(t, s.Snapshot(context.Background(), "public.items"))
	require.NoError(t, r.stop(t))
	lines := rec.snapshot()
	require.NotZero(t, s.splitPeeks.Load(), "split polls")

	execAll(t, d.DB, modesInsert(9, 9))
	msgs, err := s.GetMessages(100, false, nil)
	require.NoError(t, err)
	inserts := 0
	for _, m := range msgs {
		if m.Data[0] == 'I' {
			inserts++
		}
	}
	lines = append(lines, fmt.Sprintf("PEEK %d inserts", inserts))
	require.NoError(t, s.Forward(len(msgs)))
	msgs, err = s.GetMessages(100, false, nil)
	require.NoError(t, err)
	lines = append(lines, fmt.Sprintf("AFTER FORWARD %d", len(msgs)))
	return lines
}

// TestDriverConfigurationsAgree runs the same changes, a Refresh and a Snapshot (chunks
// of 2) through HandleRefresh and a RefreshRowHandler, split polls, GetMessages and
// Forward on pools of the driver configurations users pass with WithDB: pgx in each
// default_query_exec_mode, without statement or description cache, over
// stdlib.OpenDB with session settings (DateStyle, IntervalStyle, TimeZone, search_path,
// extra_float_digits, bytea_output, standard_conforming_strings) that change values'
// text (also as connection string parameters, for pgx and lib/pq), over a pgxpool,
// through RegisterConnConfig, and lib/pq with binary_parameters,
// disable_prepared_binary_result and pq.NewConnector. Every one
// gives the values (Go types included) and record IDs of lib/pq's default
// configuration. pgx refuses statement_cache_capacity=0 under its default mode and
// simple_protocol with standard_conforming_strings=off by itself.
func TestDriverConfigurationsAgree(t *testing.T) {
	base := pgtest.NewDatabase(t)
	want := modesScenario(t, base, base.DB, false)
	require.Len(t, want, 17)
	open := map[string]func(t *testing.T, dsn string) *sql.DB{
		"runtime": func(t *testing.T, dsn string) *sql.DB {
			cfg, err := pgx.ParseConfig(dsn)
			require.NoError(t, err)
			cfg.RuntimeParams["DateStyle"] = "SQL, DMY"
			cfg.RuntimeParams["IntervalStyle"] = "sql_standard"
			cfg.RuntimeParams["TimeZone"] = "Asia/Kolkata"
			cfg.RuntimeParams["search_path"] = "pg_catalog"
			cfg.RuntimeParams["application_name"] = "mine"
			cfg.RuntimeParams["standard_conforming_strings"] = "off"
			cfg.RuntimeParams["extra_float_digits"] = "-3"
			cfg.RuntimeParams["bytea_output"] = "escape"
			return stdlib.OpenDB(*cfg)
		},
		"runtime_simple": func(t *testing.T, dsn string) *sql.DB {
			cfg, err := pgx.ParseConfig(dsn + " default_query_exec_mode=simple_protocol")
			require.NoError(t, err)
			cfg.RuntimeParams["DateStyle"] = "SQL, DMY"
			cfg.RuntimeParams["IntervalStyle"] = "sql_standard"
			cfg.RuntimeParams["TimeZone"] = "Asia/Kolkata"
			cfg.RuntimeParams["search_path"] = "pg_catalog"
			cfg.RuntimeParams["extra_float_digits"] = "-3"
			cfg.RuntimeParams["bytea_output"] = "escape"
			return stdlib.OpenDB(*cfg)
		},
		"pool": func(t *testing.T, dsn string) *sql.DB {
			cfg, err := pgxpool.ParseConfig(dsn)
			require.NoError(t, err)
			pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			return stdlib.OpenDBFromPool(pool)
		},
		"pool_simple": func(t *testing.T, dsn string) *sql.DB {
			cfg, err := pgxpool.ParseConfig(dsn + " default_query_exec_mode=simple_protocol")
			require.NoError(t, err)
			pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			return stdlib.OpenDBFromPool(pool)
		},
		"registered": func(t *testing.T, dsn string) *sql.DB {
			cfg, err := pgx.ParseConfig(dsn + " default_query_exec_mode=exec")
			require.NoError(t, err)
			name := stdlib.RegisterConnConfig(cfg)
			t.Cleanup(func() { stdlib.UnregisterConnConfig(name) })
			db, err := sql.Open("pgx", name)
			require.NoError(t, err)
			return db
		},
		"pqconnector": func(t *testing.T, dsn string) *sql.DB {
			c, err := pq.NewConnector(dsn + " binary_parameters=yes")
			require.NoError(t, err)
			return sql.OpenDB(c)
		},
	}
	for _, name := range []string{"runtime", "runtime_simple", "pool", "pool_simple", "registered", "pqconnector"} {
		for _, rows := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/rows=%v", name, rows), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				db := open[name](t, d.DSN())
				t.Cleanup(func() { db.Close() })
				got := modesScenario(t, d, db, rows)
				require.Equal(t, want, got)
			})
		}
	}
	for _, c := range []struct{ name, driver, params string }{
		{"pgx", "pgx", ""},
		{"simple", "pgx", "default_query_exec_mode=simple_protocol"},
		{"exec", "pgx", "default_query_exec_mode=exec"},
		{"cache_describe", "pgx", "default_query_exec_mode=cache_describe"},
		{"describe_exec", "pgx", "default_query_exec_mode=describe_exec"},
		{"nocache_describe", "pgx", "statement_cache_capacity=0 default_query_exec_mode=cache_describe"},
		{"nocache_exec", "pgx", "statement_cache_capacity=0 description_cache_capacity=0 default_query_exec_mode=describe_exec"},
		{"nocache_simple", "pgx", "statement_cache_capacity=0 description_cache_capacity=0 default_query_exec_mode=simple_protocol"},
		{"pq_binary", "postgres", "binary_parameters=yes"},
		{"pq_noprepbin", "postgres", "disable_prepared_binary_result=yes"},
		{"pq_session", "postgres", "timezone=Asia/Kolkata extra_float_digits=-3 IntervalStyle=sql_standard bytea_output=escape search_path=pg_catalog"},
		{"pgx_session", "pgx", "timezone=Asia/Kolkata extra_float_digits=-3 IntervalStyle=sql_standard bytea_output=escape search_path=pg_catalog DateStyle=German"},
	} {
		for _, rows := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/rows=%v", c.name, rows), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				db, err := sql.Open(c.driver, d.DSN()+" "+c.params)
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				got := modesScenario(t, d, db, rows)
				require.Equal(t, want, got)
			})
		}
	}
}

// TestSnapshotWaitsForWritersPgxModes: the wait for a table's writers before a
// Snapshot (its vxid list is a parameter compared with = ANY) works in pgx's query
// exec modes, where the parameter's type comes from the Go value (exec) or is inlined
// as a literal (simple_protocol).
func TestSnapshotWaitsForWritersPgxModes(t *testing.T) {
	for _, params := range []string{"", "default_query_exec_mode=exec", "default_query_exec_mode=simple_protocol", "default_query_exec_mode=describe_exec"} {
		t.Run(params, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, modesTable)
			db, err := sql.Open("pgx", d.DSN()+" "+params)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			s := newTestSyncer(t, d, WithDB(db), ForTables("public.items"))
			info, err := s.tableInfoByName(context.Background(), qualifiedTable{"public", "items"})
			require.NoError(t, err)
			x, err := d.DB.Begin()
			require.NoError(t, err)
			defer x.Rollback()
			_, err = x.Exec(modesInsert(1, 1))
			require.NoError(t, err)
			waiting := make(chan int, 1)
			s.writersWaiting = func(table string, n int) { waiting <- n }
			done := make(chan error, 1)
			go func() { done <- s.waitForTableWriters(context.Background(), info) }()
			select {
			case n := <-waiting:
				require.Equal(t, 1, n)
			case err := <-done:
				t.Fatalf("returned before waiting: %v", err)
			}
			require.NoError(t, x.Commit())
			require.NoError(t, <-done)
		})
	}
}

// TestOpenDBFromPoolSplitPoll: database/sql does not see the limit of a pgxpool under
// stdlib.OpenDBFromPool (MaxOpenConnections 0), so dbsync takes such a pool for an
// unlimited one: Run holds a connection for its slot lock and splits a large backlog's
// poll over two more. On pool_max_conns=2 the split waited for good for its second
// connection (nothing delivered, Run never returned an error). A split now takes its
// second connection only if the pool gives it within splitConnWait, and otherwise
// peeks once on the first: every change is delivered. With SetMaxOpenConns set to the
// pgxpool's limit (README) no poll is split.
func TestOpenDBFromPoolSplitPoll(t *testing.T) {
	for _, limited := range []bool{false, true} {
		t.Run(fmt.Sprintf("SetMaxOpenConns=%v", limited), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, modesTable, `CREATE TABLE other (id int PRIMARY KEY)`)
			cfg, err := pgxpool.ParseConfig(d.DSN() + " pool_max_conns=2")
			require.NoError(t, err)
			pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			db := stdlib.OpenDBFromPool(pool)
			if limited {
				db.SetMaxOpenConns(int(pool.Config().MaxConns))
			}
			t.Cleanup(func() { db.Close() })
			rec := &modeRecorder{}
			s := newTestSyncer(t, d, WithDB(db), ForTables("public.items", "public.other"), WithMessageHandler(rec))
			s.splitMinWAL = 1 // every poll with a backlog is split where the pool allows it
			execAll(t, d.DB, modesInsert(1, 1))
			r := runInBackground(s)
			r.waitFor(t, 20*time.Second, func() bool { return len(rec.snapshot()) == 1 }, "1 insert, have %v", rec.snapshot())
			execAll(t, d.DB, `INSERT INTO other VALUES (1)`, modesInsert(2, 2))
			r.waitFor(t, 20*time.Second, func() bool { return len(rec.snapshot()) == 3 }, "3 inserts, have %v", rec.snapshot())
			require.NoError(t, r.stop(t))
			got := rec.snapshot()
			require.True(t, strings.HasPrefix(got[0], `insert ["1"] `), got[0])
			require.Equal(t, `insert ["1"] new:id=int32:1 old:`, got[1])
			require.True(t, strings.HasPrefix(got[2], `insert ["2"] `), got[2])
			require.Zero(t, s.splitPeeks.Load(), "no poll was split")
		})
	}
}

// TestSnapshotParallelKeysPgxModes: a parallel Snapshot's key range planning
// (chunkBound, through database/sql with key texts bound back under casts) and its
// chunks give lib/pq's rows in pgx's exec modes, with lib/pq's binary_parameters, and
// under a session TimeZone and DateStyle of the connection string, for a key of bytea,
// timestamptz, numeric and text with quotes.
func TestSnapshotParallelKeysPgxModes(t *testing.T) {
	run := func(t *testing.T, db *sql.DB, d *pgtest.Database) []string {
		execAll(t, d.DB, `CREATE TABLE k (b bytea, ts timestamptz, n numeric, tx text, v int, PRIMARY KEY (b, ts, n, tx))`,
			`INSERT INTO k SELECT decode(lpad(to_hex(g % 3), 2, '0'), 'hex'), '2024-01-01 00:00:00.5+00'::timestamptz + (g % 4) * interval '1 day', g / 3.0, 'a''\"'||g, g FROM generate_series(1, 40) g`)
		rec := &modeRecorder{}
		s := newTestSyncer(t, d, WithDB(db), ForTables("public.k"), WithMessageHandler(rec), WithSnapshotChunkSize(3), WithSnapshotParallel(3))
		r := runInBackground(s)
		require.NoError(t, s.Snapshot(context.Background(), "public.k"))
		require.NoError(t, r.stop(t))
		got := rec.snapshot()
		sort.Strings(got)
		require.Len(t, got, 40)
		require.NotZero(t, s.chunkBounds.Load())
		return got
	}
	base := pgtest.NewDatabase(t)
	want := run(t, base.DB, base)
	for _, c := range []struct{ driver, params string }{
		{"pgx", ""}, {"pgx", "default_query_exec_mode=exec"}, {"pgx", "default_query_exec_mode=simple_protocol"},
		{"pgx", "default_query_exec_mode=describe_exec"}, {"postgres", "binary_parameters=yes"},
		{"pgx", "default_query_exec_mode=exec timezone=Asia/Kolkata DateStyle=SQL,DMY"},
	} {
		t.Run(c.driver+" "+c.params, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			db, err := sql.Open(c.driver, d.DSN()+" "+c.params)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			require.Equal(t, want, run(t, db, d))
		})
	}
}

// TestRefreshAfterDDLPgxCaches: a Refresh query describes its columns through the pool.
// With pgx's default mode (statement cache) and cache_describe (description cache) that
// description was cached by the query's text, so after the table gained or lost a
// column the same Refresh failed: ErrConfig "cached plan must not change result type"
// (0A000), or "bind message has 2 result formats but query has 3 columns" (08P01). On
// a pool of one connection (the cache is per session), then through Refresh while Run
// runs, the columns follow the table in every mode.
func TestRefreshAfterDDLPgxCaches(t *testing.T) {
	for _, params := range []string{"", "default_query_exec_mode=cache_describe", "default_query_exec_mode=describe_exec", "default_query_exec_mode=exec", "default_query_exec_mode=simple_protocol"} {
		t.Run(params, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE r (id int PRIMARY KEY, v text)`, `INSERT INTO r VALUES (1, 'a')`)
			one, err := sql.Open("pgx", d.DSN()+" "+params)
			require.NoError(t, err)
			t.Cleanup(func() { one.Close() })
			one.SetMaxOpenConns(1)
			s1 := newTestSyncer(t, d, WithDB(one), ForTables("public.r"), WithReplicationSlot(pgtest.Ident(t, "one")))
			cols, err := s1.queryColumns(context.Background(), "SELECT * FROM r\n")
			require.NoError(t, err)
			require.Equal(t, []string{"id", "v"}, cols)
			execAll(t, d.DB, `ALTER TABLE r ADD COLUMN w int DEFAULT 7`)
			cols, err = s1.queryColumns(context.Background(), "SELECT * FROM r\n")
			require.NoError(t, err)
			require.Equal(t, []string{"id", "v", "w"}, cols)
			execAll(t, d.DB, `ALTER TABLE r DROP COLUMN w`)

			db, err := sql.Open("pgx", d.DSN()+" "+params)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			rec := &modeRecorder{}
			s := newTestSyncer(t, d, WithDB(db), ForTables("public.r"), WithMessageHandler(rec))
			r := runInBackground(s)
			_, err = s.RefreshContext(context.Background(), `SELECT * FROM r`)
			require.NoError(t, err)
			execAll(t, d.DB, `ALTER TABLE r ADD COLUMN w int DEFAULT 7`)
			_, err = s.RefreshContext(context.Background(), `SELECT * FROM r`)
			require.NoError(t, err)
			execAll(t, d.DB, `ALTER TABLE r DROP COLUMN v`)
			_, err = s.RefreshContext(context.Background(), `SELECT * FROM r`)
			require.NoError(t, err)
			require.NoError(t, r.stop(t))
			require.Equal(t, []string{
				`REFRESH ["1"] id=int32:1 v=string:a`,
				`REFRESH ["1"] id=int32:1 v=string:a w=int32:7`,
				`REFRESH ["1"] id=int32:1 w=int32:7`,
			}, rec.snapshot())
		})
	}
}

// TestEndSessionOverPgxpool: a connection dbsync reports bad so that its session ends
// (endSession: the slot lock whose release failed or whose taking is in doubt, a split
// peek's temporary slot copy it could not drop, a statement_timeout it could not set
// back) is closed by database/sql, but under stdlib.OpenDBFromPool closing it only
// released it to the pgxpool, session and all: the advisory lock and the temporary slot
// stayed held by an idle pooled session (a later Run of the slot got ErrSlotInUse
// naming its own pool's backend). Through lib/pq, pgx's driver and a pgxpool, the
// session ends.
func TestEndSessionOverPgxpool(t *testing.T) {
	d := pgtest.NewDatabase(t)
	cfg, err := pgxpool.ParseConfig(d.DSN())
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	pgxDB, err := sql.Open("pgx", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { pgxDB.Close() })
	for name, db := range map[string]*sql.DB{"pq": d.DB, "pgx": pgxDB, "pgxpool": stdlib.OpenDBFromPool(pool)} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			conn, err := db.Conn(ctx)
			require.NoError(t, err)
			var pid int
			require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid() FROM pg_advisory_lock(4242), pg_create_logical_replication_slot($1, 'pgoutput', true)`,
				pgtest.Ident(t, "tmp")).Scan(&pid))
			endSession(conn)
			require.ErrorIs(t, conn.Close(), sql.ErrConnDone, "database/sql closed it when it was reported bad")
			waitFor(t, 10*time.Second, func() bool {
				return len(queryStrings(t, d.DB, `SELECT pid::text FROM pg_stat_activity WHERE pid = $1`, pid)) == 0
			}, "session %d to end", pid)
			require.Empty(t, queryStrings(t, d.DB, `SELECT objid::text FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242`))
			require.Empty(t, queryStrings(t, d.DB, `SELECT slot_name::text FROM pg_replication_slots WHERE temporary`))
		})
	}
}
