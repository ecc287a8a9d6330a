package handlers

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// fixture: public.items (id text, sub text, name text, body text), key (id, sub).
func itemsTable() (*pglogrepl.RelationMessage, *dbsync.PGTableInfo) {
	names := []string{"id", "sub", "name", "body"}
	reln := &pglogrepl.RelationMessage{RelationID: 16385, Namespace: "public", RelationName: "items", ReplicaIdentity: 'd'}
	info := &dbsync.PGTableInfo{RelationID: 16385, Namespace: "public", TableName: "items", ColInfo: map[string]*dbsync.PGColumnInfo{},
		PrimaryKey: []string{"id", "sub"}, ReplicaIdentity: 'd'}
	for i, n := range names {
		var flags uint8
		kp := 0
		if i < 2 {
			flags, kp = 1, i+1
		}
		reln.Columns = append(reln.Columns, &pglogrepl.RelationMessageColumn{Flags: flags, Name: n, DataType: 25, TypeModifier: -1})
		col := &dbsync.PGColumnInfo{ColumnName: n, OrdinalPosition: i + 1, TypeOID: 25, ColumnType: "text", TypeModifier: -1, NotNull: i < 2, KeyPosition: kp}
		info.Columns = append(info.Columns, col)
		info.ColInfo[n] = col
	}
	reln.ColumnNum = uint16(len(names))
	return reln, info
}

// tup builds a tuple: "NULL" -> n, "<u>" -> u (unchanged TOAST), anything else -> t.
func tup(vals ...string) *pglogrepl.TupleData {
	t := &pglogrepl.TupleData{ColumnNum: uint16(len(vals))}
	for _, v := range vals {
		switch v {
		case "NULL":
			t.Columns = append(t.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeNull})
		case "<u>":
			t.Columns = append(t.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeToast})
		default:
			t.Columns = append(t.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Length: uint32(len(v)), Data: []byte(v)})
		}
	}
	return t
}

var (
	commitTime = time.Date(2026, 11, 21, 21, 53, 36, 123456000, time.UTC)
	begin1     = &pglogrepl.BeginMessage{FinalLSN: 0x16B3748, CommitTime: commitTime, Xid: 735}
	commit1    = &pglogrepl.CommitMessage{CommitLSN: 0x16B3748, TransactionEndLSN: 0x16B3780, CommitTime: commitTime}
)

// feed delivers one transaction of the standard script to h: insert, unchanged-TOAST
// update, key-changing update, delete, and a second transaction with a FULL old row.
func feed(t *testing.T, h dbsync.MessageHandler) {
	t.Helper()
	reln, info := itemsTable()
	require.NoError(t, h.HandleBeginMessage(0, begin1))
	require.NoError(t, h.HandleRelationMessage(1, reln, info))
	require.NoError(t, h.HandleInsertMessage(2, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup("1", "a", "first", "BIG")}, reln, info))
	require.NoError(t, h.HandleInsertMessage(3, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup("2", "a", "NULL", "x y")}, reln, info))
	// body not sent: unchanged TOAST value.
	require.NoError(t, h.HandleUpdateMessage(4, &pglogrepl.UpdateMessage{RelationID: 16385, NewTuple: tup("1", "a", "renamed", "<u>")}, reln, info))
	// key change 1/a -> 3/a, body unchanged again: must keep "BIG".
	require.NoError(t, h.HandleUpdateMessage(5, &pglogrepl.UpdateMessage{RelationID: 16385, OldTupleType: 'K',
		OldTuple: tup("1", "a", "NULL", "NULL"), NewTuple: tup("3", "a", "renamed", "<u>")}, reln, info))
	require.NoError(t, h.HandleDeleteMessage(6, &pglogrepl.DeleteMessage{RelationID: 16385, OldTupleType: 'K', OldTuple: tup("2", "a", "NULL", "NULL")}, reln, info))
	require.NoError(t, h.HandleCommitMessage(7, commit1))
}

