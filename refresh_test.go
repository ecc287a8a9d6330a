package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// cacheHandler is a consumer that keeps a copy of tables the way docs/SNAPSHOTS.md
// says a cache must: changes and refresh rows are both upserts by record ID, deletes
// remove, a key-changing update removes the old key.
type cacheHandler struct {
	DefaultMessageHandler
	mu     sync.Mutex
	rows   map[string]StringMap // "schema.table|recordID" -> values
	events []string
	// failRefreshAt makes the n-th HandleRefresh call (1-based) fail; 0: never.
	failRefreshAt int
	refreshCalls  int
	refreshKeys   []string // record IDs of delivered refresh rows, in order
}

func newCacheHandler() *cacheHandler { return &cacheHandler{rows: map[string]StringMap{}} }

var errInjected = errors.New("injected refresh failure")

func (c *cacheHandler) change(msg pglogrepl.Message, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	ch, err := DecodeChange(msg, reln, info)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	tbl := info.QualifiedName()
	k := tbl + "|" + ch.Key
	prev := c.rows[k]
	if ch.OldKey != "" {
		prev = c.rows[tbl+"|"+ch.OldKey] // a key change moves the row
		delete(c.rows, tbl+"|"+ch.OldKey)
	}
	if ch.Op == OpDelete {
		delete(c.rows, k)
	} else {
		row := StringMap{}
		for col, v := range ch.New {
			row[col] = v
		}
		for _, col := range ch.Unchanged { // unchanged TOAST: keep what we had
			if v, ok := prev[col]; ok {
				row[col] = v
			}
		}
		c.rows[k] = row
	}
	c.events = append(c.events, fmt.Sprintf("%s %s %s", ch.Op, tbl, ch.Key))
	return nil
}

func (c *cacheHandler) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	return c.change(m, r, i)
}
func (c *cacheHandler) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	return c.change(m, r, i)
}
func (c *cacheHandler) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	return c.change(m, r, i)
}
func (c *cacheHandler) HandleRefresh(key string, item DBItem) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshCalls++
	if c.failRefreshAt > 0 && c.refreshCalls == c.failRefreshAt {
		return errInjected
	}
	if key != item.Key {
		return fmt.Errorf("key %q != item.Key %q", key, item.Key)
	}
	c.rows[item.Table.QualifiedName()+"|"+key] = item.Values
	c.refreshKeys = append(c.refreshKeys, key)
	c.events = append(c.events, fmt.Sprintf("refresh %s %s", item.Table.QualifiedName(), key))
	return nil
}

func (c *cacheHandler) eventList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.events...)
}

// tableRows returns the cache's rows of one table.
func (c *cacheHandler) tableRows(table string) map[string]StringMap {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]StringMap{}
	for k, v := range c.rows {
		if t, key, _ := strings.Cut(k, "|"); t == table {
			out[key] = v
		}
	}
	return out
}

// dbRows reads a whole table as record ID -> values, in the text form changes use.
func dbRows(t *testing.T, db *sql.DB, table string) map[string]StringMap {
	t.Helper()
	ctx := context.Background()
	var oid uint32
	require.NoError(t, db.QueryRow(`SELECT $1::regclass::oid`, table).Scan(&oid))
	info, err := newTableCache(db).describeOID(ctx, oid)
	require.NoError(t, err)
	cols := make([]string, len(info.Columns))
	for i, c := range info.Columns {
		cols[i] = c.ColumnName
	}
	rows, err := db.Query("SELECT " + selectList("t", cols) + " FROM " + table + " AS t")
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]StringMap{}
	raw := make([]sql.NullString, len(cols))
	dest := make([]any, len(cols))
	for i := range raw {
		dest[i] = &raw[i]
	}
	for rows.Next() {
		require.NoError(t, rows.Scan(dest...))
		values, err := info.decodeTextRow(cols, raw, true)
		require.NoError(t, err)
		key, err := info.GetRecordID(values)
		require.NoError(t, err)
		out[key] = values
	}
	require.NoError(t, rows.Err())
	return out
}

// mismatches lists the keys where cache and table differ.
func mismatches(cache, table map[string]StringMap) []string {
	var out []string
	short := func(m StringMap) string {
		s := fmt.Sprint(m)
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		return s
	}
	for k, v := range table {
		if fmt.Sprint(cache[k]) != fmt.Sprint(v) {
			out = append(out, fmt.Sprintf("%s: cache %v, table %v", k, short(cache[k]), short(v)))
		}
	}
	for k, v := range cache {
		if _, ok := table[k]; !ok {
			out = append(out, fmt.Sprintf("%s: cache %v, not in table", k, v))
		}
	}
	sort.Strings(out)
	return out
}

