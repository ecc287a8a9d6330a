package dbsync

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// checkFastMatchesPgtype decodes src of type oid with the fast path (values_fast.go)
// and with pgtype alone (the same decodeInfo without its fast path), and fails unless
// both give the same error or the same Go type and reflect.DeepEqual value. It reports
// whether the fast path took the value.
func checkFastMatchesPgtype(t *testing.T, oid uint32, format int16, src []byte) bool {
	t.Helper()
	d := resolveDecode(oid, nil)
	require.NotEqual(t, fastNone, d.fast, "oid %d has a fast path", oid)
	slow := *d
	slow.fast = fastNone
	m := newTypeMap()
	want, werr := slow.decode(m, format, src, nil)
	for _, rb := range []*rowBuf{nil, newRowBuf(len(src))} {
		got, gerr := d.decode(m, format, src, rb)
		if (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
			t.Fatalf("oid %d format %d %q: error %v, pgtype %v", oid, format, src, gerr, werr)
		}
		if reflect.TypeOf(got) != reflect.TypeOf(want) || !reflect.DeepEqual(got, want) {
			t.Fatalf("oid %d format %d %q: %#v (%T), pgtype %#v (%T)", oid, format, src, got, got, want, want)
		}
	}
	_, ok, _ := d.decodeFast(format, src, nil)
	return ok
}

