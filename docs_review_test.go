package dbsync

import (
	"context"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// TestDocsTypeTableRest pins the rows of docs/VALUES.md's "PostgreSQL type -> Go type"
// table that TestAllTypesRoundTrip does not spot-check, in both modes and for the
// refresh row: xid/cid/xid8, aclitem, "char", uuid, date, timestamp, time (24:00:00),
// inet/cidr, macaddr, bit/varbit, the geometric types and tid, empty bytea, a
// multirange.
func TestDocsTypeTableRest(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE tt (id int PRIMARY KEY,
		x xid, c cid, x8 xid8, acl aclitem, ch "char", u uuid, dt date, ts timestamp, tm time,
		i1 inet, i2 inet, cd cidr, mac macaddr, b bit(3), vb varbit, pt point, ln line, ls lseg,
		bx box, pa path, pg polygon, ci circle, tid tid, by bytea, mr int4multirange)`)
	acl := queryStrings(t, d.DB, `SELECT makeaclitem(0, (SELECT oid FROM pg_roles WHERE rolname = current_user), 'SELECT', false)::text`)[0]
	insert := `INSERT INTO tt VALUES (1, '123', '5', '18446744073709551615', '` + acl + `', 'z',
		'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-02-29 13:14:15.123456', '24:00:00',
		'10.0.0.1', '192.168.1.5/24', '10.1.0.0/16', '08:00:2b:01:02:03', B'101', B'11', '(1.5,-2)', '{1,2,3}',
		'[(0,0),(1,1)]', '(3,4),(1,2)', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(2,0))', '<(1,2),3>', '(7,9)',
		'\x', '{[1,3),[5,7)}')`
	vec := func(x, y float64) pgtype.Vec2 { return pgtype.Vec2{X: x, Y: y} }
	want := StringMap{
		"id": int32(1), "x": uint32(123), "c": uint32(5), "x8": uint64(18446744073709551615), "acl": acl,
		"ch": int32('z'),
		"u":  [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11},
		"dt": time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC),
		"ts": time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC),
		"tm": pgtype.Time{Microseconds: 24 * 3600 * 1e6, Valid: true},
		"i1": netip.MustParsePrefix("10.0.0.1/32"), "i2": netip.MustParsePrefix("192.168.1.5/24"),
		"cd":  netip.MustParsePrefix("10.1.0.0/16"),
		"mac": net.HardwareAddr{0x08, 0x00, 0x2b, 0x01, 0x02, 0x03},
		"b":   pgtype.Bits{Bytes: []byte{0xa0}, Len: 3, Valid: true},
		"vb":  pgtype.Bits{Bytes: []byte{0xc0}, Len: 2, Valid: true},
		"pt":  pgtype.Point{P: vec(1.5, -2), Valid: true},
		"ln":  pgtype.Line{A: 1, B: 2, C: 3, Valid: true},
		"ls":  pgtype.Lseg{P: [2]pgtype.Vec2{vec(0, 0), vec(1, 1)}, Valid: true},
		"bx":  pgtype.Box{P: [2]pgtype.Vec2{vec(3, 4), vec(1, 2)}, Valid: true},
		"pa":  pgtype.Path{P: []pgtype.Vec2{vec(0, 0), vec(1, 1), vec(2, 0)}, Closed: false, Valid: true},
		"pg":  pgtype.Polygon{P: []pgtype.Vec2{vec(0, 0), vec(1, 1), vec(2, 0)}, Valid: true},
		"ci":  pgtype.Circle{P: vec(1, 2), R: 3, Valid: true},
		"tid": pgtype.TID{BlockNumber: 7, OffsetNumber: 9, Valid: true},
		"by":  []byte{},
		"mr": pgtype.Multirange[pgtype.Range[any]]{
			{Lower: int32(1), Upper: int32(3), LowerType: pgtype.Inclusive, UpperType: pgtype.Exclusive, Valid: true},
			{Lower: int32(5), Upper: int32(7), LowerType: pgtype.Inclusive, UpperType: pgtype.Exclusive, Valid: true},
		},
	}
	requireChangeAndRefreshBothModes(t, d, "tt", insert, want)
}

// TestDocsUnknownValueTypes: docs/VALUES.md says built-ins pgx has no codec for
// (money, timetz, tsquery, pg_lsn), composite and user-defined range types arrive as
// UnknownValue{Type: format_type, Text: output function's text} in text mode.
func TestDocsUnknownValueTypes(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TYPE floatrange AS RANGE (subtype = float8)`,
		`CREATE TABLE ut (id int PRIMARY KEY, tz timetz, q tsquery, l pg_lsn, fr floatrange, n numeric(5,2)[])`)
	got, refreshed, _ := changeAndRefresh(t, d, "ut",
		`INSERT INTO ut VALUES (1, '13:14:15+05:30', 'a & !b', '16/B374D848', '[1.5,2.5)', '{1.5}')`, false)
	want := StringMap{"id": int32(1),
		"tz": UnknownValue{Type: "time with time zone", Text: "13:14:15+05:30"},
		"q":  UnknownValue{Type: "tsquery", Text: `'a' & !'b'`},
		"l":  UnknownValue{Type: "pg_lsn", Text: "16/B374D848"},
		"fr": UnknownValue{Type: "floatrange", Text: "[1.5,2.5)"},
		"n":  []any{pgtype.Numeric{Int: big.NewInt(150), Exp: -2, Valid: true}},
	}
	requireSameRow(t, want, got, "change")
	requireSameRow(t, want, refreshed, "refresh row")
}