// startSyncer creates a Syncer on dsn for tables and runs it in the background.
func startSyncer(t *testing.T, dsn, slot string, h MessageHandler, opts ...SyncerOpt) (*Syncer, func() error) {
	t.Helper()
	all := append([]SyncerOpt{WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(slot + "_pub"),
		WithMessageHandler(h), WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond)}, opts...)
	s, err := NewSyncer(all...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
			s.Close()
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	return s, stop
}

// TestRefreshTextMatchesChanges checks that a refresh row of a row has the same record
// ID and values as the change that wrote it, for the common column types: the SELECT
// side and pgoutput must format values identically or keys never match.
//
// It runs through lib/pq and through pgx's database/sql driver, which hand text
// columns to database/sql differently ([]byte vs string): an empty string must stay
// an empty string and NULL stay nil through both.
func TestRefreshTextMatchesChanges(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) { testRefreshTextMatchesChanges(t, driver) })
	}
}

// typedTableDDL creates a table with a column of each common type and a composite key.
const typedTableDDL = `CREATE TABLE typed (
		id int, ts timestamptz, b bool, u uuid, n numeric, t text, c char(4), ip inet, f float8,
		j jsonb, arr int[], by bytea, d date, iv interval, nul text,
		PRIMARY KEY (id, ts, b))`

