package dbsync

import (
	"encoding/json"
	"errors"
	"math/big"
	"math/rand"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

func twoKeyTable() *PGTableInfo {
	info := &PGTableInfo{Namespace: "public", TableName: "t", PrimaryKey: []string{"a", "b"}, ColInfo: map[string]*PGColumnInfo{}}
	for _, n := range []string{"a", "b"} {
		c := &PGColumnInfo{ColumnName: n, TypeOID: pgtype.TextOID}
		info.Columns = append(info.Columns, c)
		info.ColInfo[n] = c
	}
	return info
}

// TestGetRecordIDUnambiguous: different composite keys never share an ID, whatever
// separators, quotes or brackets the values contain.
func TestGetRecordIDUnambiguous(t *testing.T) {
	info := twoKeyTable()
	id := func(a, b string) string {
		s, err := info.GetRecordID(StringMap{"a": a, "b": b, "other": "ignored"})
		require.NoError(t, err)
		return s
	}
	require.Equal(t, `["x","y"]`, id("x", "y"))
	require.NotEqual(t, id("a,b", "c"), id("a", "b,c"))
	require.NotEqual(t, id(`a"`, `b`), id(`a`, `"b`))
	require.NotEqual(t, id(`a","b`, ``), id(`a`, `b","`))
	require.NotEqual(t, id(`\`, `"`), id(`\"`, ``))
	alphabet := []string{"a", ",", `"`, `\`, "[", "]", " ", "", "é", "\x00"}
	seen := map[string][2]string{}
	rng := rand.New(rand.NewSource(1))
	word := func() string {
		var sb strings.Builder
		for i := rng.Intn(4); i > 0; i-- {
			sb.WriteString(alphabet[rng.Intn(len(alphabet))])
		}
		return sb.String()
	}
	for i := 0; i < 20000; i++ {
		k := [2]string{word(), word()}
		s := id(k[0], k[1])
		if prev, ok := seen[s]; ok {
			require.Equal(t, prev, k, "two keys share the ID %q", s)
		}
		seen[s] = k
	}

	single := &PGTableInfo{Namespace: "public", TableName: "s", PrimaryKey: []string{"id"}}
	for v, want := range map[any]string{int32(42): `["42"]`, int64(-7): `["-7"]`, "abc": `["abc"]`,
		[16]byte{0xff, 1}: `["ff010000-0000-0000-0000-000000000000"]`, true: `["t"]`,
		pgtype.Numeric{Int: big.NewInt(150), Exp: -2, Valid: true}: `["1.50"]`} {
		got, err := single.GetRecordID(StringMap{"id": v})
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
}

func TestGetRecordIDErrors(t *testing.T) {
	info := twoKeyTable()
	_, err := info.GetRecordID(StringMap{"a": "x"})
	require.ErrorIs(t, err, ErrNoKey)
	_, err = info.GetRecordID(StringMap{"a": "x", "b": nil})
	require.ErrorIs(t, err, ErrNoKey)
	_, err = (&PGTableInfo{Namespace: "public", TableName: "nokey"}).GetRecordID(StringMap{"a": "x"})
	require.ErrorIs(t, err, ErrNoKey)
	require.Contains(t, err.Error(), "public.nokey has no primary key")
}

// TestDecodeErrorsAreTyped: values that do not parse as their type give ErrDecodeValue
// naming the column, never a panic or a silently substituted value.
func TestDecodeErrorsAreTyped(t *testing.T) {
	cases := []struct {
		oid    uint32
		binary bool
		data   string
	}{
		{pgtype.Int4OID, false, "abc"},
		{pgtype.Int4OID, true, "\x01"},
		{pgtype.Int8OID, true, "\x01\x02\x03"},
		{pgtype.NumericOID, true, "\xff\xff\x00\x00\x00\x00\x00\x00"},
		{pgtype.NumericOID, false, "1.2.3"},
		{pgtype.JSONBOID, true, "\x02{}"},
		{pgtype.JSONOID, false, "{not json"},
		{pgtype.TimestamptzOID, false, "yesterday-ish"},
		{pgtype.Int4ArrayOID, false, "{1,2"},
		{pgtype.Int4ArrayOID, true, "\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x17\x7f\xff\xff\xff\x00\x00\x00\x01"},
		{pgtype.UUIDOID, false, "not-a-uuid"},
		{pgtype.InetOID, false, "300.1.1.1"},
		{pgtype.IntervalOID, false, "P1Y"},
	}
	for _, c := range cases {
		col := &PGColumnInfo{ColumnName: "col", TypeOID: c.oid}
		var err error
		if c.binary {
			_, err = col.DecodeBytes([]byte(c.data))
		} else {
			_, err = col.DecodeText([]byte(c.data))
		}
		require.ErrorIs(t, err, ErrDecodeValue, "oid %d %q", c.oid, c.data)
		require.Contains(t, err.Error(), `column "col"`)
	}
}

func testRelation(ident uint8) *pglogrepl.RelationMessage {
	return &pglogrepl.RelationMessage{RelationID: 1, Namespace: "public", RelationName: "t", ReplicaIdentity: ident,
		ColumnNum: 3, Columns: []*pglogrepl.RelationMessageColumn{
			{Flags: 1, Name: "id", DataType: pgtype.Int4OID, TypeModifier: -1},
			{Name: "big", DataType: pgtype.TextOID, TypeModifier: -1},
			{Name: "n", DataType: pgtype.Int8OID, TypeModifier: -1},
		}}
}

func tuple(cols ...*pglogrepl.TupleDataColumn) *pglogrepl.TupleData {
	return &pglogrepl.TupleData{ColumnNum: uint16(len(cols)), Columns: cols}
}

func textCol(s string) *pglogrepl.TupleDataColumn {
	return &pglogrepl.TupleDataColumn{DataType: 't', Length: uint32(len(s)), Data: []byte(s)}
}

var (
	nullCol  = &pglogrepl.TupleDataColumn{DataType: 'n'}
	toastCol = &pglogrepl.TupleDataColumn{DataType: 'u'}
)

// TestDecodeChangeToast: 'u' values are listed, never NULL; an 'O' old tuple fills
// them; a 'K' old tuple keeps only the key columns.
func TestDecodeChangeToast(t *testing.T) {
	reln := testRelation('d')
	info := tableInfoFromRelation(reln)
	c, err := DecodeChange(&pglogrepl.UpdateMessage{RelationID: 1, NewTuple: tuple(textCol("1"), toastCol, textCol("5"))}, reln, info)
	require.NoError(t, err)
	require.Equal(t, StringMap{"id": int32(1), "n": int64(5)}, c.New)
	require.Equal(t, []string{"big"}, c.Unchanged)
	require.Equal(t, `["1"]`, c.Key)

	c, err = DecodeChange(&pglogrepl.UpdateMessage{RelationID: 1, OldTupleType: 'K', OldTuple: tuple(textCol("0"), nullCol, nullCol),
		NewTuple: tuple(textCol("1"), toastCol, textCol("5"))}, reln, info)
	require.NoError(t, err)
	require.Equal(t, StringMap{"id": int32(0)}, c.Old, "K tuple: key columns only")
	require.Equal(t, []string{"big"}, c.Unchanged, "a K tuple cannot fill")
	require.Equal(t, `["0"]`, c.OldKey)

	full := testRelation('f')
	c, err = DecodeChange(&pglogrepl.UpdateMessage{RelationID: 1, OldTupleType: 'O', OldTuple: tuple(textCol("1"), textCol("large"), nullCol),
		NewTuple: tuple(textCol("1"), toastCol, textCol("5"))}, full, tableInfoFromRelation(full))
	require.NoError(t, err)
	require.Equal(t, StringMap{"id": int32(1), "big": "large", "n": int64(5)}, c.New)
	require.Empty(t, c.Unchanged)
	require.Equal(t, []string{"big"}, c.Filled)

	_, err = DecodeChange(&pglogrepl.InsertMessage{RelationID: 1, Tuple: tuple(textCol("1"))}, reln, info)
	require.ErrorIs(t, err, ErrMalformedMessage)
	_, err = DecodeChange(&pglogrepl.InsertMessage{RelationID: 1, Tuple: tuple(textCol("x"), nullCol, nullCol)}, reln, info)
	require.ErrorIs(t, err, ErrDecodeValue)
	_, err = DecodeChange(&pglogrepl.InsertMessage{RelationID: 1, Tuple: tuple(nullCol, nullCol, nullCol)}, reln, info)
	require.ErrorIs(t, err, ErrNoKey)
}

// FuzzDecodeMessage feeds a RELATION message and a change through Parse and
// DecodeChange: malformed input must give a typed error, never a panic. The seed corpus
// (testdata/fuzz/FuzzDecodeMessage) is real pgoutput captured by internal/fuzzseeds in
// text and binary format; `go test` runs the seeds, CI fuzzes briefly.
func FuzzDecodeMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, relation, change []byte) {
		var reln *pglogrepl.RelationMessage
		if m, err := Parse(relation); err == nil {
			reln, _ = m.(*pglogrepl.RelationMessage)
		} else if !errors.Is(err, ErrMalformedMessage) {
			t.Fatalf("Parse(relation): untyped error %v", err)
		}
		msg, err := Parse(change)
		if err != nil {
			if !errors.Is(err, ErrMalformedMessage) {
				t.Fatalf("Parse(change): untyped error %v", err)
			}
			return
		}
		if reln == nil {
			return
		}
		info := tableInfoFromRelation(reln)
		switch msg.(type) {
		case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage:
			c, err := DecodeChange(msg, reln, info)
			if err != nil {
				if !errors.Is(err, ErrMalformedMessage) && !errors.Is(err, ErrDecodeValue) && !errors.Is(err, ErrNoKey) {
					t.Fatalf("DecodeChange: untyped error %v", err)
				}
				return
			}
			for _, row := range []StringMap{c.New, c.Old} {
				for _, v := range row {
					if raw, ok := v.(json.RawMessage); ok && !json.Valid(raw) && !tooDeepForStdlib(raw) {
						t.Fatalf("invalid JSON delivered: %q", raw)
					}
				}
			}
		}
	})
}

// TestParseRejectsOversizedLengths: declared sizes larger than the message fail fast
// instead of making pglogrepl allocate gigabytes (found by FuzzDecodeMessage).
func TestParseRejectsOversizedLengths(t *testing.T) {
	for name, data := range map[string]string{
		"delete column":   "D\x00\x00\x40\x0dK\x00\x01t\xff\xff\xff\xff",
		"insert column":   "I\x00\x00\x40\x0dN\x00\x02n\x74\x7f\xff\xff\xffab",
		"update old":      "U\x00\x00\x40\x0dO\x00\x01b\x10\x00\x00\x00",
		"truncate":        "T\xff\xff\xff\xff\x00\x00\x00\x00\x01",
		"truncate short":  "T\x00\x00\x00\x02\x00\x00\x00\x00\x01",
		"update no tuple": "U\x00\x00\x40\x0dX",
	} {
		_, err := Parse([]byte(data))
		require.ErrorIs(t, err, ErrMalformedMessage, name)
	}
	tr, err := Parse([]byte("T\x00\x00\x00\x01\x03\x00\x00\x40\x0d"))
	require.NoError(t, err)
	require.Equal(t, []uint32{0x400d}, tr.(*pglogrepl.TruncateMessage).RelationIDs)
	m, err := Parse([]byte("I\x00\x00\x40\x0dN\x00\x02n\x74\x00\x00\x00\x02ab"))
	require.NoError(t, err)
	require.Equal(t, "ab", string(m.(*pglogrepl.InsertMessage).Tuple.Columns[1].Data))
}

// FuzzDecodeValue feeds arbitrary bytes to the decoders of the built-in types in both
// formats: a typed error (ErrDecodeValue) or a value, never a panic, and a value always
// renders as JSON.
func FuzzDecodeValue(f *testing.F) {
	for _, s := range []struct {
		oid    uint32
		binary bool
		data   string
	}{
		{pgtype.NumericOID, false, "-1234567890.0987654321"},
		{pgtype.NumericOID, true, "\x00\x02\x00\x00\x40\x00\x00\x02\x00\x01\x13\x88"},
		{pgtype.Int4ArrayOID, false, "{{1,NULL},{3,4}}"},
		{pgtype.TextArrayOID, false, `{"a,b",NULL,"q\"x"}`},
		{pgtype.TimestamptzOID, false, "1900-01-01 00:00:00+05:53:28"},
		{pgtype.IntervalOID, false, "-1 years -2 mons +3 days -04:05:06.000001"},
		{pgtype.JSONBOID, true, "\x01{\"a\": 1}"},
		{pgtype.TstzrangeOID, false, `["2020-01-01 00:00:00+00",infinity)`},
		{pgtype.Int8multirangeOID, false, "{[1,3),[5,7)}"},
		{pgtype.InetOID, false, "2001:db8::1/64"},
		{pgtype.Float8OID, false, "-Infinity"},
	} {
		f.Add(s.oid, s.binary, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, oid uint32, binary bool, data []byte) {
		col := &PGColumnInfo{ColumnName: "c", TypeOID: oid}
		var v any
		var err error
		if binary {
			v, err = col.DecodeBytes(data)
		} else {
			v, err = col.DecodeText(data)
		}
		if err != nil {
			if !errors.Is(err, ErrDecodeValue) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		j, err := col.JSONValue(v)
		if err == nil {
			_, err = json.Marshal(j)
			if err != nil {
				t.Fatalf("JSONValue(%#v) = %#v does not encode: %v", v, j, err)
			}
		} else if !errors.Is(err, ErrDecodeValue) {
			t.Fatalf("JSONValue: untyped error %v", err)
		}
	})
}
