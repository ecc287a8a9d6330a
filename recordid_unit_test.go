package dbsync

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"math/rand"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// recordIDByMarshal is GetRecordID as it was before the byte builder: json.Marshal of
// the key texts. The builder must give exactly the same bytes.
func recordIDByMarshal(t *PGTableInfo, values StringMap) (string, error) {
	if len(t.PrimaryKey) == 0 {
		return "", ErrNoKey
	}
	parts := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		v, ok := values[k]
		if !ok || v == nil {
			return "", ErrNoKey
		}
		s, err := keyText(v)
		if err != nil {
			return "", err
		}
		parts[i] = s
	}
	b, err := json.Marshal(parts)
	return string(b), err
}

func marshalString(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	require.NoError(t, err)
	return string(b)
}

// TestRecordIDJSONStringMatchesMarshal compares appendJSONString with encoding/json on
// every byte, every rune of the BMP and beyond (step), invalid UTF-8 and random strings
// made of the characters JSON escaping treats specially.
func TestRecordIDJSONStringMatchesMarshal(t *testing.T) {
	check := func(s string) {
		t.Helper()
		want := marshalString(t, s)
		if got := string(appendJSONString(nil, s)); got != want {
			t.Fatalf("appendJSONString(%q) = %s, json.Marshal = %s", s, got, want)
		}
	}
	for c := 0; c < 256; c++ {
		check(string([]byte{byte(c)}))
		check("a" + string([]byte{byte(c)}) + "b")
	}
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if r > 0x3100 && r%97 != 0 && r != 0xFFFD && r != 0xFFFF && r != 0x10FFFF {
			continue
		}
		check(string(r))
		check("x" + string(r) + `"\`)
	}
	for _, s := range []string{
		"", `"`, `\`, `\\"`, `["1","2"]`, "p,\"q", "\u2028\u2029", "<script>&amp;</script>",
		"\xff", "\xc3", "\xe2\x82", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xffb\xfe", "é€𝄞", "\x00\x1f\x7f",
		strings.Repeat(`\"`, 100), strings.Repeat("é", 100),
	} {
		check(s)
	}
	alphabet := []string{"a", "Z", "0", ",", `"`, `\`, "[", "]", "<", ">", "&", "\n", "\t", "\x00", "\x01", "\x7f",
		"é", "€", "𝄞", "\u2028", "\u2029", "\ufffd", "\xff", "\xc3", "\xe2\x82", "\xed\xa0\x80", " "}
	rnd := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		var sb strings.Builder
		for n := rnd.Intn(12); n > 0; n-- {
			sb.WriteString(alphabet[rnd.Intn(len(alphabet))])
		}
		check(sb.String())
	}
}

// TestRecordIDMatchesJSONMarshal checks that GetRecordID gives byte for byte the IDs the
// json.Marshal encoding gave, for every key value type, composite keys, and the same
// ErrNoKey cases (NULL, missing column, no key).
func TestRecordIDMatchesJSONMarshal(t *testing.T) {
	ts := time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.UTC)
	num := func(i int64, exp int32) pgtype.Numeric {
		return pgtype.Numeric{Int: big.NewInt(i), Exp: exp, Valid: true}
	}
	values := []any{
		"", "abc", `p,"q`, `\`, `"]`, "é€𝄞", "<&>", "\u2028", "a\x00b", "\xff\xfe", "line\nbreak\ttab",
		int16(0), int16(math.MinInt16), int16(math.MaxInt16),
		int32(-1), int32(math.MinInt32), int32(math.MaxInt32),
		int64(0), int64(42), int64(math.MinInt64), int64(math.MaxInt64),
		uint32(0), uint32(math.MaxUint32),
		true, false, float32(1.5), math.NaN(), math.Inf(1), math.Inf(-1), 0.1,
		[]byte{}, []byte{0, 0xff, '"'}, [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		ts, ts.In(time.FixedZone("x", 3600)), pgtype.Infinity, pgtype.NegativeInfinity,
		json.RawMessage(`{"a": "b\"c"}`), num(150, -2), num(0, -2), num(-5, 0), pgtype.Numeric{NaN: true, Valid: true},
		UnknownValue{Type: "address", Text: `(42,"a ""b"", c")`}, UnknownValue{Type: "money", Binary: []byte{1, 2}},
		[]any{int32(1), nil, "x\"y"}, []any{[]any{"a,b", nil}, []any{}},
	}
	one := &PGTableInfo{TableName: "t", PrimaryKey: []string{"k"}}
	two := &PGTableInfo{TableName: "t", PrimaryKey: []string{"b", "a"}}
	for _, v := range values {
		row := StringMap{"k": v, "other": "ignored"}
		want, werr := recordIDByMarshal(one, row)
		got, gerr := one.GetRecordID(row)
		require.NoError(t, werr, "%T %v", v, v)
		require.NoError(t, gerr, "%T %v", v, v)
		require.Equal(t, want, got, "%T %v", v, v)
		for _, w := range values[:12] {
			row := StringMap{"a": v, "b": w}
			want, werr := recordIDByMarshal(two, row)
			got, gerr := two.GetRecordID(row)
			require.NoError(t, werr)
			require.NoError(t, gerr)
			require.Equal(t, want, got, "%T %v / %T %v", v, v, w, w)
		}
	}
	require.Equal(t, `["42"]`, must(one.GetRecordID(StringMap{"k": int64(42)})))
	require.Equal(t, `["p,\"q","1"]`, must(two.GetRecordID(StringMap{"b": `p,"q`, "a": int32(1)})))

	for _, row := range []StringMap{{"k": nil}, {"other": "x"}, {}} {
		_, err := one.GetRecordID(row)
		require.True(t, errors.Is(err, ErrNoKey), "%v: %v", row, err)
	}
	_, err := two.GetRecordID(StringMap{"b": "x", "a": nil})
	require.True(t, errors.Is(err, ErrNoKey), "%v", err)
	_, err = (&PGTableInfo{TableName: "nokey"}).GetRecordID(StringMap{"k": "x"})
	require.True(t, errors.Is(err, ErrNoKey), "%v", err)
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}
