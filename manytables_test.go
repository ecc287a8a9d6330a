package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// queryCounter counts the statements a *sql.DB (pgx's stdlib driver) sends.
type queryCounter struct {
	n  atomic.Int64
	mu sync.Mutex
	by map[string]int
}

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	c.mu.Lock()
	q := d.SQL
	if len(q) > 60 {
		q = q[:60]
	}
	c.by[q]++
	c.mu.Unlock()
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// countingDB opens d through pgx with a tracer counting its statements.
func countingDB(t *testing.T, d *pgtest.Database) (*sql.DB, *queryCounter) {
	t.Helper()
	cfg, err := pgx.ParseConfig(d.DSN())
	require.NoError(t, err)
	c := &queryCounter{by: map[string]int{}}
	cfg.Tracer = c
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { db.Close() })
	return db, c
}

// oddName is the i-th of many odd table names: mixed case, spaces, quotes, non-ASCII,
// some of 63 bytes.
func oddName(i int) string {
	switch i % 4 {
	case 0:
		return fmt.Sprintf("T%d", i)
	case 1:
		return fmt.Sprintf(`a "q" b %d`, i)
	case 2:
		return fmt.Sprintf("tä.ble %d", i)
	default:
		n := fmt.Sprintf("Long%d_", i)
		return n + strings.Repeat("x", 63-len(n))
	}
}

func createOddTables(t *testing.T, db *sql.DB, schema string, n int) []string {
	t.Helper()
	execAll(t, db, "CREATE SCHEMA IF NOT EXISTS "+pq.QuoteIdentifier(schema))
	var names []string
	var b strings.Builder
	for i := 0; i < n; i++ {
		name := oddName(i)
		q := pq.QuoteIdentifier(schema) + "." + pq.QuoteIdentifier(name)
		fmt.Fprintf(&b, "CREATE TABLE %s (id int PRIMARY KEY, %s text);\n", q, pq.QuoteIdentifier("Cöl \"x\""))
		names = append(names, q)
		if i%200 == 199 || i == n-1 {
			execAll(t, db, b.String())
			b.Reset()
		}
	}
	return names
}

// TestSetupManyTablesQueries sets up a Syncer for 400 tables of odd names (mixed
// case, spaces, quotes, non-ASCII, 63 bytes) given quoted, bare-with-dot and as
// search_path names, creating the publication and then finding it complete: the
// publication must list exactly those tables and the watermark table, and setup must
// not run statements per table (it resolved every name, and read the whole
// publication for every table, one query each: 1,200 statements here, seconds for
// 2,000 tables).
func TestSetupManyTablesQueries(t *testing.T) {
	d := pgtest.NewDatabase(t)
	const n = 400
	schema := `Sch ä"`
	quoted := createOddTables(t, d.DB, schema, n)
	execAll(t, d.DB, `CREATE TABLE "Plain Ö" (id int PRIMARY KEY)`, `CREATE TABLE "dotted.name" (id int PRIMARY KEY)`)
	names := append(append([]string(nil), quoted...), "Plain Ö", `"dotted.name"`, "public.Plain Ö")
	db, c := countingDB(t, d)
	newTestSyncer(t, d, WithDB(db), ForTables(names...))
	first := c.n.Load()
	want := []string{}
	for i := 0; i < n; i++ {
		want = append(want, schema+"."+oddName(i))
	}
	want = append(want, "public.Plain Ö", "public.dotted.name", DefaultCtrlNamespace+"."+DefaultWMTable)
	slices.Sort(want)
	got := queryStrings(t, d.DB, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY (schemaname || '.' || tablename) COLLATE "C"`,
		pgtest.Ident(t, "pub"))
	require.Equal(t, want, got)
	c.n.Store(0)
	newTestSyncer(t, d, WithDB(db), ForTables(names...), WithReplicationSlot(pgtest.Ident(t, "slot2")))
	again := c.n.Load()
	require.Equal(t, want, queryStrings(t, d.DB, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY (schemaname || '.' || tablename) COLLATE "C"`,
		pgtest.Ident(t, "pub")))
	require.LessOrEqual(t, first, int64(40), "statements of the first setup of %d tables", n)
	require.LessOrEqual(t, again, int64(40), "statements of a setup of %d tables already published", n)
}

// TestSetupManyTablesNameErrors: among many names, the first bad one (in the order
// given) is named by ErrConfig, whether parse_ident rejects it, it does not exist or
// it is not a table, and nothing is created.
func TestSetupManyTablesNameErrors(t *testing.T) {
	d := pgtest.NewDatabase(t)
	names := createOddTables(t, d.DB, "s", 50)
	execAll(t, d.DB, `CREATE VIEW "V w" AS SELECT 1 AS x`)
	for _, c := range []struct {
		bad  []string
		want string
	}{
		{[]string{`"unclosed`, "missing"}, `table name "\"unclosed"`},
		{[]string{"s.missing", `"unclosed`}, `table "s.missing" does not exist`},
		{[]string{`"V w"`, "missing"}, `"\"V w\"" is a view, not a table`},
		{[]string{"s." + strings.Repeat("y", 64)}, "is 64 bytes"},
	} {
		all := append(append(append([]string(nil), names[:25]...), c.bad...), names[25:]...)
		_, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")),
			WithPublication(pgtest.Ident(t, "pub")), ForTables(all...))
		require.ErrorIs(t, err, ErrConfig)
		require.ErrorContains(t, err, c.want)
		require.Empty(t, queryStrings(t, d.DB, `SELECT pubname FROM pg_publication`))
		// pg_replication_slots is the cluster's: other tests' slots are there too.
		require.Empty(t, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, pgtest.Ident(t, "slot")))
	}
}