// TestDecodeFastMatchesPgtype: the integer, bool, text, timestamptz, numeric and json
// fast paths give exactly pgtype's values (and leave errors to pgtype) on edge cases
// and random inputs, in both formats.
func TestDecodeFastMatchesPgtype(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	text, bin := int16(pgtype.TextFormatCode), int16(pgtype.BinaryFormatCode)
	ints := []uint32{pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID}

	t.Run("int", func(t *testing.T) {
		edge := []string{"0", "-0", "00", "007", "-007", "+1", "-", "", " 1", "1 ", "1_0", "0x10", "1e3",
			"32767", "32768", "-32768", "-32769", "2147483647", "2147483648", "-2147483648", "-2147483649",
			"999999999999999999", "-999999999999999999", "1000000000000000000", "9223372036854775807",
			"9223372036854775808", "-9223372036854775808", "-9223372036854775809", "--1", "1-", "12a"}
		fast := 0
		for _, oid := range ints {
			for _, s := range edge {
				checkFastMatchesPgtype(t, oid, text, []byte(s))
			}
			for i := 0; i < 20000; i++ {
				var sb strings.Builder
				if rnd.Intn(3) == 0 {
					sb.WriteByte("-+ "[rnd.Intn(3)])
				}
				for n := 1 + rnd.Intn(20); n > 0; n-- {
					if rnd.Intn(50) == 0 {
						sb.WriteByte("-a _."[rnd.Intn(5)])
					} else {
						sb.WriteByte(byte('0' + rnd.Intn(10)))
					}
				}
				if checkFastMatchesPgtype(t, oid, text, []byte(sb.String())) {
					fast++
				}
			}
			for n := 0; n <= 9; n++ {
				for i := 0; i < 200; i++ {
					b := make([]byte, n)
					rnd.Read(b)
					checkFastMatchesPgtype(t, oid, bin, b)
				}
			}
			checkFastMatchesPgtype(t, oid, bin, binary.BigEndian.AppendUint64(nil, 1<<63))
		}
		require.Greater(t, fast, 20000, "most random integers take the fast path")
	})

	t.Run("bool", func(t *testing.T) {
		for _, s := range []string{"t", "f", "true", "false", "T", "F", "1", "0", "", "tr", " t", "t ", "y", "no", "x"} {
			checkFastMatchesPgtype(t, pgtype.BoolOID, text, []byte(s))
		}
		for _, b := range [][]byte{{}, {0}, {1}, {2}, {255}, {1, 0}, {0, 0}} {
			checkFastMatchesPgtype(t, pgtype.BoolOID, bin, b)
		}
		require.True(t, checkFastMatchesPgtype(t, pgtype.BoolOID, text, []byte("t")))
	})

	t.Run("text", func(t *testing.T) {
		for _, oid := range []uint32{pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID} {
			for _, f := range []int16{text, bin} {
				checkFastMatchesPgtype(t, oid, f, []byte{})
				for i := 0; i < 500; i++ {
					b := make([]byte, rnd.Intn(40))
					rnd.Read(b)
					require.True(t, checkFastMatchesPgtype(t, oid, f, b))
				}
			}
		}
	})

	t.Run("timestamptz", func(t *testing.T) {
		edge := []string{"2026-01-02 03:04:05.123456+00", "2026-01-02 03:04:05+00", "2000-01-01 00:00:00+00",
			"0001-01-01 00:00:00+00", "0001-01-01 00:00:00+14", "0001-01-01 00:00:00-15:59:59", "9999-12-31 23:59:59.999999-15:59",
			"9999-12-31 23:59:59.999999+15:59", "1900-01-01 00:00:00+05:53:28", "2024-02-29 12:00:00+01", "2023-02-29 12:00:00+01",
			"2100-02-29 12:00:00+00", "2000-02-29 12:00:00+00", "2026-13-01 00:00:00+00", "2026-00-01 00:00:00+00",
			"2026-04-31 00:00:00+00", "2026-01-01 24:00:00+00", "2026-01-01 23:60:00+00", "2026-01-01 23:59:60+00",
			"2026-01-01 00:00:00.+00", "2026-01-01 00:00:00.1234567+00", "2026-01-01 00:00:00.9999995+00",
			"2026-01-01 00:00:00.000001+00", "2026-01-01 00:00:00.5", "2026-01-01 00:00:00", "2026-01-01",
			"2026-01-01 00:00:00Z", "2026-01-01 00:00:00+0", "2026-01-01 00:00:00+123", "2026-01-01 00:00:00+12:3",
			"2026-01-01 00:00:00+12:30:", "2026-01-01 00:00:00+12:60", "2026-01-01 00:00:00+12:30:60",
			"2026-01-01 00:00:00+12:30:30x", "2026-01-01 00:00:00+00 BC", "0001-01-01 00:00:00+00 BC",
			"12026-01-01 00:00:00+00", "0000-01-01 00:00:00+00", "infinity", "-infinity", "", "2026-01-01T00:00:00+00",
			"2026-01-01 00:00:00-00", "2026/01/01 00:00:00+00", "2026-01-01 00:00:00+-1"}
		for _, s := range edge {
			checkFastMatchesPgtype(t, pgtype.TimestamptzOID, text, []byte(s))
		}
		require.True(t, checkFastMatchesPgtype(t, pgtype.TimestamptzOID, text, []byte(edge[0])))
		const mut = "0123456789-:+. ZB"
		fast := 0
		for i := 0; i < 30000; i++ {
			s := fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d", rnd.Intn(10001), rnd.Intn(14), rnd.Intn(33), rnd.Intn(25), rnd.Intn(61), rnd.Intn(61))
			if n := rnd.Intn(9); n > 0 {
				s += "." + fmt.Sprintf("%09d", rnd.Intn(1e9))[:n]
			}
			s += []string{"+", "-"}[rnd.Intn(2)] + fmt.Sprintf("%02d", rnd.Intn(20))
			if rnd.Intn(2) == 0 {
				s += fmt.Sprintf(":%02d", rnd.Intn(61))
				if rnd.Intn(2) == 0 {
					s += fmt.Sprintf(":%02d", rnd.Intn(61))
				}
			}
			b := []byte(s)
			if rnd.Intn(4) == 0 {
				b[rnd.Intn(len(b))] = mut[rnd.Intn(len(mut))]
			}
			if rnd.Intn(20) == 0 {
				b = b[:rnd.Intn(len(b))]
			}
			if checkFastMatchesPgtype(t, pgtype.TimestamptzOID, text, b) {
				fast++
			}
		}
		require.Greater(t, fast, 5000, "valid random timestamps take the fast path")
		for i := 0; i < 200; i++ {
			b := make([]byte, 8)
			rnd.Read(b)
			checkFastMatchesPgtype(t, pgtype.TimestamptzOID, bin, b)
		}
	})

	t.Run("numeric", func(t *testing.T) {
		// parsePlainNumeric against pgx's parser: TestDecodeNumericTextMatchesPgx. Here:
		// the fast path gives what the numeric codec gives, in both formats.
		for _, s := range []string{"0", "-0", "0.00", "1.50", "-123.456", "100", "NaN", "Infinity", "1e5", "", "123456789012345678901"} {
			checkFastMatchesPgtype(t, pgtype.NumericOID, text, []byte(s))
		}
		for _, x := range []int64{0, 1, -1, 42, -42, 1 << 62, -1 << 62, 999999999999999999} {
			got := newSmallInt(x)
			require.True(t, reflect.DeepEqual(got, big.NewInt(x)), "%d", x)
			require.Equal(t, 0, got.Cmp(big.NewInt(x)))
		}
	})

	t.Run("json", func(t *testing.T) {
		docs := []string{`{}`, `[]`, `null`, `"x"`, `{"n": 42, "sku": "sku-42", "tags": ["a", "b"]}`, ``, `{`, `{"a":}`,
			` 1 `, `01`, `1.`, `"\u00e9"`, `"\x"`, "\"\x01\"", `[1,]`, `{"a":1}x`, `tru`, `true`}
		for _, oid := range []uint32{pgtype.JSONOID, pgtype.JSONBOID} {
			for _, s := range docs {
				checkFastMatchesPgtype(t, oid, text, []byte(s))
				checkFastMatchesPgtype(t, oid, bin, []byte(s))
				checkFastMatchesPgtype(t, oid, bin, append([]byte{1}, s...))
				checkFastMatchesPgtype(t, oid, bin, append([]byte{2}, s...))
			}
		}
	})
}