// TestDocsEventsProcessorRefusesSelections: docs/SNAPSHOTS.md, "API": an
// EventsProcessor gets raw rows and cannot take refresh rows, so Refresh, RefreshContext
// and Snapshot are ErrConfig, before they write anything (no watermark row, no
// snapshot_progress row).
func TestDocsEventsProcessorRefusesSelections(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ep (id int PRIMARY KEY)`, `INSERT INTO ep VALUES (1)`)
	s := newTestSyncer(t, d, ForTables("ep"),
		WithEventsProcessor(func(msgs []PGMSG, err error) (int, bool) { return len(msgs), false }))
	r := runInBackground(s)
	defer r.stop(t)
	ctx := context.Background()
	require.ErrorIs(t, s.Snapshot(ctx, "ep"), ErrConfig)
	_, err := s.RefreshContext(ctx, `SELECT * FROM ep`)
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorIs(t, s.Refresh(`SELECT * FROM ep`), ErrConfig)
	require.Equal(t, []string{"0", "0"}, queryStrings(t, d.DB,
		`SELECT count(*)::text FROM dbsync_ctrl.dbsync_wmtable UNION ALL SELECT count(*)::text FROM dbsync_ctrl.snapshot_progress`))
}

// TestDocsChangeOldOnUnchangedToastedKey: Change.Old's docstring said a 'K' old tuple
// comes on update "only when the key changed"; PostgreSQL also sends one for an UPDATE
// that leaves a key stored out of line unchanged (DecodeChange's docstring says so), so
// Old is the key there while OldKey stays "": a consumer must not take a non-nil Old as
// "the key changed".
func TestDocsChangeOldOnUnchangedToastedKey(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE tk (k text PRIMARY KEY, v int)`,
		`ALTER TABLE tk ALTER COLUMN k SET STORAGE EXTERNAL`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("tk"), WithMessageHandler(rec))
	r := runInBackground(s)
	defer r.stop(t)
	// 2,496 bytes: over the heap's TOAST threshold (stored out of line, uncompressed),
	// under the btree's 2,704-byte limit.
	const k = `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 78) i)`
	long := queryStrings(t, d.DB, `SELECT `+k)[0]
	execAll(t, d.DB, `INSERT INTO tk VALUES (`+k+`, 1)`, `UPDATE tk SET v = 2`)
	toast := queryStrings(t, d.DB, `SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'tk'::regclass`)[0]
	require.NotEqual(t, []string{"0"}, queryStrings(t, d.DB, `SELECT count(*)::text FROM `+toast), "the key is stored out of line")
	ch := rec.waitChanges(t, 2)
	require.Equal(t, OpUpdate, ch[1].Op)
	require.Equal(t, `["`+long+`"]`, ch[1].Key)
	require.Equal(t, "", ch[1].OldKey)
	require.Equal(t, StringMap{"k": long, "v": int32(2)}, ch[1].New)
	require.Equal(t, StringMap{"k": long}, ch[1].Old)
}

