package dbsync

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestDroppedTypeInBacklogIsOidN decodes, with a Syncer started after the type was
// dropped, changes written while an extension type existed: DROP EXTENSION hstore
// CASCADE (which drops the columns), CREATE EXTENSION hstore again (a new OID) and
// the column added again. The old changes' values of the dropped type are
// UnknownValues named "oid N" (UnknownValue.Type's docs: the type is no longer in the
// catalog), never format_type's "???"; the later ones are of the new hstore.
func TestDroppedTypeInBacklogIsOidN(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE EXTENSION hstore`, `CREATE TABLE t1 (id int PRIMARY KEY, h hstore, ha hstore[])`)
	var oldOID, oldArrayOID uint32
	require.NoError(t, d.DB.QueryRow(`SELECT 'hstore'::regtype::oid, 'hstore[]'::regtype::oid`).Scan(&oldOID, &oldArrayOID))
	h := &changeRecorder{}
	s := newTestSyncer(t, d, WithMessageHandler(h), ForTables("t1"))
	require.NoError(t, s.Setup(context.Background()))
	execAll(t, d.DB, `INSERT INTO t1 VALUES (1, 'a=>1', '{"b=>2"}')`,
		`DROP EXTENSION hstore CASCADE`, `CREATE EXTENSION hstore`, `ALTER TABLE t1 ADD COLUMN h hstore`,
		`INSERT INTO t1 VALUES (2, 'c=>3')`)
	r := runInBackground(s)
	defer r.stop(t)
	ch := h.waitChanges(t, 2)
	oidName := func(o uint32) string { return "oid " + strconv.FormatUint(uint64(o), 10) }
	require.Equal(t, StringMap{"id": int32(1),
		"h":  UnknownValue{Type: oidName(oldOID), Text: `"a"=>"1"`},
		"ha": UnknownValue{Type: oidName(oldArrayOID), Text: `{"\"b\"=>\"2\""}`}}, ch[0].New)
	require.Equal(t, StringMap{"id": int32(2), "h": UnknownValue{Type: "hstore", Text: `"c"=>"3"`}}, ch[1].New)
	require.Equal(t, `["1"]`, ch[0].Key)
	require.Equal(t, `["2"]`, ch[1].Key)
}

// TestScanTupleNullErrorNamesNoFormat scans NULLs of a binary-mode tuple (WithBinary)
// into destinations that cannot hold NULL. A NULL ('n') has no format, and the error
// said "text format" for a binary tuple: it says NULL instead.
func TestScanTupleNullErrorNamesNoFormat(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE EXTENSION citext`, `CREATE TABLE t1 (id int PRIMARY KEY, k citext, n int)`)
	h := &changeRecorder{}
	s := newTestSyncer(t, d, WithMessageHandler(h), ForTables("t1"), WithBinary(true))
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB, `INSERT INTO t1 VALUES (1, NULL, NULL)`)
	h.waitChanges(t, 1)
	tp := h.tuple(0)
	info := s.tables.get(tp.reln.RelationID)
	var k string
	err := info.ScanTuple(tp.reln, tp.tuple, nil, &k, nil)
	require.ErrorIs(t, err, ErrDecodeValue)
	require.EqualError(t, err, `public.t1: dbsync: cannot decode column value: column "k" (citext, NULL) into *string: cannot scan NULL into *string`)
	var n int64
	err = info.ScanTuple(tp.reln, tp.tuple, nil, nil, &n)
	require.ErrorIs(t, err, ErrDecodeValue)
	require.EqualError(t, err, `public.t1: dbsync: cannot decode column value: column "n" (int4, NULL) into *int64: cannot scan NULL into *int64`)
}