func TestJSONLinesWriterUnit(t *testing.T) {
	var out bytes.Buffer
	w := NewJSONLinesWriter(&out)
	w.Relations = true
	feed(t, w)
	stamp := `"commit_lsn":"0/16B3748","xid":735,"commit_time":"2026-11-21T21:53:36.123456Z"`
	want := []string{
		`{"type":"relation",` + stamp + `,"schema":"public","table":"items","relation_id":16385,"replica_identity":"d","columns":[{"name":"id","type_oid":25,"type_modifier":-1,"key":true},{"name":"sub","type_oid":25,"type_modifier":-1,"key":true},{"name":"name","type_oid":25,"type_modifier":-1,"key":false},{"name":"body","type_oid":25,"type_modifier":-1,"key":false}]}`,
		`{"type":"change",` + stamp + `,"op":"insert","schema":"public","table":"items","key":{"id":"1","sub":"a"},"new":{"body":"BIG","id":"1","name":"first","sub":"a"},"old":null}`,
		`{"type":"change",` + stamp + `,"op":"insert","schema":"public","table":"items","key":{"id":"2","sub":"a"},"new":{"body":"x y","id":"2","name":null,"sub":"a"},"old":null}`,
		`{"type":"change",` + stamp + `,"op":"update","schema":"public","table":"items","key":{"id":"1","sub":"a"},"new":{"id":"1","name":"renamed","sub":"a"},"old":null,"unchanged":["body"]}`,
		`{"type":"change",` + stamp + `,"op":"update","schema":"public","table":"items","key":{"id":"3","sub":"a"},"old_key":{"id":"1","sub":"a"},"new":{"id":"3","name":"renamed","sub":"a"},"old":{"id":"1","sub":"a"},"unchanged":["body"]}`,
		`{"type":"change",` + stamp + `,"op":"delete","schema":"public","table":"items","key":{"id":"2","sub":"a"},"new":null,"old":{"id":"2","sub":"a"}}`,
	}
	require.Equal(t, strings.Join(want, "\n")+"\n", out.String())
}

func TestJSONLinesWriterWritesAtCommitOnly(t *testing.T) {
	reln, info := itemsTable()
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, 1<<16)
	w := NewJSONLinesWriter(bw)
	require.NoError(t, w.HandleBeginMessage(0, begin1))
	require.NoError(t, w.HandleInsertMessage(1, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup("1", "a", "x", "y")}, reln, info))
	require.Equal(t, 0, out.Len(), "nothing may be written before COMMIT")
	// A re-delivery of the same transaction starts with BEGIN again: the unfinished copy is dropped.
	require.NoError(t, w.HandleBeginMessage(0, begin1))
	require.NoError(t, w.HandleInsertMessage(1, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup("1", "a", "x", "y")}, reln, info))
	// A non-transactional message inside the decoded stream is written at once, alone.
	require.NoError(t, w.HandleLogicalMessage(2, &pglogrepl.LogicalDecodingMessage{LSN: 0x100, Transactional: false, Prefix: "p", Content: []byte{0xff, 0x00}}))
	require.Equal(t, `{"type":"message","lsn":"0/100","transactional":false,"prefix":"p","content_base64":"/wA="}`+"\n", out.String())
	out.Reset()
	require.NoError(t, w.HandleLogicalMessage(3, &pglogrepl.LogicalDecodingMessage{LSN: 0x200, Transactional: true, Prefix: "app", Content: []byte("hi")}))
	require.NoError(t, w.HandleTruncateMessage(4, &pglogrepl.TruncateMessage{RelationNum: 1, Option: pglogrepl.TruncateOptionCascade, RelationIDs: []uint32{16385}},
		[]*pglogrepl.RelationMessage{reln}, []*dbsync.PGTableInfo{info}))
	require.Equal(t, 0, out.Len())
	require.NoError(t, w.HandleCommitMessage(5, commit1))
	stamp := `"commit_lsn":"0/16B3748","xid":735,"commit_time":"2026-11-21T21:53:36.123456Z"`
	require.Equal(t, `{"type":"change",`+stamp+`,"op":"insert","schema":"public","table":"items","key":{"id":"1","sub":"a"},"new":{"body":"y","id":"1","name":"x","sub":"a"},"old":null}`+"\n"+
		`{"type":"message",`+stamp+`,"lsn":"0/200","transactional":true,"prefix":"app","content":"hi"}`+"\n"+
		`{"type":"truncate",`+stamp+`,"schema":"public","table":"items","cascade":true,"restart_identity":false}`+"\n", out.String())
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestJSONLinesWriterCommitFailsOnWriteError(t *testing.T) {
	reln, info := itemsTable()
	w := NewJSONLinesWriter(failWriter{})
	require.NoError(t, w.HandleBeginMessage(0, begin1))
	require.NoError(t, w.HandleInsertMessage(1, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup("1", "a", "x", "y")}, reln, info))
	err := w.HandleCommitMessage(2, commit1)
	require.ErrorContains(t, err, "disk full")
}

