package dbsync

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// mergeBatcher stores upserted docs the way docs/VALUES.md asks caches to: merged
// into the stored document, so columns absent from an upsert (unchanged TOAST values)
// keep their value.
type mergeBatcher struct {
	mu      sync.Mutex
	upserts []StringMap // every doc received, in order
	store   map[string]StringMap
}

func (b *mergeBatcher) BatchUpsert(doctype string, docs map[string]StringMap) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.store == nil {
		b.store = map[string]StringMap{}
	}
	for id, doc := range docs {
		b.upserts = append(b.upserts, doc)
		cur := b.store[doctype+" "+id]
		if cur == nil {
			cur = StringMap{}
		}
		for k, v := range doc {
			cur[k] = v
		}
		b.store[doctype+" "+id] = cur
	}
	return nil, nil
}

func (b *mergeBatcher) BatchDelete(doctype string, ids []string) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		delete(b.store, doctype+" "+id)
	}
	return nil, nil
}

// TestToastUnchanged: an UPDATE that leaves large (out-of-line TOASTed) text and jsonb
// values alone. Under REPLICA IDENTITY DEFAULT pgoutput does not send them ('u'): the
// change lists them in Unchanged and leaves them out of New (never NULL), and a merging
// Batcher keeps the stored value. Under FULL (set by WithReplicaIdentityFull) the old
// row fills them in.
func TestToastUnchanged(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", full), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE toasty (id int PRIMARY KEY, big text, doc jsonb, n int)`)
			rec := &changeRecorder{}
			opts := []SyncerOpt{ForTables("toasty"), WithMessageHandler(rec)}
			if full {
				opts = append(opts, WithReplicaIdentityFull("toasty"))
			}
			s := newTestSyncer(t, d, opts...)
			var ident string
			require.NoError(t, d.DB.QueryRow(`SELECT relreplident::text FROM pg_class WHERE oid = 'toasty'::regclass`).Scan(&ident))
			require.Equal(t, map[bool]string{false: "d", true: "f"}[full], ident, "replica identity is changed only when asked")
			b := &mergeBatcher{}
			s.Batcher = b
			r := runInBackground(s)
			defer r.stop(t)

			execAll(t, d.DB, `INSERT INTO toasty SELECT 1, string_agg(md5(i::text), ''), jsonb_build_object('k', string_agg(md5(i::text), '')), 0
				FROM generate_series(1, 4000) i`)
			var big string
			require.NoError(t, d.DB.QueryRow(`SELECT big FROM toasty`).Scan(&big))
			require.Len(t, big, 128000) // far above the ~2 kB TOAST threshold
			ins := rec.waitChanges(t, 1)[0]
			require.Equal(t, big, ins.New["big"])
			waitFor(t, 10e9, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.upserts) == 1 }, "first upsert")

			execAll(t, d.DB, `UPDATE toasty SET n = n + 1`)
			upd := rec.waitChanges(t, 2)[1]
			require.Equal(t, int32(1), upd.New["n"])
			if full {
				require.Empty(t, upd.Unchanged)
				require.Equal(t, []string{"big", "doc"}, upd.Filled)
				require.Equal(t, big, upd.New["big"])
				require.Equal(t, `{"k": "`+big+`"}`, string(upd.New["doc"].(json.RawMessage)))
				require.Equal(t, int32(0), upd.Old["n"])
			} else {
				require.Equal(t, []string{"big", "doc"}, upd.Unchanged)
				require.Empty(t, upd.Filled)
				require.NotContains(t, upd.New, "big", "an unchanged TOAST value is absent, not NULL")
				require.NotContains(t, upd.New, "doc")
				require.Nil(t, upd.Old)
			}
			require.Equal(t, `["1"]`, upd.Key)
			waitFor(t, 10e9, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.upserts) == 2 }, "second upsert")
			b.mu.Lock()
			defer b.mu.Unlock()
			if !full {
				require.NotContains(t, b.upserts[1], "big", "the Batcher gets no value for the unchanged column")
			}
			stored := b.store[`public.toasty ["1"]`]
			require.Equal(t, big, stored["big"], "the cache keeps the value")
			require.Equal(t, int32(1), stored["n"])
		})
	}
}