// TestRefreshDomainKeyCastToBase: a Refresh query may return its key columns cast so
// that they print as their changes do (docs/SNAPSHOTS.md). A domain's value cast to
// its base type (a domain over citext to citext, a domain over a domain over integer
// to integer, then to bigint) prints the same, but such queries were refused with
// ErrConfig ("may print a key otherwise than its changes do"). They are taken, and
// their rows have the changes' record IDs and values; a cast of the base that may
// change the text (integer to numeric(10,2)) is still refused.
func TestRefreshDomainKeyCastToBase(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE EXTENSION citext`, `CREATE DOMAIN dci AS citext`, `CREATE DOMAIN dint AS int`, `CREATE DOMAIN ddint AS dint`,
		`CREATE TABLE t (k dci PRIMARY KEY, v int)`, `CREATE TABLE t2 (k ddint PRIMARY KEY, v int)`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("t", "t2"))
	execAll(t, d.DB, `INSERT INTO t VALUES ('MiXed', 1)`, `INSERT INTO t2 VALUES (7, 2)`)
	waitFor(t, 10*time.Second, func() bool { return len(h.eventList()) == 2 }, "the inserts")
	fromChanges := map[string]map[string]StringMap{"t": h.tableRows("public.t"), "t2": h.tableRows("public.t2")}
	require.Equal(t, map[string]StringMap{`["MiXed"]`: {"k": UnknownValue{Type: "dci", Text: "MiXed"}, "v": int32(1)}}, fromChanges["t"])
	require.Equal(t, map[string]StringMap{`["7"]`: {"k": int32(7), "v": int32(2)}}, fromChanges["t2"])
	for _, q := range []struct{ table, query string }{
		{"t", `SELECT k::citext AS k, v FROM t`},
		{"t2", `SELECT k::dint AS k, v FROM t2`},
		{"t2", `SELECT k::integer AS k, v FROM t2`},
		{"t2", `SELECT k::bigint AS k, v FROM t2`},
		{"t2", `SELECT k::integer::text AS k, v FROM t2`},
	} {
		h.mu.Lock()
		h.rows = map[string]StringMap{}
		h.mu.Unlock()
		stats, err := s.RefreshContext(context.Background(), q.query)
		require.NoError(t, err, q.query)
		require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats, q.query)
		require.Equal(t, fromChanges[q.table], h.tableRows("public."+q.table), q.query)
	}
	_, err := s.RefreshContext(context.Background(), `SELECT k::numeric(10,2) AS k, v FROM t2`)
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, "cast from ddint to numeric(10,2)")
}

// TestEmptyBinaryUnknownValue: in binary mode (WithBinary) a value of a type without
// a codec is UnknownValue.Binary, its send format, and exactly one of Text and Binary
// is set. An empty send format (an empty citext, a domain over it, or xml, also as array
// elements) gave Binary nil, so the value looked like an empty text: String() and
// JSONValue gave "" where every other binary value gives its type and "\x" hex, and
// a key of it had the record ID [""] rather than its send format's.
func TestEmptyBinaryUnknownValue(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE EXTENSION citext`, `CREATE DOMAIN dci AS citext`,
		`CREATE TABLE t1 (k citext PRIMARY KEY, dc dci, x xml, ca citext[])`)
	h := &changeRecorder{}
	s := newTestSyncer(t, d, WithMessageHandler(h), ForTables("t1"), WithBinary(true))
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB, `INSERT INTO t1 VALUES ('', '', '', '{""}')`)
	ch := h.waitChanges(t, 1)
	require.Equal(t, StringMap{
		"k":  UnknownValue{Type: "citext", Binary: []byte{}},
		"dc": UnknownValue{Type: "dci", Binary: []byte{}},
		"x":  UnknownValue{Type: "xml", Binary: []byte{}},
		"ca": []any{UnknownValue{Type: "citext", Binary: []byte{}}},
	}, ch[0].New)
	require.Equal(t, `["citext:\\x"]`, ch[0].Key)
	info := s.tables.get(h.tuple(0).reln.RelationID)
	j, err := info.JSONRow(ch[0].New)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"k": `\x`, "dc": `\x`, "x": `\x`, "ca": []any{`\x`}}, j)
}