func TestEchoMessageHandlerUnit(t *testing.T) {
	var out bytes.Buffer
	e := NewEchoMessageHandler(&out)
	e.Relations = true
	feed(t, e)
	reln, info := itemsTable()
	// REPLICA IDENTITY FULL: whole old rows.
	require.NoError(t, e.HandleUpdateMessage(8, &pglogrepl.UpdateMessage{RelationID: 16385, OldTupleType: 'O',
		OldTuple: tup("3", "a", "renamed", "BIG"), NewTuple: tup("3", "a", "", "<u>")}, reln, info))
	require.NoError(t, e.HandleDeleteMessage(9, &pglogrepl.DeleteMessage{RelationID: 16385, OldTupleType: 'O', OldTuple: tup("3", "a", "", "BIG")}, reln, info))
	require.NoError(t, e.HandleTruncateMessage(10, &pglogrepl.TruncateMessage{Option: pglogrepl.TruncateOptionCascade | pglogrepl.TruncateOptionRestartIdentity},
		[]*pglogrepl.RelationMessage{reln, {Namespace: "s", RelationName: "t"}}, nil))
	require.NoError(t, e.HandleLogicalMessage(11, &pglogrepl.LogicalDecodingMessage{Transactional: true, Prefix: "app", Content: []byte("hello")}))
	want := []string{
		"BEGIN xid=735 commit_lsn=0/16B3748 commit_time=2026-11-21T21:53:36.123456Z",
		"RELATION public.items id=16385 replica_identity=d columns=id*,sub*,name,body",
		"INSERT public.items id=1 sub=a name=first body=BIG",
		`INSERT public.items id=2 sub=a name=NULL body="x y"`,
		"UPDATE public.items id=1 sub=a name=renamed body=<unchanged>",
		"UPDATE public.items id=3 sub=a name=renamed body=<unchanged> (old key: id=1 sub=a)",
		"DELETE public.items id=2 sub=a",
		"COMMIT commit_lsn=0/16B3748 end_lsn=0/16B3780",
		// The full old row (REPLICA IDENTITY FULL) fills the unchanged TOAST value in.
		`UPDATE public.items id=3 sub=a name="" body=BIG old: id=3 sub=a name=renamed body=BIG`,
		`DELETE public.items id=3 sub=a name="" body=BIG`,
		"TRUNCATE public.items,s.t cascade restart_identity",
		`MESSAGE transactional prefix=app content="hello"`,
	}
	require.Equal(t, strings.Join(want, "\n")+"\n", out.String())
}