func testRefreshTextMatchesChanges(t *testing.T, driver string) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(typedTableDDL)
	require.NoError(t, err)
	h := newCacheHandler()
	db, err := sql.Open(driver, d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("typed"), WithDB(db))
	_, err = d.DB.Exec(`INSERT INTO typed VALUES
		(1, '2024-03-01 12:34:56.789+02', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 12.500, 'x y', 'ab', '10.0.0.1', 0.1,
		 '{"b": 1, "a": [true, null]}', '{1,NULL,3}', '\x00ff', '2024-02-29', '1 day 02:03:04', NULL),
		(2, '1999-12-31 23:59:59+00', false, '00000000-0000-0000-0000-000000000000', -1e-7, '', 'abcd', '::1/128', 'NaN',
		 '[]', '{}', '', 'infinity', '-3 mons', NULL)`)
	require.NoError(t, err)
	waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 2 }, "inserts")
	fromChanges := h.tableRows("public.typed")
	h.mu.Lock()
	h.rows = map[string]StringMap{}
	h.mu.Unlock()

	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM typed`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
	fromRefresh := h.tableRows("public.typed")
	require.Len(t, fromChanges, 2)
	require.Len(t, fromRefresh, 2)
	for k, row := range fromChanges {
		require.Contains(t, fromRefresh, k)
		requireSameRow(t, row, fromRefresh[k], k) // typed values; NaN-safe
	}
	// The record IDs are the key columns' canonical texts (docs/VALUES.md).
	keys := make([]string, 0, 2)
	for k := range fromRefresh {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	require.Equal(t, []string{`["1","2024-03-01T10:34:56.789Z","t"]`, `["2","1999-12-31T23:59:59Z","f"]`}, keys)
	require.Equal(t, true, fromRefresh[keys[0]]["b"])
	require.Equal(t, "ab  ", fromRefresh[keys[0]]["c"])
	require.Equal(t, netip.MustParsePrefix("10.0.0.1/32"), fromRefresh[keys[0]]["ip"])
	require.Nil(t, fromRefresh[keys[0]]["nul"])
	require.Equal(t, []string{
		`insert public.typed ` + keys[0], `insert public.typed ` + keys[1],
		`refresh public.typed ` + keys[0], `refresh public.typed ` + keys[1],
	}, h.eventList())

	// A query the server rejects is ErrConfig, and leaves no connection in a failed
	// transaction: the next selection works.
	_, err = s.RefreshContext(context.Background(), `SELECT * FROM typed WHERE no_such_column = 1`)
	require.ErrorIs(t, err, ErrConfig)
	stats, err = s.RefreshContext(context.Background(), `SELECT * FROM typed WHERE id = 2`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
	// So is a query that fails while its rows are read (EXPLAIN accepts it).
	_, err = s.RefreshContext(context.Background(), `SELECT * FROM typed WHERE 1 / (id - 2) = 0`)
	require.ErrorIs(t, err, ErrConfig)
	code, _, ok := serverError(err)
	require.True(t, ok, "the server's error is kept: %v", err)
	require.Equal(t, "22012", code)
	stats, err = s.RefreshContext(context.Background(), `SELECT * FROM typed WHERE id = 2`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
	// pgx's connection runs selections itself (plain columns, text results); lib/pq's
	// go through database/sql (columns cast to text).
	if driver == "pgx" {
		require.Equal(t, uint64(4), s.pgconnSelects.Load(), "every selection on pgx's own connection")
	} else {
		require.Zero(t, s.pgconnSelects.Load())
	}
}

// TestRefreshWindowDropsKeyChangedInside makes a change land between the SELECT and
// the high watermark: that key gets no refresh row, the others come at the high
// watermark, after the change.
func TestRefreshWindowDropsKeyChangedInside(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, v text);
		INSERT INTO items SELECT g, 'old' || g FROM generate_series(1, 3) g`)
	require.NoError(t, err)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"))
	s.win.afterSelect = func() {
		_, err := d.DB.Exec(`UPDATE items SET v = 'new2' WHERE id = 2`)
		require.NoError(t, err)
	}
	stats, err := s.RefreshContext(context.Background(), `SELECT id, v FROM items WHERE id <= 3`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 2}, stats)
	require.Equal(t, []string{
		`update public.items ["2"]`,
		`refresh public.items ["1"]`,
		`refresh public.items ["3"]`,
	}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))

	// A second refresh with nothing changing: every row comes again.
	s.win.afterSelect = nil
	stats, err = s.RefreshContext(context.Background(), `SELECT * FROM items ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 3}, stats)
	require.Equal(t, `refresh public.items ["2"]`, h.eventList()[4], "%q", h.eventList())
}

func TestRefreshErrors(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); CREATE TABLE nokey (x int); CREATE TABLE unpublished (id int PRIMARY KEY)`)
	require.NoError(t, err)
	h := newCacheHandler()
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("a", "b", "nokey"))
	ctx := context.Background()
	_, err = s.RefreshContext(ctx, `SELECT * FROM a JOIN b USING (id)`)
	require.ErrorIs(t, err, ErrConfig)
	_, err = s.RefreshContext(ctx, `SELECT * FROM nokey`)
	require.ErrorIs(t, err, ErrNoPrimaryKey)
	err = s.Snapshot(ctx, "nokey")
	require.ErrorIs(t, err, ErrNoPrimaryKey)
	require.Contains(t, err.Error(), "ADD PRIMARY KEY")
	_, err = s.RefreshContext(ctx, `SELECT 1 AS x FROM a`)
	require.ErrorIs(t, err, ErrConfig)
	err = s.Snapshot(ctx, "does_not_exist")
	require.ErrorIs(t, err, ErrConfig)
	err = s.Snapshot(ctx, "unpublished")
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "ALTER PUBLICATION")
	_, err = s.RefreshContext(ctx, `SELECT * FROM unpublished`)
	require.ErrorIs(t, err, ErrConfig)

	// ALTER PUBLICATION ... SET TABLE replaces the list and drops the watermark table
	// from it: no watermark would reach the slot, and a selection would wait for one
	// forever. It fails at once, saying how to put the table back.
	pub := pgtest.Ident(t, "slot") + "_pub"
	execAll(t, d.DB, `ALTER PUBLICATION `+pq.QuoteIdentifier(pub)+` SET TABLE a, b`)
	began := time.Now()
	_, err = s.RefreshContext(ctx, `SELECT * FROM a`)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), `ALTER PUBLICATION `+pq.QuoteIdentifier(pub)+` ADD TABLE "dbsync_ctrl"."dbsync_wmtable"`)
	err = s.Snapshot(ctx, "b")
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "watermark table")
	require.Less(t, time.Since(began), 5*time.Second)
	execAll(t, d.DB, `ALTER PUBLICATION `+pq.QuoteIdentifier(pub)+` ADD TABLE dbsync_ctrl.dbsync_wmtable`)

	// The other ways a publication holds watermarks back: not publishing INSERTs, a row
	// filter or a column list without the watermark columns on the watermark table.
	alter := `ALTER PUBLICATION ` + pq.QuoteIdentifier(pub) + ` `
	for _, c := range []struct{ change, want, undo string }{
		{`SET (publish = 'update, delete')`, "does not publish INSERTs", `SET (publish = 'insert, update, delete, truncate')`},
		{`DROP TABLE dbsync_ctrl.dbsync_wmtable; ` + alter + `ADD TABLE dbsync_ctrl.dbsync_wmtable WHERE (wm_type = 'low')`,
			`has a row filter (WHERE (wm_type = 'low'::text))`, `DROP TABLE dbsync_ctrl.dbsync_wmtable; ` + alter + `ADD TABLE dbsync_ctrl.dbsync_wmtable`},
		{`DROP TABLE dbsync_ctrl.dbsync_wmtable; ` + alter + `ADD TABLE dbsync_ctrl.dbsync_wmtable (selection_id, created_at)`,
			"publishes only columns [selection_id created_at]", `DROP TABLE dbsync_ctrl.dbsync_wmtable; ` + alter + `ADD TABLE dbsync_ctrl.dbsync_wmtable`},
	} {
		execAll(t, d.DB, alter+c.change)
		_, err = s.RefreshContext(ctx, `SELECT * FROM a`)
		require.ErrorIs(t, err, ErrConfig, c.change)
		require.Contains(t, err.Error(), c.want)
		execAll(t, d.DB, alter+c.undo)
	}
	require.Less(t, time.Since(began), 10*time.Second)

	// A row-filtered table: rows outside the filter would be refreshed into the
	// consumer but their changes never delivered.
	execAll(t, d.DB, alter+`DROP TABLE b`, alter+`ADD TABLE b WHERE (id > 10)`)
	err = s.Snapshot(ctx, "b")
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), `has a row filter (WHERE (id > 10))`)
	_, err = s.RefreshContext(ctx, `SELECT * FROM b`)
	require.ErrorIs(t, err, ErrConfig)
	execAll(t, d.DB, alter+`DROP TABLE b`, alter+`ADD TABLE b`)
	_, err = d.DB.Exec(`INSERT INTO a VALUES (1)`)
	require.NoError(t, err)
	stats, err := s.RefreshContext(ctx, `SELECT * FROM a`)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Emitted)

	// Once Run has returned, a selection fails at once instead of waiting.
	s2, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "slot")+"_pub"), WithMessageHandler(h))
	require.NoError(t, err)
	defer s2.Close()
	require.NoError(t, stop())
	rctx, cancel := context.WithCancel(ctx)
	cancel()
	require.NoError(t, s2.Run(rctx))
	_, err = s2.RefreshContext(ctx, `SELECT * FROM a`)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.Contains(t, err.Error(), "not running")
}

