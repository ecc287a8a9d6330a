package dbsync

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// fastPathOIDs are the types with a fast path in values_fast.go (and scanFast).
var fastPathOIDs = []uint32{pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.BoolOID, pgtype.TimestamptzOID,
	pgtype.NumericOID, pgtype.JSONOID, pgtype.JSONBOID, pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID}

// pgtypeReference decodes src of type oid without dbsync's fast paths: pgx's codec
// (numeric: pgx's NumericCodec followed by dbsync's rescaling, not parsePlainNumeric;
// json and jsonb: encoding/json.Valid on the document, jsonb's binary form after its
// version byte; a document deeper than encoding/json's nesting limit is valid, as
// validJSON has no limit), and reports a panic as an error.
func pgtypeReference(oid uint32, format int16, src []byte) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, errPanic{r}
		}
	}()
	m := newTypeMap()
	switch oid {
	case pgtype.NumericOID:
		return scaledNumericCodec{}.decodeValuePgx(m, oid, format, src)
	case pgtype.JSONOID, pgtype.JSONBOID:
		doc := src
		if oid == pgtype.JSONBOID && format == pgtype.BinaryFormatCode {
			if len(doc) == 0 || doc[0] != 1 {
				return nil, errPanic{"no version byte"}
			}
			doc = doc[1:]
		}
		if !json.Valid(doc) && !tooDeepForStdlib(doc) {
			return nil, errPanic{"invalid"}
		}
		return json.RawMessage(append([]byte(nil), doc...)), nil
	}
	slow := *resolveDecode(oid, nil)
	slow.fast = fastNone
	return slow.decode(m, format, src, nil)
}

type errPanic struct{ v any }

func (e errPanic) Error() string { return "reference failed" }

// FuzzFastPathMatchesPgtype is a differential fuzz test of every fast path against
// pgtype on the same text or binary input: DecodeText/DecodeBytes (decodeFast) must
// give pgtype's Go type and reflect.DeepEqual value where pgtype decodes, and an
// ErrDecodeValue error where it does not; ScanTuple's scanFast must put the same value
// into each destination it takes, and never take a value pgtype rejects.
func FuzzFastPathMatchesPgtype(f *testing.F) {
	for i, s := range []string{"-32768", "\x80\x00", "2147483647", "\x00\x00\x00\x01", "-999999999999999999", "t", "\x01",
		"2026-01-02 03:04:05.123456+05:30", "1.50", `{"a": [1, 2.5]}`, "\x01[]", "text", "varchar", "bpchar  ", "name"} {
		f.Add(uint8(i), i%2 == 1, []byte(s))
	}
	f.Add(uint8(0), false, []byte("40000"))
	f.Add(uint8(1), true, []byte{0, 1})
	f.Add(uint8(4), false, []byte("0001-01-01 00:00:00+00 BC"))
	f.Add(uint8(5), false, []byte("-0.000"))
	f.Fuzz(func(t *testing.T, which uint8, binary bool, src []byte) {
		oid := fastPathOIDs[int(which)%len(fastPathOIDs)]
		format := int16(pgtype.TextFormatCode)
		if binary {
			format = pgtype.BinaryFormatCode
		}
		want, werr := pgtypeReference(oid, format, src)
		col := &PGColumnInfo{ColumnName: "c", TypeOID: oid, dec: resolveDecode(oid, nil)}
		var got any
		var gerr error
		if binary {
			got, gerr = col.DecodeBytes(src)
		} else {
			got, gerr = col.DecodeText(src)
		}
		switch {
		case werr != nil && gerr == nil:
			t.Fatalf("oid %d format %d %q: decoded %#v, pgtype fails: %v", oid, format, src, got, werr)
		case werr == nil && gerr != nil:
			t.Fatalf("oid %d format %d %q: %v, pgtype gives %#v", oid, format, src, gerr, want)
		case werr == nil && (reflect.TypeOf(got) != reflect.TypeOf(want) || !reflect.DeepEqual(got, want)):
			t.Fatalf("oid %d format %d %q: %#v (%T), pgtype %#v (%T)", oid, format, src, got, got, want, want)
		}

		// scanFast into each destination it handles, against the fallback scan.
		d := col.decoder()
		for _, mk := range []func() any{
			func() any { return new(string) }, func() any { return new(int64) }, func() any { return new(int32) },
			func() any { return new(int16) }, func() any { return new(bool) }, func() any { return new(time.Time) },
			func() any { return new(pgtype.Numeric) }, func() any { return new(json.RawMessage) },
		} {
			fast, slow := mk(), mk()
			if !scanFast(d, format, src, fast, nil) {
				continue
			}
			m := newTypeMap()
			if _, err := scanColumn(m, col, oid, format, src, false, slow); err != nil {
				t.Fatalf("oid %d format %d %q: scanFast took it into %T as %#v, the scan fails: %v", oid, format, src, fast, reflect.ValueOf(fast).Elem(), err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("oid %d format %d %q into %T: scanFast %#v, the scan %#v", oid, format, src, fast, reflect.ValueOf(fast).Elem(), reflect.ValueOf(slow).Elem())
			}
		}
	})
}

// TestScanTupleRejectsIntOfWrongWidth: ScanTuple into an integer variable takes only
// values of the column's type, as MessageToMap does: an int4 column's 2-byte or 8-byte
// binary value or an int2 column's text 40000 is ErrDecodeValue, not a number (found by
// FuzzFastPathMatchesPgtype).
func TestScanTupleRejectsIntOfWrongWidth(t *testing.T) {
	reln := &pglogrepl.RelationMessage{RelationID: 1, Namespace: "public", RelationName: "t", ColumnNum: 2,
		Columns: []*pglogrepl.RelationMessageColumn{
			{Flags: 1, Name: "i4", DataType: pgtype.Int4OID, TypeModifier: -1},
			{Name: "i2", DataType: pgtype.Int2OID, TypeModifier: -1},
		}}
	info := tableInfoFromRelation(reln)
	bin := func(b ...byte) *pglogrepl.TupleDataColumn {
		return &pglogrepl.TupleDataColumn{DataType: 'b', Length: uint32(len(b)), Data: b}
	}
	var a, b int64
	require.NoError(t, info.ScanTuple(reln, tuple(bin(0, 0, 0, 7), bin(0xff, 0xfe)), &a, &b))
	require.Equal(t, []int64{7, -2}, []int64{a, b})
	for name, tup := range map[string]*pglogrepl.TupleData{
		"int4 of 2 bytes": tuple(bin(0, 1), bin(0, 1)),
		"int4 of 8 bytes": tuple(bin(0, 0, 0, 0, 0, 0, 0, 1), bin(0, 1)),
		"int2 of 40000":   tuple(textCol("1"), textCol("40000")),
	} {
		a, b = -1, -1
		err := info.ScanTuple(reln, tup, &a, &b)
		require.ErrorIs(t, err, ErrDecodeValue, name)
		_, _, merr := info.MessageToMap(reln, tup)
		require.ErrorIs(t, merr, ErrDecodeValue, name)
	}
}