// TestCompositeKey: a table whose primary key (b, a) is in another order than its
// columns. A key-changing UPDATE gives the old and new record IDs, a DELETE the old
// key from the 'K' tuple (only key columns), and SELECTed rows (ScanRow) get the same
// IDs as their changes.
func TestCompositeKey(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ck (a int, v text, b text, PRIMARY KEY (b, a))`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("ck"), WithMessageHandler(rec))
	r := runInBackground(s)
	defer r.stop(t)

	execAll(t, d.DB, `INSERT INTO ck VALUES (1, 'v1', 'p,"q'), (1, 'v2', 'p')`,
		`UPDATE ck SET v = 'v3' WHERE a = 1 AND b = 'p'`,
		`UPDATE ck SET a = 2 WHERE b = 'p,"q'`,
		`DELETE FROM ck WHERE b = 'p'`)
	ch := rec.waitChanges(t, 5)
	info := ch[0].Table
	require.Equal(t, []string{"b", "a"}, info.PrimaryKey)
	require.Equal(t, 1, info.ColInfo["b"].KeyPosition)
	require.Equal(t, 2, info.ColInfo["a"].KeyPosition)
	type got struct {
		Op          Op
		Key, OldKey string
		Old         StringMap
	}
	var gots []got
	for _, c := range ch {
		gots = append(gots, got{c.Op, c.Key, c.OldKey, c.Old})
	}
	require.Equal(t, []got{
		{OpInsert, `["p,\"q","1"]`, "", nil},
		{OpInsert, `["p","1"]`, "", nil},
		{OpUpdate, `["p","1"]`, "", nil},
		{OpUpdate, `["p,\"q","2"]`, `["p,\"q","1"]`, StringMap{"a": int32(1), "b": `p,"q`}},
		{OpDelete, `["p","1"]`, "", StringMap{"a": int32(1), "b": "p"}},
	}, gots)

	rows, err := d.DB.Query(`SELECT ` + info.SelectList(info.PrimaryKey...) + ` FROM ` + info.QuotedName())
	require.NoError(t, err)
	defer rows.Close()
	require.True(t, rows.Next())
	row, err := info.ScanRow(rows)
	require.NoError(t, err)
	id, err := info.GetRecordID(row)
	require.NoError(t, err)
	require.Equal(t, ch[3].Key, id, "a SELECTed row gets the ID of its last change")
	require.False(t, rows.Next())
}

// TestSchemaChangesMidStream: ADD COLUMN, DROP COLUMN, a type change, RENAME COLUMN,
// RENAME TABLE, TRUNCATE ... RESTART IDENTITY CASCADE, logical decoding messages and a
// DROP TABLE, with changes before and after each. "live": the Syncer runs and each step
// is delivered before the next; "backlog": all steps are in the slot before the Syncer
// starts, so the catalog already has the final shape when the first change is decoded.
// Every change must decode with the shape it was written with.
func TestSchemaChangesMidStream(t *testing.T) {
	for _, live := range []bool{true, false} {
		t.Run(map[bool]string{true: "live", false: "backlog"}[live], func(t *testing.T) { testSchemaChanges(t, live) })
	}
}

