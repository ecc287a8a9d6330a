package dbsync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// changeAndRefresh inserts a row with insert into table (one row, key id = 1) while a
// Syncer in the given mode runs, then refreshes the table: it returns the row decoded
// from the INSERT, the row the Refresh delivered and the table's description.
func changeAndRefresh(t *testing.T, d *pgtest.Database, table, insert string, binary bool) (fromChange, fromRefresh StringMap, info *PGTableInfo) {
	t.Helper()
	execAll(t, d.DB, `DELETE FROM `+table)
	h := newCacheHandler()
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, fmt.Sprintf("slot_%v", binary)), h, ForTables(table), WithBinary(binary))
	execAll(t, d.DB, insert)
	for deadline := time.Now().Add(10 * time.Second); len(h.eventList()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the insert was not delivered; Run: %v", stop())
		}
	}
	rows := h.tableRows("public." + table)
	require.Len(t, rows, 1)
	fromChange = rows[`["1"]`]
	require.NotNil(t, fromChange, "the insert's record ID")
	stats, err := s.RefreshContext(context.Background(), `SELECT * FROM `+table)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
	fromRefresh = h.tableRows("public." + table)[`["1"]`]
	info, err = s.TableInfo(context.Background(), table)
	require.NoError(t, err)
	return fromChange, fromRefresh, info
}

// TestXMLAndTSVectorAreUnknownValues: docs/VALUES.md lists xml and tsvector among the
// built-ins decoded to UnknownValue (the output function's text; the send function's
// bytes in binary mode). pgx's default map has codecs for both, and they had leaked
// through: xml arrived as []byte (the Go type of bytea, rendered by JSONValue as
// "\x3c61..." hex), tsvector as pgtype.TSVector (rendered by JSONValue with pgx's
// quoting: a quote escaped with a backslash where PostgreSQL doubles it).
func TestXMLAndTSVectorAreUnknownValues(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE xt (id int PRIMARY KEY, x xml, v tsvector, xa xml[], va tsvector[])`)
	const insert = `INSERT INTO xt VALUES (1, '<a x="1">hi &amp; bye</a>', 'a:1A,2B b''c:3 \\d',
		ARRAY['<b/>', 'text only']::xml[], ARRAY['a b', '']::tsvector[])`
	var xText, vText string
	var xBin, vBin, xaBin, vaBin []byte
	require.NoError(t, d.DB.QueryRow(`SELECT x::text, v::text FROM (SELECT '<a x="1">hi &amp; bye</a>'::xml AS x, 'a:1A,2B b''c:3 \\d'::tsvector AS v) s`).Scan(&xText, &vText))
	require.Equal(t, `'\\d' 'a':1A,2B 'b''c':3`, vText)
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			got, refreshed, info := changeAndRefresh(t, d, "xt", insert, binary)
			if binary {
				require.NoError(t, d.DB.QueryRow(`SELECT xml_send('<a x="1">hi &amp; bye</a>'::xml), tsvectorsend('a:1A,2B b''c:3 \\d'::tsvector),
					array_send(ARRAY['<b/>', 'text only']::xml[]), array_send(ARRAY['a b', '']::tsvector[])`).Scan(&xBin, &vBin, &xaBin, &vaBin))
				require.Equal(t, UnknownValue{Type: "xml", Binary: xBin}, got["x"])
				require.Equal(t, UnknownValue{Type: "tsvector", Binary: vBin}, got["v"])
				xa := got["xa"].([]any)
				require.Len(t, xa, 2)
				require.Equal(t, UnknownValue{Type: "xml", Binary: []byte("<b/>")}, xa[0])
				require.Equal(t, UnknownValue{Type: "xml", Binary: []byte("text only")}, xa[1])
				require.Len(t, got["va"].([]any), 2)
				require.IsType(t, UnknownValue{}, got["va"].([]any)[0])
				return
			}
			require.Equal(t, UnknownValue{Type: "xml", Text: xText}, got["x"])
			require.Equal(t, UnknownValue{Type: "tsvector", Text: vText}, got["v"])
			require.Equal(t, []any{UnknownValue{Type: "xml", Text: "<b/>"}, UnknownValue{Type: "xml", Text: "text only"}}, got["xa"])
			require.Equal(t, []any{UnknownValue{Type: "tsvector", Text: "'a' 'b'"}, UnknownValue{Type: "tsvector", Text: ""}}, got["va"])
			requireSameRow(t, got, refreshed, "refresh row vs change")
			j, err := info.JSONRow(got)
			require.NoError(t, err)
			require.Equal(t, xText, j["x"], "xml renders as its text")
			require.Equal(t, vText, j["v"], "tsvector renders as PostgreSQL's text")
		})
	}
}

// TestJSONPathBinaryMatchesText: jsonpath's send function writes a version byte before
// the path's text. pgx's codec for jsonpath is text-only, and in binary mode
// (WithBinary) the byte had been kept: "\x01$.a" where text mode and the refresh row
// have "$.a" (also as array elements).
func TestJSONPathBinaryMatchesText(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE jp (id int PRIMARY KEY, p jsonpath, pa jsonpath[])`)
	const insert = `INSERT INTO jp VALUES (1, '$.a[*] ? (@ > 1)', ARRAY['$', 'strict $."key with space"']::jsonpath[])`
	want := StringMap{"id": int32(1), "p": `$."a"[*]?(@ > 1)`, "pa": []any{"$", `strict $."key with space"`}}
	require.Equal(t, []string{want["p"].(string)}, queryStrings(t, d.DB, `SELECT '$.a[*] ? (@ > 1)'::jsonpath::text`), "PostgreSQL's text")
	requireChangeAndRefreshBothModes(t, d, "jp", insert, want)
}