// TestRefreshRetriedAfterHandlerError: under RetryOnHandlerError a failing
// HandleRefresh keeps the slot before the high watermark's COMMIT; the retry delivers
// the high watermark again and the selection's rows come again (at-least-once), and
// Refresh returns only then.
func TestRefreshRetriedAfterHandlerError(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	_, err = d.DB.Exec(`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 3) g`)
	require.NoError(t, err)
	h := newCacheHandler()
	h.failRefreshAt = 2
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"), WithHandlerErrorPolicy(RetryOnHandlerError))
	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM items ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 3}, stats)
	require.Equal(t, []string{
		`refresh public.items ["1"]`, // then ["2"] failed
		`refresh public.items ["1"]`, `refresh public.items ["2"]`, `refresh public.items ["3"]`,
	}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "items")))
}

// batchRecorder is a Batcher that records what it got.
type batchRecorder struct {
	mu      sync.Mutex
	upserts []string
	deletes []string
}

func (b *batchRecorder) BatchUpsert(doctype string, docs map[string]StringMap) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, v := range docs {
		b.upserts = append(b.upserts, fmt.Sprintf("%s %s v=%v", doctype, id, v["v"]))
	}
	sort.Strings(b.upserts)
	return nil, nil
}

func (b *batchRecorder) BatchDelete(doctype string, ids []string) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		b.deletes = append(b.deletes, doctype+" "+id)
	}
	return nil, nil
}

// TestRefreshToBatcher: refresh rows reach a Batcher as upserts.
func TestRefreshToBatcher(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	_, err = d.DB.Exec(`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 2) g`)
	require.NoError(t, err)
	b := &batchRecorder{}
	// The handler takes refresh rows as a RefreshRowHandler: the Batcher still gets
	// them decoded, and so does the handler.
	rows := &rowCache{cacheHandler: newCacheHandler()}
	s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"), WithReplicationSlot(pgtest.Ident(t, "slot")),
		WithPublication(pgtest.Ident(t, "pub")), WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond),
		WithMessageHandler(rows))
	require.NoError(t, err)
	defer s.Close()
	s.Batcher = b
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	require.NoError(t, s.Refresh(`SELECT * FROM items`))
	cancel()
	require.NoError(t, <-done)
	b.mu.Lock()
	defer b.mu.Unlock()
	require.Equal(t, []string{`public.items ["1"] v=v1`, `public.items ["2"] v=v2`}, b.upserts)
	require.Empty(t, b.deletes)
	require.Equal(t, 2, rows.rows)
	require.Empty(t, rows.problems)
	require.Equal(t, map[string]StringMap{`["1"]`: {"id": int32(1), "v": "v1"}, `["2"]`: {"id": int32(2), "v": "v2"}}, rows.tableRows("public.items"))
}