// TestSetupManyReplicaIdentityFull: WithReplicaIdentityFull of 200 tables of odd names
// and of a partitioned table of 50 partitions sets REPLICA IDENTITY FULL on each of
// them with one ALTER TABLE each, and a setup finding them set runs no statement per
// table (it ran three a table: resolving the name twice over, reading its partitions).
// A name that does not resolve fails setup before any table is altered.
func TestSetupManyReplicaIdentityFull(t *testing.T) {
	d := pgtest.NewDatabase(t)
	const n = 200
	names := createOddTables(t, d.DB, "Sch ä\"", n)
	var b strings.Builder
	b.WriteString(`CREATE TABLE "Pärt ""r""" (id int PRIMARY KEY) PARTITION BY RANGE (id);`)
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, `CREATE TABLE "p ä %d" PARTITION OF "Pärt ""r""" FOR VALUES FROM (%d) TO (%d);`, i, i*10, i*10+10)
	}
	execAll(t, d.DB, b.String())
	full := append(append([]string(nil), names...), `"Pärt ""r"""`)
	identities := func() []string {
		return queryStrings(t, d.DB, `SELECT relreplident::text || ' ' || count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'Sch ä"') GROUP BY relreplident ORDER BY relreplident`)
	}

	_, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
		ForTables(names[0]), WithReplicaIdentityFull(append(full[:100:100], "public.missing")...))
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, `table "public.missing" does not exist`)
	require.Equal(t, []string{fmt.Sprintf("d %d", n+51)}, identities())

	db, c := countingDB(t, d)
	newTestSyncer(t, d, WithDB(db), ForTables(names[0]), WithReplicaIdentityFull(full...))
	first := c.n.Load()
	require.Equal(t, []string{fmt.Sprintf("f %d", n+51)}, identities())
	c.n.Store(0)
	newTestSyncer(t, d, WithDB(db), ForTables(names[0]), WithReplicaIdentityFull(full...), WithReplicationSlot(pgtest.Ident(t, "slot2")))
	again := c.n.Load()
	require.LessOrEqual(t, first, int64(n+51+40), "statements of the setup altering %d tables", n+51)
	require.LessOrEqual(t, again, int64(40), "statements of a setup of %d tables already FULL", n+51)
}

// count returns how many statements starting with prefix were sent.
func (c *queryCounter) count(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for q, k := range c.by {
		if strings.HasPrefix(q, prefix) {
			n += k
		}
	}
	return n
}

// reset forgets the statements counted so far.
func (c *queryCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n.Store(0)
	clear(c.by)
}

// TestFullTablesKeysReadOnce: RELATION messages of REPLICA IDENTITY FULL tables flag
// every column, so the catalog's key of each is read again at its first message
// once keyRecheckInterval has passed. A poll whose transaction touched 300 such
// tables read it with one query per table (1,000 tables: ~1,000 queries and 0.9 s a
// poll, every second); the keys due are now read in one query, and a key that moved
// under one of them meanwhile still keys its changes.
func TestFullTablesKeysReadOnce(t *testing.T) {
	d := pgtest.NewDatabase(t)
	const n = 300
	var b strings.Builder
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf(`"T ä %d"`, i)
		fmt.Fprintf(&b, `CREATE TABLE %s (id int CONSTRAINT "pk %d" PRIMARY KEY, code text NOT NULL) ;`, names[i], i)
	}
	execAll(t, d.DB, b.String())
	db, c := countingDB(t, d)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, WithDB(db), ForTables(names...), WithReplicaIdentityFull(names...), WithMessageHandler(rec))
	var clock atomic.Int64 // nanoseconds past a fixed time
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.tables.now = func() time.Time { return base.Add(time.Duration(clock.Load())) }
	r := runInBackground(s)
	defer r.stop(t)
	tx := func(round int) string {
		var b strings.Builder
		b.WriteString("BEGIN;")
		for i, name := range names {
			fmt.Fprintf(&b, "INSERT INTO %s VALUES (%d, 'c%d-%d');", name, round, i, round)
		}
		return b.String() + "COMMIT;"
	}
	execAll(t, d.DB, tx(1))
	waitForChanges(t, rec, r, n)
	execAll(t, d.DB, `ALTER TABLE "T ä 150" DROP CONSTRAINT "pk 150", ADD PRIMARY KEY (code)`)
	clock.Add(int64(keyRecheckInterval))
	c.reset()
	execAll(t, d.DB, tx(2))
	waitForChanges(t, rec, r, 2*n)
	require.Equal(t, 1, c.count("-- Columns, key and replica identity"), "catalog reads of the keys of %d tables", n)
	got, _ := rec.snapshot()
	keys := keyedChanges(got)
	require.Equal(t, `insert T ä 149 ["2"] `, keys[n+149])
	require.Equal(t, `insert T ä 150 ["c150-2"] `, keys[n+150])
	require.Equal(t, `insert T ä 151 ["2"] `, keys[n+151])
}

// TestSetupAddsTableNamedTwiceOnce: a table given to ForTables under several names,
// missing from an existing publication, is added to it once (membership is read for
// all tables at once, before any is added).
func TestSetupAddsTableNamedTwiceOnce(t *testing.T) {
	d := pgtest.NewDatabase(t)
	pub := pgtest.Ident(t, "pub")
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE "B b" (id int PRIMARY KEY)`, "CREATE PUBLICATION "+pub+" FOR TABLE a")
	newTestSyncer(t, d, ForTables("a", "B b", "public.B b", `"B b"`))
	require.Equal(t, []string{"dbsync_ctrl.dbsync_wmtable", "public.B b", "public.a"}, queryStrings(t, d.DB,
		`SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY (schemaname || '.' || tablename) COLLATE "C"`, pub))
}