func TestCacheUnit(t *testing.T) {
	c := NewCache()
	feed(t, c)
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.items": {
			`["3","a"]`: {"id": "3", "sub": "a", "name": "renamed", "body": "BIG"},
		},
	}, c.Snapshot())
	st := c.Stats()
	require.Equal(t, int64(1), st.Transactions)
	require.Equal(t, int64(5), st.Changes)
	require.Equal(t, int64(0), st.UnknownUnchanged)
	require.Equal(t, int64(2), st.KeptUnchanged)
	require.Equal(t, int64(1), st.KeyChanges)
	require.Equal(t, pglogrepl.LSN(0x16B3748), st.LastCommitLSN)

	// Re-delivery of the same transaction (at-least-once) leaves the same state.
	feed(t, c)
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.items": {`["3","a"]`: {"id": "3", "sub": "a", "name": "renamed", "body": "BIG"}},
	}, c.Snapshot())
	require.Equal(t, int64(1), c.Stats().Transactions)
	require.Equal(t, int64(1), c.Stats().Redelivered, "the same commit LSN: dropped")
	require.Equal(t, int64(5), c.Stats().Changes)
}

func TestCacheStagesUntilCommit(t *testing.T) {
	reln, info := itemsTable()
	c := NewCache()
	require.NoError(t, c.HandleBeginMessage(0, begin1))
	require.NoError(t, c.HandleInsertMessage(1, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup("1", "a", "x", "y")}, reln, info))
	require.Equal(t, 0, c.Len("public.items"), "a change is invisible before its COMMIT")
	// The transaction is abandoned (poll cut); its re-delivery starts with BEGIN.
	require.NoError(t, c.HandleBeginMessage(0, begin1))
	require.NoError(t, c.HandleInsertMessage(1, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup("2", "a", "x", "y")}, reln, info))
	require.NoError(t, c.HandleCommitMessage(2, commit1))
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.items": {`["2","a"]`: {"id": "2", "sub": "a", "name": "x", "body": "y"}}}, c.Snapshot())
}

func TestCacheUnchangedWithoutPreviousRow(t *testing.T) {
	reln, info := itemsTable()
	fullInfo := *info
	fullInfo.ReplicaIdentity = 'f'
	c := NewCache()
	require.NoError(t, c.HandleBeginMessage(0, begin1))
	// Row unknown to the cache, no old row: body cannot be known; it must not become NULL.
	require.NoError(t, c.HandleUpdateMessage(1, &pglogrepl.UpdateMessage{RelationID: 16385, NewTuple: tup("1", "a", "n", "<u>")}, reln, info))
	// Row unknown, REPLICA IDENTITY FULL old row supplies body.
	require.NoError(t, c.HandleUpdateMessage(2, &pglogrepl.UpdateMessage{RelationID: 16385, OldTupleType: 'O',
		OldTuple: tup("2", "a", "o", "OLDBIG"), NewTuple: tup("2", "a", "n", "<u>")}, reln, &fullInfo))
	require.NoError(t, c.HandleCommitMessage(3, commit1))
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.items": {
		`["1","a"]`: {"id": "1", "sub": "a", "name": "n"},
		`["2","a"]`: {"id": "2", "sub": "a", "name": "n", "body": "OLDBIG"},
	}}, c.Snapshot())
	require.Equal(t, int64(1), c.Stats().UnknownUnchanged)
}

func TestCacheTruncateAndRefresh(t *testing.T) {
	reln, info := itemsTable()
	c := &Cache{} // the zero value works too
	require.NoError(t, c.HandleRefresh(`["9","z"]`, dbsync.DBItem{Table: info, Key: `["9","z"]`, Values: dbsync.StringMap{"id": "9", "sub": "z", "name": "r", "body": nil}}))
	require.Equal(t, 1, c.Len("public.items"))
	row, ok := c.Row("public.items", `["9","z"]`)
	require.True(t, ok)
	require.Equal(t, dbsync.StringMap{"id": "9", "sub": "z", "name": "r", "body": nil}, row)
	row["name"] = "mutated"
	row2, _ := c.Row("public.items", `["9","z"]`)
	require.Equal(t, "r", row2["name"], "Row returns a copy")

	require.NoError(t, c.HandleBeginMessage(0, begin1))
	require.NoError(t, c.HandleTruncateMessage(1, &pglogrepl.TruncateMessage{RelationIDs: []uint32{16385}}, []*pglogrepl.RelationMessage{reln}, []*dbsync.PGTableInfo{info}))
	require.NoError(t, c.HandleInsertMessage(2, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup("1", "a", "x", "y")}, reln, info))
	require.Equal(t, 1, c.Len("public.items"))
	require.NoError(t, c.HandleCommitMessage(3, commit1))
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.items": {`["1","a"]`: {"id": "1", "sub": "a", "name": "x", "body": "y"}}}, c.Snapshot())
	require.Equal(t, int64(1), c.Stats().Truncates)
	require.Equal(t, info, c.TableInfo("public.items"))
	require.Error(t, c.HandleRefresh("k", dbsync.DBItem{}))
}