// TestRefreshRereadsRowsWithUnchangedTOAST: a row the consumer has never seen is
// updated inside the window without touching its TOASTed column. The update carries
// that column as unchanged ('u'), and DBLog drops the key from the selection, so the
// consumer would never learn the value: the key is read again in a follow-up window.
func TestRefreshRereadsRowsWithUnchangedTOAST(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE docs (id int PRIMARY KEY, n int, body text)`)
	require.NoError(t, err)
	_, err = d.DB.Exec(`ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL`)
	require.NoError(t, err)
	_, err = d.DB.Exec(`INSERT INTO docs SELECT g, 0, repeat('x', 10000) || g FROM generate_series(1, 3) g`)
	require.NoError(t, err)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("docs"))
	hooked := 0
	s.win.afterSelect = func() {
		hooked++
		if hooked == 1 {
			_, err := d.DB.Exec(`UPDATE docs SET n = 1 WHERE id = 2`)
			require.NoError(t, err)
		}
	}
	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM docs ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 3, Reread: 1}, stats)
	require.Equal(t, []string{
		`update public.docs ["2"]`,
		`refresh public.docs ["1"]`,
		`refresh public.docs ["3"]`,
		`refresh public.docs ["2"]`,
	}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.docs"), dbRows(t, d.DB, "docs")))
}

// TestRefreshRereadRunsTheQuery: the follow-up window of a Refresh reads the dropped
// rows with the caller's query, restricted to their keys, so re-read rows have the
// query's columns and meaning: a column that is an expression (len) is not looked up
// in the table (it used to fail with "column t.len does not exist" after the other
// rows were delivered), and a table column's name given to an expression (n + 1000
// AS n) keeps the expression's value (it used to get the table's n). Through lib/pq
// and through pgx's driver (its own connection, text parameters).
func TestRefreshRereadRunsTheQuery(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) { testRefreshRereadRunsTheQuery(t, driver) })
	}
}

func testRefreshRereadRunsTheQuery(t *testing.T, driver string) {
	body := func(id int) string { return strings.Repeat("x", 3000) + strconv.Itoa(id) }
	for _, c := range []struct {
		name, query string
		row         func(id, n int) StringMap
	}{
		{"expression column", `SELECT id, n, body, length(body) AS len FROM docs ORDER BY id`,
			func(id, n int) StringMap {
				return StringMap{"id": int32(id), "n": int32(n), "body": body(id), "len": "3001"}
			}},
		{"renamed expression", `SELECT id, n + 1000 AS n, body FROM docs ORDER BY id`,
			func(id, n int) StringMap { return StringMap{"id": int32(id), "n": int32(n + 1000), "body": body(id)} }},
		{"key under another type", `SELECT id::text AS id, n, body FROM docs ORDER BY id`,
			func(id, n int) StringMap { return StringMap{"id": int32(id), "n": int32(n), "body": body(id)} }}, // decoded as the table's id, as changes are
	} {
		t.Run(c.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			// body is stored out of line (3 kB, STORAGE EXTERNAL: not compressed), so an
			// UPDATE that does not set it sends it as unchanged TOAST ('u').
			execAll(t, d.DB, `CREATE TABLE docs (id int PRIMARY KEY, n int, body text)`,
				`ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL`,
				`INSERT INTO docs SELECT g, 0, repeat('x', 3000) || g FROM generate_series(1, 3) g`)
			var external bool
			require.NoError(t, d.DB.QueryRow(`SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE oid = 'docs'::regclass`).Scan(&external))
			require.True(t, external, "body must be stored out of line, in the TOAST table")
			h := newCacheHandler()
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("docs"), WithDB(db))
			hooked := 0
			s.win.afterSelect = func() {
				if hooked++; hooked == 1 {
					execAll(t, d.DB, `UPDATE docs SET n = 1 WHERE id = 2`)
				}
			}
			stats, err := s.RefreshContext(context.Background(), c.query)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 3, Emitted: 3, Reread: 1}, stats)
			require.Equal(t, []string{
				`update public.docs ["2"]`,
				`refresh public.docs ["1"]`,
				`refresh public.docs ["3"]`,
				`refresh public.docs ["2"]`, // read again by the follow-up window
			}, h.eventList())
			// Each key's last event was its refresh row: the cache holds what they carried
			// (bodies compared one by one, so a failure prints the other columns legibly).
			got := h.tableRows("public.docs")
			want := map[string]StringMap{`["1"]`: c.row(1, 0), `["2"]`: c.row(2, 1), `["3"]`: c.row(3, 0)}
			for k, row := range want {
				require.Equal(t, row["body"], got[k]["body"], "body of %s", k)
				delete(row, "body")
				delete(got[k], "body")
			}
			require.Equal(t, want, got)
		})
	}
}

// TestRefreshWatermarkLostMidway: the publication loses the watermark table between a
// selection's SELECT and its high watermark, after Refresh's up-front check. The high
// watermark never reaches the slot; once a complete poll has delivered everything up
// to where it was committed, the selection fails with ErrRefreshAbandoned instead of
// waiting forever (windowTracker.polledThrough), nothing of it is delivered, and a
// refresh works again once the table is back.
func TestRefreshWatermarkLostMidway(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`,
		`INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 3) g`)
	h := newCacheHandler()
	slot := pgtest.Ident(t, "slot")
	s, _ := startSyncer(t, d.DSN(), slot, h, ForTables("items"))
	alter := `ALTER PUBLICATION ` + pq.QuoteIdentifier(slot+"_pub") + ` `
	s.win.afterSelect = func() { execAll(t, d.DB, alter+`DROP TABLE dbsync_ctrl.dbsync_wmtable`) }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	began := time.Now()
	_, err := s.RefreshContext(ctx, `SELECT * FROM items`)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.Contains(t, err.Error(), "did not reach the slot")
	require.NoError(t, ctx.Err(), "the selection must fail on its own, not by its context")
	require.Less(t, time.Since(began), 20*time.Second)
	require.Empty(t, h.eventList())

	s.win.afterSelect = nil
	execAll(t, d.DB, alter+`ADD TABLE dbsync_ctrl.dbsync_wmtable`)
	stats, err := s.RefreshContext(ctx, `SELECT * FROM items`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 3}, stats)
	require.Equal(t, []string{`refresh public.items ["1"]`, `refresh public.items ["2"]`, `refresh public.items ["3"]`}, h.eventList())
}