// TestRowBuf: copies share one buffer, never overlap and never move; a value that
// does not fit is copied on its own.
func TestRowBuf(t *testing.T) {
	rb := newRowBuf(8)
	a := rb.string([]byte("abc"))
	j := rb.bytes([]byte("[1]"))
	require.Equal(t, "abc", a)
	require.Equal(t, "[1]", string(j))
	require.Equal(t, 3, cap(j), "a json copy cannot be appended into its neighbour")
	j = append(j, '!')
	require.Equal(t, "abc", a)
	big := rb.string([]byte("toolong"))
	require.Equal(t, "toolong", big)
	require.NotEqual(t, unsafe.Pointer(unsafe.StringData(a)), unsafe.Pointer(unsafe.StringData(big)))
	require.Equal(t, "", rb.string(nil))
	require.Nil(t, rb.bytes(nil))
	var none *rowBuf
	require.Equal(t, "x", none.string([]byte("x")))
	require.Nil(t, newRowBuf(0))
}

// TestCivilDays: civilDays gives time.Date's day number for every date from
// 0001-01-01 to 9999-12-31.
func TestCivilDays(t *testing.T) {
	d := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	end := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for ; d.Before(end); d = d.AddDate(0, 0, 1) {
		if got, want := civilDays(d.Year(), int(d.Month()), d.Day()), d.Unix()/86400; got != want {
			t.Fatalf("%s: civilDays %d, want %d", d.Format("2006-01-02"), got, want)
		}
	}
}

// TestScanIntRange: ScanTuple's integer fast path takes a value into an integer
// variable only when it is a value of the column's type (text in its range, binary of
// its width) and fits the variable; otherwise it declines and the caller falls back to
// pgtype, which reports the overflow or the malformed value.
func TestScanIntRange(t *testing.T) {
	var i16 int16
	var i32 int32
	var i64 int64
	require.True(t, scanInt(&i16, fastInt2, true, []byte("-32768")))
	require.Equal(t, int16(-32768), i16)
	require.False(t, scanInt(&i16, fastInt2, true, []byte("32768")))
	require.Equal(t, int16(-32768), i16, "untouched when declined")
	require.True(t, scanInt(&i32, fastInt4, true, []byte("2147483647")))
	require.Equal(t, int32(2147483647), i32)
	require.False(t, scanInt(&i32, fastInt4, true, []byte("2147483648")))
	require.True(t, scanInt(&i64, fastInt8, true, []byte("-999999999999999999")))
	require.Equal(t, int64(-999999999999999999), i64)
	require.False(t, scanInt(&i64, fastInt8, true, []byte("9223372036854775807")), "19 digits: left to pgtype")
	require.False(t, scanInt(&i64, fastInt8, true, []byte("12x")))
	// Text outside the column type's range is not a value of it, whatever the variable.
	require.False(t, scanInt(&i64, fastInt2, true, []byte("40000")))
	require.False(t, scanInt(&i64, fastInt4, true, []byte("-2147483649")))
	require.True(t, scanInt(&i64, fastInt4, true, []byte("-2147483648")))
	require.Equal(t, int64(-2147483648), i64)
	// Binary: the column type's width (2, 4 or 8 big-endian bytes) and nothing else.
	require.True(t, scanInt(&i32, fastInt2, false, []byte{0xff, 0xfe}))
	require.Equal(t, int32(-2), i32)
	require.False(t, scanInt(&i32, fastInt4, false, []byte{0xff, 0xfe}), "2 bytes are not an int4")
	require.False(t, scanInt(&i64, fastInt4, false, []byte{0, 0, 0, 1, 0, 0, 0, 0}), "8 bytes are not an int4")
	require.False(t, scanInt(&i32, fastInt8, false, []byte{0, 0, 0, 1, 0, 0, 0, 0}))
	require.True(t, scanInt(&i32, fastInt8, false, []byte{0, 0, 0, 0, 0, 0, 0, 7}))
	require.Equal(t, int32(7), i32)
	require.True(t, scanInt(&i64, fastInt8, false, []byte{0, 0, 0, 1, 0, 0, 0, 0}))
	require.Equal(t, int64(1<<32), i64)
	require.False(t, scanInt(&i64, fastInt8, false, []byte{1, 2, 3}))
}