// TestDocsScanTupleIntoStringByMode pins docs/VALUES.md's "Typed scanning" paragraph
// on pgtype's scans into *string: a uuid, numeric or float8 gives the same text in
// both modes; timestamptz, date, interval, bool, inet, bytea, arrays and ranges fail
// with ErrDecodeValue in binary mode; a "char" from 0x80 on gives its raw byte in
// binary mode instead of the output function's \ooo.
func TestDocsScanTupleIntoStringByMode(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ss (id int8 PRIMARY KEY, u uuid, n numeric, f float8,
		tz timestamptz, dt date, iv interval, b bool, i inet, by bytea, a int4[], r int4range, c "char")`)
	const insert = `INSERT INTO ss VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1.50, 0.1,
		'2024-03-01 12:34:56+00', '2024-03-01', '1 day', true, '10.0.0.1', '\x01', '{1,2}', '[1,3)', CAST(-56 AS "char"))`
	same := map[string]string{"u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "n": "1.50", "f": "0.1"}
	failBinary := []string{"tz", "dt", "iv", "b", "i", "by", "a", "r"}
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			execAll(t, d.DB, `DELETE FROM ss`)
			rec := &changeRecorder{}
			s := newTestSyncer(t, d, ForTables("ss"), WithMessageHandler(rec), WithBinary(binary),
				WithReplicationSlot(pgtest.Ident(t, fmt.Sprintf("slot_%v", binary))))
			r := runInBackground(s)
			defer r.stop(t)
			execAll(t, d.DB, insert)
			rec.waitChanges(t, 1)
			tup := rec.tuple(0)
			_, info, err := s.dec.relation(tup.reln.RelationID)
			require.NoError(t, err)
			idx := map[string]int{}
			for i, c := range tup.reln.Columns {
				idx[c.Name] = i
			}
			scan := func(col string) (string, error) {
				dest := make([]any, len(tup.reln.Columns))
				var out string
				dest[idx[col]] = &out
				return out, info.ScanTuple(tup.reln, tup.tuple, dest...)
			}
			for col, want := range same {
				got, err := scan(col)
				require.NoError(t, err, col)
				require.Equal(t, want, got, col)
			}
			for _, col := range failBinary {
				got, err := scan(col)
				if binary {
					require.ErrorIs(t, err, ErrDecodeValue, col)
				} else {
					require.NoError(t, err, col)
					require.NotEmpty(t, got, col)
				}
			}
			got, err := scan("c")
			require.NoError(t, err)
			if binary {
				require.Equal(t, "\xc8", got)
			} else {
				require.Equal(t, `\310`, got)
			}
		})
	}
}

// TestDocsWakeCutsIdleBackoffShort: README, "Idle cost and latency": Wake() cuts an
// idle wait short. After a peek that found nothing of the publication (another
// table's write) the poller waits DelayBetweenPeekRetries, here an hour; a change of
// the published table then arrives only because of Wake.
func TestDocsWakeCutsIdleBackoffShort(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE pubd (id int PRIMARY KEY)`, `CREATE TABLE other (id int PRIMARY KEY)`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("pubd"), WithMessageHandler(rec), WithPollBackoff(time.Hour, 1, time.Hour))
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB, `INSERT INTO other VALUES (1)`)
	waitCaughtUp(t, d.DB, pgtest.Ident(t, "slot")) // the empty peek forwarded the slot; now an hour's wait
	execAll(t, d.DB, `INSERT INTO pubd VALUES (7)`)
	s.Wake()
	ch := rec.waitChanges(t, 1)
	require.Equal(t, `["7"]`, ch[0].Key)
}