// stagingHandler applies changes and refresh rows only when their transaction's
// COMMIT succeeds, as a consumer writing to a transactional store does; failCommits
// makes that many COMMITs that follow refresh rows fail (discarding what was staged).
type stagingHandler struct {
	DefaultMessageHandler
	mu          sync.Mutex
	staged      map[string]StringMap
	committed   map[string]StringMap
	failCommits int
	commits     []string // "ok n" or "failed n": rows staged at each COMMIT after refresh rows
}

func (h *stagingHandler) HandleRefresh(key string, item DBItem) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.staged == nil {
		h.staged = map[string]StringMap{}
	}
	h.staged[key] = item.Values
	return nil
}

func (h *stagingHandler) HandleCommitMessage(int, *pglogrepl.CommitMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.staged)
	if n == 0 {
		return nil
	}
	if h.failCommits > 0 {
		h.failCommits--
		h.staged = nil
		h.commits = append(h.commits, fmt.Sprintf("failed %d", n))
		return errInjected
	}
	if h.committed == nil {
		h.committed = map[string]StringMap{}
	}
	maps.Copy(h.committed, h.staged)
	h.staged = nil
	h.commits = append(h.commits, fmt.Sprintf("ok %d", n))
	return nil
}

// TestRefreshRowsRedeliveredAfterCommitFailure: refresh rows are delivered at the
// high watermark's COMMIT; when the handler's COMMIT fails there, the transaction is
// delivered again (RetryOnHandlerError) and so are the rows: Refresh returns only
// after a COMMIT took them, and none is lost. (Before, the selection counted as
// delivered as soon as its rows were handed over, the COMMIT's failure
// notwithstanding: Refresh returned nil and the rows were never delivered again.)
func TestRefreshRowsRedeliveredAfterCommitFailure(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, v text)`, `INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 3) g`)
	h := &stagingHandler{failCommits: 1}
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("items"), WithHandlerErrorPolicy(RetryOnHandlerError))
	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM items ORDER BY id`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 3}, stats)
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Equal(t, []string{"failed 3", "ok 3"}, h.commits)
	require.Empty(t, mismatches(h.committed, dbRows(t, d.DB, "items")))
}

