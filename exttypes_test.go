package dbsync

import (
	"context"
	"strconv"
	"testing"

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