// TestDocsCtrlSchemaSharedWithTables: the control schema may be one that holds the
// user's tables (WithCtrlNamespace("public")). Only dbsync's own tables there (the
// watermark table and snapshot_progress, both published here: FOR ALL TABLES) are
// swallowed; the user's tables in that schema are delivered. Before, every change of
// the schema was swallowed, and the slot forwarded past it: lost for good.
func TestDocsCtrlSchemaSharedWithTables(t *testing.T) {
	d := pgtest.NewDatabase(t)
	pub := pgtest.Ident(t, "pub")
	execAll(t, d.DB, `CREATE TABLE shared (id int PRIMARY KEY, v text)`, `INSERT INTO shared VALUES (0, 'old')`,
		`CREATE PUBLICATION `+pub+` FOR ALL TABLES`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, WithPublication(pub), WithMessageHandler(rec), WithCtrlNamespace("public"))
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB, `INSERT INTO shared VALUES (1, 'a')`, `UPDATE shared SET v = 'b' WHERE id = 1`, `DELETE FROM shared WHERE id = 1`)
	rec.waitChanges(t, 3)
	require.NoError(t, s.Snapshot(context.Background(), "shared"))
	require.Equal(t, []string{"1"}, queryStrings(t, d.DB, `SELECT count(*)::text FROM public.snapshot_progress WHERE finished_at IS NOT NULL`))
	execAll(t, d.DB, `INSERT INTO shared VALUES (2, 'c')`)
	rec.waitChanges(t, 4)
	_, events := rec.snapshot()
	var changes []string
	for _, e := range events {
		if strings.HasPrefix(e, "RELATION ") {
			// Once per poll that carries a change of the table; never dbsync's tables.
			require.Equal(t, "RELATION public.shared (id:integer,v:text) key=[id]", e)
			continue
		}
		changes = append(changes, e)
	}
	require.Equal(t, []string{`INSERT shared ["1"]`, `UPDATE shared ["1"]`, `DELETE shared ["1"]`, `INSERT shared ["2"]`}, changes)
}

// TestDocsAllNullCompositeIsAValue: docs/VALUES.md, "Keying rows read with SQL": a
// composite whose fields are all NULL IS NULL in SQL but is a value, and SelectList
// tells it from NULL (num_nulls): the change, the refresh row and ScanRow give the
// same UnknownValue "(,)", and a NULL column stays nil.
func TestDocsAllNullCompositeIsAValue(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TYPE pair AS (a int, b text)`, `CREATE TABLE cp (id int PRIMARY KEY, p pair, q pair)`)
	want := StringMap{"id": int32(1), "p": UnknownValue{Type: "pair", Text: "(,)"}, "q": nil}
	got, refreshed, info := changeAndRefresh(t, d, "cp", `INSERT INTO cp VALUES (1, ROW(NULL, NULL), NULL)`, false)
	requireSameRow(t, want, got, "change")
	requireSameRow(t, want, refreshed, "refresh row")
	rows, err := d.DB.Query(`SELECT ` + info.SelectList() + ` FROM ` + info.QuotedName())
	require.NoError(t, err)
	defer rows.Close()
	require.True(t, rows.Next())
	scanned, err := info.ScanRow(rows)
	require.NoError(t, err)
	requireSameRow(t, want, scanned, "ScanRow")
}

// TestDocsRefreshErrorsAfterCancelAndClose: ErrConfig means a bad query or setting
// (errors.go; SNAPSHOTS.md "Errors"). A RefreshContext whose context has ended is
// ErrRefreshAbandoned with the context's error (RefreshContext's docstring), and a
// Refresh or Snapshot after Close is ErrRefreshAbandoned wrapping ErrClosed, as for
// one waiting when Close came. Before, the cancelled Refresh was "invalid
// configuration: Refresh query: context canceled", and after Close both were
// "sql: database is closed" (the Refresh's also ErrConfig).
func TestDocsRefreshErrorsAfterCancelAndClose(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rc (id int PRIMARY KEY)`, `INSERT INTO rc VALUES (1)`)
	s := newTestSyncer(t, d, ForTables("rc"), WithMessageHandler(DefaultMessageHandler{}))
	r := runInBackground(s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.RefreshContext(ctx, `SELECT * FROM rc`)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ErrConfig)
	err = s.Snapshot(ctx, "rc")
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ErrConfig)

	require.NoError(t, r.stop(t))
	require.NoError(t, s.Close())
	_, err = s.RefreshContext(context.Background(), `SELECT * FROM rc`)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, ErrClosed)
	require.NotErrorIs(t, err, ErrConfig)
	err = s.Snapshot(context.Background(), "rc")
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, ErrClosed)
}