// TestSelectionsPinOutputSettings: a database whose settings change how values print
// (extra_float_digits, bytea_output, IntervalStyle, DateStyle, TimeZone). The peek
// pins them (sql/peek.sql), and so must a selection (sql/selection_begin.sql): a row
// read by Refresh then has the record ID and the values of its change, through both
// drivers. (Before, extra_float_digits = 0 gave the refresh row another record ID and
// a rounded float, and the other settings failed the Refresh with ErrDecodeValue.) A
// snapshot whose chunk bounds are planned (WithSnapshotParallel) reads every row once
// under DateStyle 'SQL, DMY', where a bound printed in the session's style would be
// read back as another date.
func TestSelectionsPinOutputSettings(t *testing.T) {
	for _, set := range [][2]string{
		{"extra_float_digits", "0"},
		{"bytea_output", "escape"},
		{"IntervalStyle", "sql_standard"},
		{"DateStyle", "SQL, DMY"},
		{"TimeZone", "Asia/Kolkata"},
	} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(set[0]+"/"+driver, func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE TABLE r (id int, f float8, by bytea, iv interval, ts timestamptz, PRIMARY KEY (id, f, by, ts))`,
					`CREATE TABLE days (day date PRIMARY KEY, v int)`,
					`ALTER DATABASE `+pq.QuoteIdentifier(d.Name)+` SET `+set[0]+` = `+pq.QuoteLiteral(set[1]))
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				var got string
				require.NoError(t, db.QueryRow(`SELECT current_setting($1)`, set[0]).Scan(&got))
				if driver == "postgres" && set[0] == "DateStyle" {
					require.Equal(t, "ISO, MDY", got, "lib/pq sets DateStyle itself when it connects")
				} else {
					require.Equal(t, set[1], got, "the database setting reaches new sessions")
				}
				h := newCacheHandler()
				s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("r", "days"), WithDB(db),
					WithSnapshotParallel(2), WithSnapshotChunkSize(2))
				execAll(t, d.DB, `INSERT INTO r VALUES (1, 0.1::float8 + 0.2::float8, '\x00ff', '1 day 02:03:04', '2024-03-01 12:34:56.789+02')`)
				waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 1 }, "the insert")
				fromChange := h.tableRows("public.r")
				stats, err := s.RefreshContext(context.Background(), `SELECT * FROM r`)
				require.NoError(t, err)
				require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
				ev := h.eventList()
				require.Equal(t, []string{`insert public.r ["1","0.30000000000000004","\\x00ff","2024-03-01T10:34:56.789Z"]`,
					`refresh public.r ["1","0.30000000000000004","\\x00ff","2024-03-01T10:34:56.789Z"]`}, ev)
				require.Equal(t, fromChange, h.tableRows("public.r"), "the refresh row's values are the change's")

				execAll(t, d.DB, `INSERT INTO days SELECT DATE '2024-01-01' + g, g FROM generate_series(0, 11) g`)
				require.NoError(t, s.Snapshot(context.Background(), "days"))
				rows := h.tableRows("public.days")
				require.Len(t, rows, 12)
				require.Equal(t, 12, strings.Count(strings.Join(h.eventList(), "\n"), "refresh public.days"), "every row once")
				require.Empty(t, mismatches(rows, dbRows(t, d.DB, "days")))
			})
		}
	}
}

// TestQCharHighBytes: "char" values with a byte >= 0x80, which PostgreSQL's output
// function prints as \ooo ('é' in a UTF8 database stores its first byte, 0xC3: \303).
// Changes (text and binary) and refresh rows decode them to the same value, the byte
// as a rune, and the same record ID; before, text mode failed with ErrDecodeValue
// ("invalid length for \"char\""), which stopped the Syncer on the change.
func TestQCharHighBytes(t *testing.T) {
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE qc (c "char" PRIMARY KEY, n int)`)
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("qc"), WithBinary(binary))
			execAll(t, d.DB, `INSERT INTO qc VALUES ('a', 1), ('é', 2), ('\', 3)`)
			waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 3 }, "the inserts")
			fromChanges := h.tableRows("public.qc")
			require.Equal(t, map[string]StringMap{
				`["97"]`:  {"c": int32('a'), "n": int32(1)},
				`["195"]`: {"c": int32(0xC3), "n": int32(2)},
				`["92"]`:  {"c": int32('\\'), "n": int32(3)},
			}, fromChanges)
			stats, err := s.RefreshContext(context.Background(), `SELECT * FROM qc`)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 3, Emitted: 3}, stats)
			require.Equal(t, fromChanges, h.tableRows("public.qc"))
		})
	}
}