// tx returns a BEGIN and a COMMIT of a transaction committing at lsn.
func tx(lsn pglogrepl.LSN) (*pglogrepl.BeginMessage, *pglogrepl.CommitMessage) {
	return &pglogrepl.BeginMessage{FinalLSN: lsn, CommitTime: commitTime, Xid: uint32(lsn)},
		&pglogrepl.CommitMessage{CommitLSN: lsn, TransactionEndLSN: lsn + 0x30, CommitTime: commitTime}
}

// TestCacheRedeliveredTransactionsDropped: a transaction whose commit LSN is not after
// the last applied one was applied already; applying it again would regress rows
// (an older update over a later refresh row) or copy an unchanged TOASTed value from
// a later state. Refresh rows belong to the transaction they arrive in.
func TestCacheRedeliveredTransactionsDropped(t *testing.T) {
	reln, info := itemsTable()
	c := NewCache()
	deliver := func(lsn pglogrepl.LSN, msgs ...func() error) {
		t.Helper()
		b, cm := tx(lsn)
		require.NoError(t, c.HandleBeginMessage(0, b))
		for _, m := range msgs {
			require.NoError(t, m())
		}
		require.NoError(t, c.HandleCommitMessage(0, cm))
	}
	insert := func(vals ...string) func() error {
		return func() error {
			return c.HandleInsertMessage(0, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup(vals...)}, reln, info)
		}
	}
	update := func(vals ...string) func() error {
		return func() error {
			return c.HandleUpdateMessage(0, &pglogrepl.UpdateMessage{RelationID: 16385, NewTuple: tup(vals...)}, reln, info)
		}
	}
	refresh := func(name, body string) func() error {
		return func() error {
			return c.HandleRefresh(`["1","a"]`, dbsync.DBItem{Table: info, Key: `["1","a"]`, Values: dbsync.StringMap{"id": "1", "sub": "a", "name": name, "body": body}})
		}
	}
	row := func() dbsync.StringMap { r, _ := c.Row("public.items", `["1","a"]`); return r }

	deliver(0x100, insert("1", "a", "v1", "B1"))
	deliver(0x200, update("1", "a", "v2", "<u>"))
	// The high watermark's transaction: its refresh row is applied at its COMMIT.
	b3, c3 := tx(0x300)
	require.NoError(t, c.HandleBeginMessage(0, b3))
	require.NoError(t, refresh("v3", "B3")())
	require.Equal(t, dbsync.StringMap{"id": "1", "sub": "a", "name": "v2", "body": "B1"}, row(), "a refresh row is invisible before its COMMIT")
	require.NoError(t, c.HandleCommitMessage(0, c3))
	require.Equal(t, dbsync.StringMap{"id": "1", "sub": "a", "name": "v3", "body": "B3"}, row())

	// 0x200 comes again (the slot fell back): it must not undo the refresh row, nor
	// copy B3 as its unchanged body.
	deliver(0x200, update("1", "a", "v2", "<u>"))
	require.Equal(t, dbsync.StringMap{"id": "1", "sub": "a", "name": "v3", "body": "B3"}, row())
	// 0x300 comes again with its refresh row (the selection was not completed): the
	// row must not go back over what 0x400 applied.
	deliver(0x400, update("1", "a", "v4", "<u>"))
	deliver(0x300, refresh("v3", "B3"))
	require.Equal(t, dbsync.StringMap{"id": "1", "sub": "a", "name": "v4", "body": "B3"}, row())
	// A new transaction applies.
	deliver(0x500, update("1", "a", "v5", "B5"))
	require.Equal(t, dbsync.StringMap{"id": "1", "sub": "a", "name": "v5", "body": "B5"}, row())

	st := c.Stats()
	require.Equal(t, int64(5), st.Transactions)
	require.Equal(t, int64(2), st.Redelivered)
	require.Equal(t, int64(4), st.Changes)
	require.Equal(t, int64(1), st.Refreshes)
	require.Equal(t, int64(2), st.KeptUnchanged)
	require.Equal(t, pglogrepl.LSN(0x500), st.LastCommitLSN)

	// Outside a transaction a refresh row is applied at once.
	require.NoError(t, refresh("r", "R")())
	require.Equal(t, dbsync.StringMap{"id": "1", "sub": "a", "name": "r", "body": "R"}, row())
	require.Equal(t, int64(2), c.Stats().Refreshes)
}