// TestDocsJSONRowOtherTypes pins what JSONRow gives for the types docs/VALUES.md
// sums up as "other types": their text form as pgx writes it, which PostgreSQL reads
// back as the same value but which is not always the server's output text (an
// interval, a time's fraction, an inet's /32); "char" stays its code, a number.
func TestDocsJSONRowOtherTypes(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE jt (id int PRIMARY KEY, x8 xid8, ch "char", tm time, i1 inet, b bit(3),
		pt point, tid tid, iv interval)`)
	const insert = `INSERT INTO jt VALUES (1, '18446744073709551615', 'z', '24:00:00', '10.0.0.1', B'101',
		'(1.5,-2)', '(7,9)', '1 year 2 mons -3 days 04:05:06.000007')`
	want := map[string]any{"id": int32(1), "x8": "18446744073709551615", "ch": int32('z'), "tm": "24:00:00.000000",
		"i1": "10.0.0.1/32", "b": "101", "pt": "(1.5,-2)", "tid": "(7,9)", "iv": "14 mon -3 day 04:05:06.000007"}
	for _, binary := range []bool{false, true} {
		got, _, info := changeAndRefresh(t, d, "jt", insert, binary)
		j, err := info.JSONRow(got)
		require.NoError(t, err)
		require.Equal(t, want, j, "binary=%v", binary)
		// PostgreSQL reads each text back as the value it came from.
		for _, col := range []string{"tm", "i1", "iv"} {
			require.Equal(t, []string{"true"}, queryStrings(t, d.DB,
				fmt.Sprintf(`SELECT (%s = CAST($1 AS %s))::text FROM jt`, col, info.ColInfo[col].TypeName), j[col]), col)
		}
	}
}

// TestDocsRefreshRunsReadOnly: docs/SNAPSHOTS.md says a Refresh query runs in a READ
// ONLY transaction: one that calls a writing function (nextval) fails with ErrConfig,
// writes nothing and leaves no watermark row.
func TestDocsRefreshRunsReadOnly(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ro (id int PRIMARY KEY)`, `INSERT INTO ro VALUES (1)`, `CREATE SEQUENCE sq`)
	s := newTestSyncer(t, d, ForTables("ro"), WithMessageHandler(DefaultMessageHandler{}))
	r := runInBackground(s)
	defer r.stop(t)
	_, err := s.RefreshContext(context.Background(), `SELECT id, nextval('sq') AS n FROM ro`)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "read-only transaction (25006)")
	require.Equal(t, []string{"1 false"}, queryStrings(t, d.DB, `SELECT last_value || ' ' || is_called FROM sq`))
	require.Equal(t, []string{"0"}, queryStrings(t, d.DB, `SELECT count(*)::text FROM dbsync_ctrl.dbsync_wmtable`))
}

// TestDocsRefreshTimeoutDuringSelect: a RefreshContext whose context ends while its
// SELECT runs is ErrRefreshAbandoned with the context's error (RefreshContext's
// docstring), not ErrConfig. Before, through lib/pq, it was "invalid configuration:
// selection query on public.rt: run selection: pq: canceling statement due to user
// request (57014)": the server's answer to the driver's cancel request read as a
// query the server refused, and context.DeadlineExceeded was not in the chain.
func TestDocsRefreshTimeoutDuringSelect(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rt (id int PRIMARY KEY)`, `INSERT INTO rt VALUES (1)`)
	s := newTestSyncer(t, d, ForTables("rt"), WithMessageHandler(DefaultMessageHandler{}))
	r := runInBackground(s)
	defer r.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := s.RefreshContext(ctx, `SELECT id, pg_sleep(30)::text AS s FROM rt`)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, ErrConfig)
	require.Equal(t, []string{"0"}, queryStrings(t, d.DB, `SELECT count(*)::text FROM dbsync_ctrl.dbsync_wmtable`))
}

// TestDocsTableNamesNameTables: Snapshot and TableInfo take a table's name, and a name
// that is no table is ErrConfig (Snapshot's and TableInfo's docstrings). A one-part
// name was looked up with to_regclass, which finds any relation: a view, an index or
// a sequence was described as a table, and Snapshot of it failed with ErrNoPrimaryKey
// advising ALTER TABLE "public"."vt_pkey" ADD PRIMARY KEY. The two-part name of the
// same relation was ErrConfig ("does not exist"); both now say what it is.
func TestDocsTableNamesNameTables(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE vt (id int PRIMARY KEY)`, `INSERT INTO vt VALUES (1)`,
		`CREATE VIEW vv AS SELECT * FROM vt`, `CREATE SEQUENCE vs`)
	s := newTestSyncer(t, d, ForTables("vt"), WithMessageHandler(DefaultMessageHandler{}))
	r := runInBackground(s)
	defer r.stop(t)
	ctx := context.Background()
	for name, what := range map[string]string{"vv": "a view", "public.vv": "a view", `"vv"`: "a view",
		"vt_pkey": "an index", "public.vt_pkey": "an index", "vs": "a sequence", "public.vs": "a sequence"} {
		err := s.Snapshot(ctx, name)
		require.ErrorIs(t, err, ErrConfig, name)
		require.Contains(t, err.Error(), "is "+what+", not a table", name)
		_, err = s.TableInfo(ctx, name)
		require.ErrorIs(t, err, ErrConfig, name)
	}
	_, err := s.TableInfo(ctx, "nosuch")
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), `table "nosuch" does not exist`)
	require.NoError(t, s.Snapshot(ctx, "vt"))
}