func testSchemaChanges(t *testing.T, live bool) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE sc (id int PRIMARY KEY, a int, b text)`,
		`CREATE TABLE child (id int PRIMARY KEY, sc_id int REFERENCES sc (id))`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("sc", "child"), WithMessageHandler(rec))
	var r *running
	if live {
		r = runInBackground(s)
		defer func() { require.NoError(t, r.stop(t)) }()
	}
	steps := []struct {
		stmts   []string
		changes int // changes the step makes
	}{
		{[]string{`INSERT INTO sc VALUES (1, 10, 'x')`}, 1},
		{[]string{`ALTER TABLE sc ADD COLUMN c text`, `INSERT INTO sc VALUES (2, 20, 'y', 'z')`}, 1},
		{[]string{`ALTER TABLE sc DROP COLUMN b`, `INSERT INTO sc (id, a, c) VALUES (3, 30, 'w')`}, 1},
		{[]string{`ALTER TABLE sc ALTER COLUMN a TYPE text USING a::text`, `INSERT INTO sc VALUES (4, '40', 'v')`}, 1},
		{[]string{`ALTER TABLE sc RENAME COLUMN a TO a2`, `INSERT INTO sc VALUES (5, '50', 'u')`}, 1},
		{[]string{`ALTER TABLE sc RENAME TO sc2`, `INSERT INTO sc2 VALUES (6, '60', 't')`, `INSERT INTO child VALUES (1, 1)`}, 2},
		{[]string{`TRUNCATE sc2 RESTART IDENTITY CASCADE`,
			`BEGIN; INSERT INTO sc2 VALUES (7, '70', 's'); SELECT pg_logical_emit_message(true, 'pfx', 'in-tx'); COMMIT`}, 1},
		{[]string{`BEGIN; INSERT INTO child VALUES (2, 7); DROP TABLE child; COMMIT`}, 1},
	}
	n := 0
	for _, st := range steps {
		execAll(t, d.DB, st.stmts...)
		n += st.changes
		if live {
			rec.waitChanges(t, n)
		}
	}
	if !live {
		r = runInBackground(s)
		defer func() { require.NoError(t, r.stop(t)) }()
	}
	changes := rec.waitChanges(t, n)
	var news []string
	for _, c := range changes {
		news = append(news, fmt.Sprintf("%s.%s %v dropped=%v", c.Table.Namespace, c.Table.TableName, c.New, c.Table.Dropped))
	}
	// In the backlog the table child is gone when its first RELATION is decoded: it is
	// described from the RELATION message alone. Live, child's description was cached
	// (same RELATION shape) before the DROP.
	require.Equal(t, []string{
		"public.sc map[a:10 b:x id:1] dropped=false",
		"public.sc map[a:20 b:y c:z id:2] dropped=false",
		"public.sc map[a:30 c:w id:3] dropped=false",
		"public.sc map[a:40 c:v id:4] dropped=false",
		"public.sc map[a2:50 c:u id:5] dropped=false",
		"public.sc2 map[a2:60 c:t id:6] dropped=false",
		fmt.Sprintf("public.child map[id:1 sc_id:1] dropped=%v", !live),
		"public.sc2 map[a2:70 c:s id:7] dropped=false",
		fmt.Sprintf("public.child map[id:2 sc_id:7] dropped=%v", !live),
	}, news)
	// The Go types follow the shape at the time of each change.
	require.IsType(t, int32(0), changes[2].New["a"])
	require.IsType(t, "", changes[3].New["a"])

	_, events := rec.snapshot()
	sc1 := "RELATION public.sc (id:integer,a:integer,b:text) key=[id]"
	sc2 := "RELATION public.sc (id:integer,a:integer,b:text,c:text) key=[id]"
	sc3 := "RELATION public.sc (id:integer,a:integer,c:text) key=[id]"
	sc4 := "RELATION public.sc (id:integer,a:text,c:text) key=[id]"
	sc5 := "RELATION public.sc (id:integer,a2:text,c:text) key=[id]"
	sc6 := "RELATION public.sc2 (id:integer,a2:text,c:text) key=[id]"
	child := "RELATION public.child (id:integer,sc_id:integer) key=[id]"
	want := []string{
		sc1, `INSERT sc ["1"]`, sc2, `INSERT sc ["2"]`, sc3, `INSERT sc ["3"]`, sc4, `INSERT sc ["4"]`, sc5, `INSERT sc ["5"]`,
		sc6, `INSERT sc2 ["6"]`, child, `INSERT child ["1"]`,
	}
	// TRUNCATE invalidates the relations' cached schema in pgoutput: RELATION comes
	// again before the TRUNCATE and before the next change of each, in both modes.
	want = append(want, sc6, child, "TRUNCATE child,sc2 cascade=true restart_identity=true",
		sc6, `INSERT sc2 ["7"]`, "MESSAGE pfx in-tx transactional=true", child, `INSERT child ["2"]`)
	require.Equal(t, strings.Join(want, "\n"), strings.Join(events, "\n"))
}

// TestKeylessTable: a table with neither a primary key nor a replica identity index,
// under REPLICA IDENTITY FULL. Its changes are decoded with Key and OldKey "" (no record
// ID) and every value of the new and old rows; a Batcher, which folds changes by key,
// ends the poll with ErrNoKey before the handler gets the change or the slot is
// forwarded, so the change is delivered once the Batcher is gone.
func TestKeylessTable(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE nokey (a int, b text)`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("nokey"), WithReplicaIdentityFull("nokey"), WithMessageHandler(rec))
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO nokey VALUES (1, 'x')`, `UPDATE nokey SET b = 'y'`, `DELETE FROM nokey`)
	got := rec.waitChanges(t, 3)
	require.NoError(t, r.stop(t))
	want := []Change{
		{Op: OpInsert, New: StringMap{"a": int32(1), "b": "x"}},
		{Op: OpUpdate, New: StringMap{"a": int32(1), "b": "y"}, Old: StringMap{"a": int32(1), "b": "x"}},
		{Op: OpDelete, Old: StringMap{"a": int32(1), "b": "y"}},
	}
	for i, c := range got {
		require.Equal(t, "public.nokey", c.Table.QualifiedName())
		c.Table = nil
		require.Equal(t, want[i], *c, "change %d", i)
	}

	// With a Batcher the next change ends Run with ErrNoKey, and is not lost.
	execAll(t, d.DB, `INSERT INTO nokey VALUES (2, 'z')`)
	s.Batcher = &mergeBatcher{}
	err := runInBackground(s).wait(t, 30*time.Second)
	require.ErrorIs(t, err, ErrNoKey)
	require.Contains(t, err.Error(), "public.nokey")
	require.Contains(t, err.Error(), "add a primary key")
	require.Len(t, rec.changes, 3, "the Batcher refuses the change before the handler gets it")

	s.Batcher = nil
	r = runInBackground(s)
	got = rec.waitChanges(t, 4)
	require.NoError(t, r.stop(t))
	require.Equal(t, StringMap{"a": int32(2), "b": "z"}, got[3].New, "delivered: the slot was not forwarded past it")
}

// TestToastedKeyUpdate: a primary key value stored out of line (2,400 bytes of
// incompressible text) and an UPDATE of another column. pgoutput sends the key as 'u'
// (unchanged TOAST) in the new tuple and, for it, the old key ('K'): the change takes
// the key from there (Filled), so it has its record ID; before, ErrNoKey stopped the
// Syncer on it for good. Text and binary formats.
func TestToastedKeyUpdate(t *testing.T) {
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE tk (k text PRIMARY KEY, v int)`)
			rec := &changeRecorder{}
			s := newTestSyncer(t, d, ForTables("tk"), WithMessageHandler(rec), WithBinary(binary))
			r := runInBackground(s)
			defer r.stop(t)
			execAll(t, d.DB, `INSERT INTO tk SELECT string_agg(md5(i::text), '' ORDER BY i), 1 FROM generate_series(1, 75) i`,
				`UPDATE tk SET v = 2`)
			var k string
			require.NoError(t, d.DB.QueryRow(`SELECT k FROM tk`).Scan(&k))
			require.Len(t, k, 2400)
			got := rec.waitChanges(t, 2)
			upd := got[1]
			require.Equal(t, OpUpdate, upd.Op)
			require.Equal(t, got[0].Key, upd.Key)
			require.Equal(t, `["`+k+`"]`, upd.Key)
			require.Empty(t, upd.OldKey)
			require.Equal(t, StringMap{"k": k, "v": int32(2)}, upd.New)
			require.Equal(t, []string{"k"}, upd.Filled, "the key came as unchanged TOAST and was filled from the old key")
			require.Empty(t, upd.Unchanged)
			// ScanTuple (docs/VALUES.md): the new tuple lacks the key, the old key has it.
			var sk string
			var v int32
			nt := rec.tuple(1)
			require.ErrorIs(t, upd.Table.ScanTuple(nt.reln, nt.tuple, &sk, &v), ErrUnchangedTOAST)
			require.Equal(t, "", sk)
			require.Equal(t, int32(2), v)
			rec.mu.Lock()
			old := rec.olds[1]
			rec.mu.Unlock()
			require.NoError(t, upd.Table.ScanTuple(nt.reln, old, &sk, nil))
			require.Equal(t, k, sk)
		})
	}
}