// TestCacheOneFeeder: a Cache is fed by one Syncer. Two feeders interleaving their
// transactions used to share the staged changes silently (B's BEGIN dropped A's
// insert); the sequences one Syncer never delivers are now errors wrapping
// ErrCacheSequence, and re-deliveries one Syncer does deliver still work.
func TestCacheOneFeeder(t *testing.T) {
	reln, info := itemsTable()
	insert := func(c *Cache, id string) error {
		return c.HandleInsertMessage(1, &pglogrepl.InsertMessage{RelationID: 16385, Tuple: tup(id, "a", "x", "y")}, reln, info)
	}
	bA, cA := tx(0x100)
	bB, cB := tx(0x200)

	// The reviewer's interleaving, both transactions at the same LSN: B's BEGIN looks
	// like A's re-delivery, so A's insert is dropped; B's COMMIT then has no BEGIN.
	c := NewCache()
	require.NoError(t, c.HandleBeginMessage(0, begin1))   // A
	require.NoError(t, insert(c, "1"))                    // A
	require.NoError(t, c.HandleBeginMessage(0, begin1))   // B
	require.NoError(t, c.HandleCommitMessage(2, commit1)) // A
	err := c.HandleCommitMessage(2, commit1)              // B
	require.ErrorIs(t, err, ErrCacheSequence)
	require.EqualError(t, err, "handlers: Cache: messages out of transaction order (a Cache must be fed by one Syncer): COMMIT at 0/16B3748 without its BEGIN")

	// B begins a later transaction while A's is open.
	c = NewCache()
	require.NoError(t, c.HandleBeginMessage(0, bA))
	require.NoError(t, insert(c, "1"))
	err = c.HandleBeginMessage(0, bB)
	require.ErrorIs(t, err, ErrCacheSequence)
	require.EqualError(t, err, "handlers: Cache: messages out of transaction order (a Cache must be fed by one Syncer): BEGIN of the transaction committing at 0/200 while the one committing at 0/100 is open")
	// The open transaction was dropped: A's COMMIT fails too, and nothing was applied.
	require.ErrorIs(t, c.HandleCommitMessage(0, cA), ErrCacheSequence)
	require.Empty(t, c.Snapshot())

	// B begins an earlier transaction while A's is open: taken for a re-delivery, so A
	// is dropped, and A's COMMIT does not match the open transaction.
	c = NewCache()
	require.NoError(t, c.HandleBeginMessage(0, bB))
	require.NoError(t, insert(c, "2"))
	require.NoError(t, c.HandleBeginMessage(0, bA))
	require.NoError(t, insert(c, "1"))
	err = c.HandleCommitMessage(0, cB)
	require.ErrorIs(t, err, ErrCacheSequence)
	require.EqualError(t, err, "handlers: Cache: messages out of transaction order (a Cache must be fed by one Syncer): COMMIT at 0/200 while the transaction committing at 0/100 is open")
	require.Empty(t, c.Snapshot())

	// Changes and TRUNCATE outside a transaction.
	c = NewCache()
	err = insert(c, "1")
	require.ErrorIs(t, err, ErrCacheSequence)
	require.EqualError(t, err, "handlers: Cache: messages out of transaction order (a Cache must be fed by one Syncer): INSERT of public.items outside a transaction")
	err = c.HandleTruncateMessage(0, &pglogrepl.TruncateMessage{RelationIDs: []uint32{16385}}, []*pglogrepl.RelationMessage{reln}, []*dbsync.PGTableInfo{info})
	require.ErrorIs(t, err, ErrCacheSequence)
	require.Equal(t, int64(0), c.Stats().Transactions)

	// What one Syncer does deliver: a transaction cut off and delivered again from its
	// BEGIN, and after a failed forward an earlier transaction again.
	c = NewCache()
	require.NoError(t, c.HandleBeginMessage(0, bA))
	require.NoError(t, insert(c, "1"))
	require.NoError(t, c.HandleCommitMessage(0, cA))
	require.NoError(t, c.HandleBeginMessage(0, bB))
	require.NoError(t, insert(c, "2"))
	require.NoError(t, c.HandleBeginMessage(0, bA)) // slot forwarded only before A
	require.NoError(t, insert(c, "1"))
	require.NoError(t, c.HandleCommitMessage(0, cA))
	require.NoError(t, c.HandleBeginMessage(0, bB))
	require.NoError(t, insert(c, "2"))
	require.NoError(t, c.HandleCommitMessage(0, cB))
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.items": {
		`["1","a"]`: {"id": "1", "sub": "a", "name": "x", "body": "y"},
		`["2","a"]`: {"id": "2", "sub": "a", "name": "x", "body": "y"},
	}}, c.Snapshot())
	st := c.Stats()
	require.Equal(t, int64(2), st.Transactions)
	require.Equal(t, int64(1), st.Redelivered)
	require.Equal(t, int64(2), st.Changes)
}