// TestDocsReplicaIdentityIndexDropped: docs/VALUES.md, "Replica identity": setup
// reports a table whose REPLICA IDENTITY USING INDEX names a dropped index (PostgreSQL
// keeps relreplident 'i'; its UPDATEs and DELETEs then fail on the primary), with the
// statement that fixes it.
func TestDocsReplicaIdentityIndexDropped(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rid (id int PRIMARY KEY, x int NOT NULL)`, `CREATE UNIQUE INDEX rid_x ON rid (x)`,
		`ALTER TABLE rid REPLICA IDENTITY USING INDEX rid_x`, `DROP INDEX rid_x`)
	require.Equal(t, []string{"i"}, queryStrings(t, d.DB, `SELECT relreplident::text FROM pg_class WHERE relname = 'rid'`))
	s := newTestSyncer(t, d, ForTables("rid"), WithMessageHandler(DefaultMessageHandler{}))
	problems, err := s.CheckReplicaIdentity(context.Background())
	require.NoError(t, err)
	require.Len(t, problems, 1)
	require.Equal(t, `table public.rid has REPLICA IDENTITY USING INDEX but the index is gone: its UPDATEs and DELETEs cannot be captured (and fail on the primary); it has a primary key, so run ALTER TABLE "public"."rid" REPLICA IDENTITY DEFAULT (or ALTER TABLE "public"."rid" REPLICA IDENTITY FULL)`,
		problems[0].String())
	_, err = NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
		WithMessageHandler(DefaultMessageHandler{}), WithStrictReplicaIdentity(true))
	require.ErrorIs(t, err, ErrReplicaIdentity)
}

// TestDocsControlTablesAreNotSelected: the watermark table is in the publication (a
// list of the publication's tables, pg_publication_tables, includes it), and
// docs/SNAPSHOTS.md says handlers never see its rows. Snapshot and Refresh of it, or
// of snapshot_progress, are ErrConfig. Before, Snapshot("dbsync_ctrl.dbsync_wmtable")
// returned nil after delivering the chunk's own low watermark row to HandleRefresh.
func TestDocsControlTablesAreNotSelected(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ct (id int PRIMARY KEY)`, `INSERT INTO ct VALUES (1)`)
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("ct"), WithMessageHandler(h))
	r := runInBackground(s)
	defer r.stop(t)
	ctx := context.Background()
	for _, table := range []string{"dbsync_ctrl.dbsync_wmtable", "dbsync_ctrl.snapshot_progress"} {
		err := s.Snapshot(ctx, table)
		require.ErrorIs(t, err, ErrConfig, table)
		require.Contains(t, err.Error(), "is dbsync's own table", table)
		_, err = s.RefreshContext(ctx, "SELECT * FROM "+table)
		require.ErrorIs(t, err, ErrConfig, table)
	}
	require.NoError(t, s.Snapshot(ctx, "ct"))
	require.Empty(t, h.tableRows("dbsync_ctrl.dbsync_wmtable"))
	require.Empty(t, h.tableRows("dbsync_ctrl.snapshot_progress"))
	require.Len(t, h.tableRows("public.ct"), 1)
}