// TestBinaryModeKeyWithoutCodec: in binary mode a key column of a type without a Go
// codec (money, timetz, ...) arrives in changes as its send format, which cannot be
// matched with the text a selection reads: Refresh and Snapshot refuse the table with
// ErrConfig instead of delivering refresh rows under other record IDs than the
// changes'. In text mode the same table works.
func TestBinaryModeKeyWithoutCodec(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE m (price money PRIMARY KEY, n int)`, `INSERT INTO m VALUES ('1.00', 1)`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("m"), WithBinary(true))
	_, err := s.RefreshContext(context.Background(), `SELECT * FROM m`)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), `key column "price" is of a type without a Go codec (money)`)
	require.ErrorIs(t, s.Snapshot(context.Background(), "m"), ErrConfig)

	text, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot_text"), h, ForTables("m"))
	stats, err := text.RefreshContext(context.Background(), `SELECT * FROM m`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
}

// TestKeysEncodingJSONRefuses: keys holding values encoding/json refuses (a range bound
// in 44 BC, beyond year 9999, NaN in an array whose lower bound is not 1). Their
// changes get a record ID, the same as their refresh rows', in text and binary modes;
// before, DecodeChange failed with ErrNoKey, which stopped the Syncer on the change.
func TestKeysEncodingJSONRefuses(t *testing.T) {
	for _, c := range []struct{ typ, val string }{
		{"tsrange", `'[0044-03-15 12:00:00 BC,)'`},
		{"daterange", `'[0044-03-15 BC,)'`},
		{"tstzrange", `'[2020-01-01 00:00+00,10000-01-01 00:00+00)'`},
		{"float8[]", `'[0:1]={1,NaN}'`},
	} {
		for _, binary := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/binary=%v", c.typ, binary), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE TABLE k (v `+c.typ+` PRIMARY KEY, n int)`)
				h := newCacheHandler()
				s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("k"), WithBinary(binary))
				execAll(t, d.DB, `INSERT INTO k VALUES (`+c.val+`, 1)`)
				waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 1 }, "the insert")
				stats, err := s.RefreshContext(context.Background(), `SELECT * FROM k`)
				require.NoError(t, err)
				require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
				ev := h.eventList()
				require.Len(t, ev, 2)
				key := strings.TrimPrefix(ev[0], "insert public.k ")
				require.NotEqual(t, ev[0], key)
				require.Equal(t, "refresh public.k "+key, ev[1], "the refresh row's record ID is the change's")
				require.Len(t, h.tableRows("public.k"), 1)
			})
		}
	}
}

// TestRefreshRereadKeyTypes checks the condition a Refresh's follow-up window puts on
// the caller's query (refreshKeysQuery): a key column of the key's own type, with or
// without a type modifier, is compared as it is, so PostgreSQL still reads the rows
// by the table's key index, while a key returned under another type (id::text AS id)
// is cast back to the key's type and compares (it used to fail with 42883, operator
// does not exist: text = integer).
func TestRefreshRereadKeyTypes(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE plain (id int PRIMARY KEY, v text)`,
		`CREATE TABLE modded (code varchar(8), amount numeric(12,2), v text, PRIMARY KEY (code, amount))`,
		`INSERT INTO plain SELECT g, 'v' FROM generate_series(1, 1000) g`,
		`INSERT INTO modded SELECT 'c' || g, g / 4.0, 'v' FROM generate_series(1, 1000) g`,
		`ANALYZE plain`, `ANALYZE modded`)
	s := newTestSyncer(t, d, WithDB(d.DB), ForTables("plain", "modded"))
	ctx := context.Background()
	plan := func(table, query string, key []string) (string, []string) {
		info, err := s.TableInfo(ctx, table)
		require.NoError(t, err)
		cols, err := s.queryColumns(ctx, query)
		require.NoError(t, err)
		q := refreshKeysQuery(info, cols, query, [][]string{key})
		conn, err := d.DB.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.ExecContext(ctx, `SET enable_seqscan = off`)
		require.NoError(t, err)
		var lines []string
		rows, err := conn.QueryContext(ctx, "EXPLAIN "+q.build(formText), q.args...)
		require.NoError(t, err)
		for rows.Next() {
			var l string
			require.NoError(t, rows.Scan(&l))
			lines = append(lines, l)
		}
		require.NoError(t, rows.Err())
		return strings.Join(lines, "\n"), pgtest.Strings(t, d.DB, `SELECT x.v || ' ' || x.`+info.PrimaryKey[0]+` FROM (`+q.build(formText)+`) AS x`, q.args...)
	}
	p, got := plan("plain", `SELECT id, v FROM plain`, []string{"7"})
	require.Contains(t, p, "Index Scan using plain_pkey", p)
	require.Equal(t, []string{"v 7"}, got)
	p, got = plan("modded", `SELECT code, amount, v FROM modded`, []string{"c10", "2.50"})
	require.Contains(t, p, "Index Scan using modded_pkey", p)
	require.Equal(t, []string{"v c10"}, got)
	_, got = plan("plain", `SELECT id::text AS id, v FROM plain`, []string{"7"})
	require.Equal(t, []string{"v 7"}, got)
}