// shape builds the RELATION message and description of table public.<name> with
// relation OID oid, text columns cols, keyed by the first.
func shape(oid uint32, name string, cols ...string) (*pglogrepl.RelationMessage, *dbsync.PGTableInfo) {
	reln := &pglogrepl.RelationMessage{RelationID: oid, Namespace: "public", RelationName: name, ReplicaIdentity: 'd', ColumnNum: uint16(len(cols))}
	info := &dbsync.PGTableInfo{RelationID: oid, Namespace: "public", TableName: name, ColInfo: map[string]*dbsync.PGColumnInfo{},
		PrimaryKey: cols[:1], ReplicaIdentity: 'd'}
	for i, n := range cols {
		var flags uint8
		if i == 0 {
			flags = 1
		}
		reln.Columns = append(reln.Columns, &pglogrepl.RelationMessageColumn{Flags: flags, Name: n, DataType: 25, TypeModifier: -1})
		col := &dbsync.PGColumnInfo{ColumnName: n, OrdinalPosition: i + 1, TypeOID: 25, ColumnType: "text", TypeModifier: -1, NotNull: i == 0, KeyPosition: 1 - min(i, 1)}
		info.Columns = append(info.Columns, col)
		info.ColInfo[n] = col
	}
	return reln, info
}

// TestCacheSchemaChanges: the Cache follows RELATION messages in transaction order:
// a dropped column leaves every cached row, an added one is missing from rows cached
// before it, a renamed table takes its rows along, and a new table under a freed name
// starts empty.
func TestCacheSchemaChanges(t *testing.T) {
	c := NewCache()
	deliver := func(lsn pglogrepl.LSN, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo, tuples ...*pglogrepl.TupleData) {
		t.Helper()
		b, cm := tx(lsn)
		require.NoError(t, c.HandleBeginMessage(0, b))
		require.NoError(t, c.HandleRelationMessage(0, reln, info))
		for _, tu := range tuples {
			require.NoError(t, c.HandleUpdateMessage(0, &pglogrepl.UpdateMessage{RelationID: reln.RelationID, NewTuple: tu}, reln, info))
		}
		require.NoError(t, c.HandleCommitMessage(0, cm))
	}
	v1r, v1 := shape(16385, "items", "id", "name", "body")
	deliver(0x100, v1r, v1, tup("1", "a", "x"), tup("2", "b", "y"))
	// ALTER TABLE items DROP COLUMN body: row 2, not changed since, loses it too.
	v2r, v2 := shape(16385, "items", "id", "name")
	deliver(0x200, v2r, v2, tup("1", "c"))
	want := map[string]map[string]dbsync.StringMap{"public.items": {
		`["1"]`: {"id": "1", "name": "c"},
		`["2"]`: {"id": "2", "name": "b"},
	}}
	require.Equal(t, want, c.Snapshot())
	require.Equal(t, int64(1), c.Stats().DroppedColumns)
	// The RELATION of an old shape in a re-delivered transaction changes nothing.
	deliver(0x100, v1r, v1, tup("1", "a", "x"))
	require.Equal(t, want, c.Snapshot())

	// ADD COLUMN extra: rows cached before lack it until they change.
	v3r, v3 := shape(16385, "items", "id", "name", "extra")
	deliver(0x300, v3r, v3, tup("3", "d", "e3"))
	want["public.items"][`["3"]`] = dbsync.StringMap{"id": "3", "name": "d", "extra": "e3"}
	require.Equal(t, want, c.Snapshot())

	// ALTER TABLE items RENAME TO things: the rows move with the table's OID.
	v4r, v4 := shape(16385, "things", "id", "name", "extra")
	deliver(0x400, v4r, v4, tup("2", "f", "e2"))
	want = map[string]map[string]dbsync.StringMap{"public.things": {
		`["1"]`: {"id": "1", "name": "c"},
		`["2"]`: {"id": "2", "name": "f", "extra": "e2"},
		`["3"]`: {"id": "3", "name": "d", "extra": "e3"},
	}}
	require.Equal(t, want, c.Snapshot())
	require.Equal(t, v4, c.TableInfo("public.things"))
	require.Nil(t, c.TableInfo("public.items"))
	require.Equal(t, 0, c.Len("public.items"))

	// CREATE TABLE items again (a new OID): it starts empty.
	n1r, n1 := shape(16400, "items", "k", "v")
	deliver(0x500, n1r, n1, tup("9", "new"))
	want["public.items"] = map[string]dbsync.StringMap{`["9"]`: {"k": "9", "v": "new"}}
	require.Equal(t, want, c.Snapshot())

	// Swap the names (things -> items, items -> things): each table keeps its rows.
	s1r, s1 := shape(16385, "items", "id", "name", "extra")
	deliver(0x600, s1r, s1, tup("3", "g", "e3"))
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.items": {
		`["1"]`: {"id": "1", "name": "c"},
		`["2"]`: {"id": "2", "name": "f", "extra": "e2"},
		`["3"]`: {"id": "3", "name": "g", "extra": "e3"},
	}}, c.Snapshot(), "public.things, the new table, is out of sight until its next RELATION")
	s2r, s2 := shape(16400, "things", "k", "v")
	deliver(0x700, s2r, s2, tup("8", "new2"))
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.items": {
			`["1"]`: {"id": "1", "name": "c"},
			`["2"]`: {"id": "2", "name": "f", "extra": "e2"},
			`["3"]`: {"id": "3", "name": "g", "extra": "e3"},
		},
		"public.things": {`["9"]`: {"k": "9", "v": "new"}, `["8"]`: {"k": "8", "v": "new2"}},
	}, c.Snapshot())
	st := c.Stats()
	require.Equal(t, int64(1), st.DroppedColumns)
	require.Equal(t, int64(7), st.Transactions)
	require.Equal(t, int64(1), st.Redelivered)
}