// TestCharArrayHighBitText: "char"'s output function prints a byte >= 0x80 as \ooo.
// A "char" column decoded it, but an element of a "char"[] went to pgx's codec, which
// takes one byte: the change failed with ErrDecodeValue in text mode (the default),
// which stopped the Syncer. Both modes and the refresh row give the byte as its rune.
func TestCharArrayHighBitText(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ca (id int PRIMARY KEY, c "char", ca "char"[])`)
	const insert = `INSERT INTO ca VALUES (1, CAST(-56 AS "char"), ARRAY[CAST(-56 AS "char"), 'a', '\', '"', NULL, CAST(-1 AS "char")])`
	require.Equal(t, []string{`{"\\310",a,"\\","\"",NULL,"\\377"}`}, queryStrings(t, d.DB, `SELECT ARRAY[CAST(-56 AS "char"), 'a', '\', '"', NULL, CAST(-1 AS "char")]::text`), "PostgreSQL's text")
	want := StringMap{"id": int32(1), "c": int32(0xc8), "ca": []any{int32(0xc8), int32('a'), int32('\\'), int32('"'), nil, int32(0xff)}}
	requireChangeAndRefreshBothModes(t, d, "ca", insert, want)
}

// TestDomainOverBoxArray: box is the built-in type whose arrays separate elements with
// ';' (its typdelim), and a domain over box inherits it. An array of such a domain is
// decoded element by element (as the domain's base type), and was split at ','
// instead, inside the boxes: the change failed with ErrDecodeValue.
func TestDomainOverBoxArray(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE DOMAIN dbox AS box`, `CREATE TABLE bx (id int PRIMARY KEY, b dbox[])`)
	const insert = `INSERT INTO bx VALUES (1, ARRAY['(1,2),(3,4)'::dbox, '(0,0),(1.5,1)', NULL])`
	require.Equal(t, []string{`{(3,4),(1,2);(1.5,1),(0,0);NULL}`}, queryStrings(t, d.DB, `SELECT ARRAY['(1,2),(3,4)'::dbox, '(0,0),(1.5,1)', NULL]::text`), "PostgreSQL's text")
	box := func(x1, y1, x2, y2 float64) pgtype.Box {
		return pgtype.Box{P: [2]pgtype.Vec2{{X: x1, Y: y1}, {X: x2, Y: y2}}, Valid: true}
	}
	want := StringMap{"id": int32(1), "b": []any{box(3, 4, 1, 2), box(1.5, 1, 0, 0), nil}}
	requireChangeAndRefreshBothModes(t, d, "bx", insert, want)
}

// TestUserTypeArrayDelimiter: a user-defined base type may declare its own array
// delimiter (CREATE TYPE ... DELIMITER; PostGIS's geometry uses ':'), which array_out
// separates the elements of its arrays with. They were split at ',' whatever the
// type's typdelim, so an element holding ',' came apart and one holding the
// delimiter stayed whole. The type here is text's input and output functions under
// another name (LANGUAGE internal), with ';' as its delimiter; it has no send
// function, so only text mode applies.
func TestUserTypeArrayDelimiter(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TYPE semi`,
		`CREATE FUNCTION semi_in(cstring) RETURNS semi LANGUAGE internal IMMUTABLE STRICT AS 'textin'`,
		`CREATE FUNCTION semi_out(semi) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'textout'`,
		`CREATE TYPE semi (INPUT = semi_in, OUTPUT = semi_out, INTERNALLENGTH = VARIABLE, DELIMITER = ';')`,
		`CREATE TABLE sd (id int PRIMARY KEY, s semi[])`)
	const insert = `INSERT INTO sd VALUES (1, '{"a,b";c;NULL;"d;e"}')`
	require.Equal(t, []string{`{a,b;c;NULL;"d;e"}`}, queryStrings(t, d.DB, `SELECT '{"a,b";c;NULL;"d;e"}'::semi[]::text`), "PostgreSQL's text")
	want := StringMap{"id": int32(1), "s": []any{
		UnknownValue{Type: "semi", Text: "a,b"}, UnknownValue{Type: "semi", Text: "c"}, nil, UnknownValue{Type: "semi", Text: "d;e"}}}
	got, refreshed, _ := changeAndRefresh(t, d, "sd", insert, false)
	requireSameRow(t, want, got, "change")
	requireSameRow(t, want, refreshed, "refresh row")
}

// requireChangeAndRefreshBothModes: in text and in binary mode, the change that insert
// makes to table and the refresh row of the same row both decode to want.
func requireChangeAndRefreshBothModes(t *testing.T, d *pgtest.Database, table, insert string, want StringMap) {
	t.Helper()
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			got, refreshed, _ := changeAndRefresh(t, d, table, insert, binary)
			requireSameRow(t, want, got, "change")
			requireSameRow(t, want, refreshed, "refresh row")
		})
	}
}

// TestVectorTypesAreUnknownValues: int2vector and oidvector are filed in pg_type as
// arrays (typcategory 'A', an element type), but their text form is their own ("1 2",
// space-separated, no braces), not array_out's. They had been decoded as arrays: a
// change of a row with such a column failed to decode in text mode ("invalid array,
// expected '{'"), which ended Run at the same change every time, and a Refresh of it
// failed in both modes. pgx has no codec for them: they are UnknownValues, like the
// other built-ins without one (docs/VALUES.md), the output function's text in text
// mode (changes and refresh rows), the send function's bytes in binary mode.
func TestVectorTypesAreUnknownValues(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE vec (id int PRIMARY KEY, e int2vector, f oidvector, g int2vector, h oidvector[])`)
	const insert = `INSERT INTO vec VALUES (1, '1 2', '23 25', '', ARRAY['23 25', '']::oidvector[])`
	got, refreshed, _ := changeAndRefresh(t, d, "vec", insert, false)
	want := StringMap{"id": int32(1),
		"e": UnknownValue{Type: "int2vector", Text: "1 2"},
		"f": UnknownValue{Type: "oidvector", Text: "23 25"},
		"g": UnknownValue{Type: "int2vector", Text: ""},
		"h": []any{UnknownValue{Type: "oidvector", Text: "23 25"}, UnknownValue{Type: "oidvector", Text: ""}}}
	requireSameRow(t, want, got, "change")
	requireSameRow(t, want, refreshed, "refresh row")

	got, refreshed, _ = changeAndRefresh(t, d, "vec", insert, true)
	var e, f, g, f0 []byte
	require.NoError(t, d.DB.QueryRow(`SELECT int2vectorsend('1 2'), oidvectorsend('23 25'), int2vectorsend(''), oidvectorsend('')`).Scan(&e, &f, &g, &f0))
	requireSameRow(t, StringMap{"id": int32(1),
		"e": UnknownValue{Type: "int2vector", Binary: e},
		"f": UnknownValue{Type: "oidvector", Binary: f},
		"g": UnknownValue{Type: "int2vector", Binary: g},
		"h": []any{UnknownValue{Type: "oidvector", Binary: f}, UnknownValue{Type: "oidvector", Binary: f0}}}, got, "change (binary)")
	requireSameRow(t, want, refreshed, "refresh row (binary mode: text)")
}
