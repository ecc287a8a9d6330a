package dbsync

import (
	"encoding/binary"
	"math/big"
	"math/bits"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgtype"
)

// Fast paths for the column types most rows are made of. pgtype decodes every value
// through a codec interface, a memoized scan plan and a scan target that escapes to the
// heap; for these types dbsync decodes the common wire forms directly. Each fast path
// takes only input whose pgtype result it reproduces exactly (same Go type, value
// reflect.DeepEqual) and leaves everything else — other shapes, malformed input, and
// so every error — to pgtype: values_fast_test.go compares both on edge cases and
// random inputs.

// fastKind is a type with a fast path (fastNone: none).
type fastKind uint8

const (
	fastNone        fastKind = iota
	fastText                 // text, varchar, bpchar, name: string, both formats
	fastInt2                 // int16
	fastInt4                 // int32
	fastInt8                 // int64
	fastBool                 // bool
	fastTimestamptz          // time.Time in UTC (text: ISO output form only)
	fastNumeric              // pgtype.Numeric (text: plain decimals of up to 18 digits)
	fastJSON                 // json.RawMessage of json
	fastJSONB                // json.RawMessage of jsonb
)

// fastKindFor returns the fast path for values of oid decoded by codec (refTypes' codec
// for oid).
func fastKindFor(oid uint32, codec pgtype.Codec) fastKind {
	switch oid {
	case pgtype.Int2OID:
		return fastInt2
	case pgtype.Int4OID:
		return fastInt4
	case pgtype.Int8OID:
		return fastInt8
	case pgtype.BoolOID:
		return fastBool
	case pgtype.TimestamptzOID:
		return fastTimestamptz
	case pgtype.NumericOID:
		return fastNumeric
	case pgtype.JSONOID:
		return fastJSON
	case pgtype.JSONBOID:
		return fastJSONB
	}
	if _, ok := codec.(pgtype.TextCodec); ok {
		return fastText
	}
	return fastNone
}

// copies reports whether decoding a value of d keeps a copy of its bytes (a string or
// json.RawMessage), which MessageToMap then takes from the tuple's rowBuf.
func (d *decodeInfo) copies() bool {
	switch d.kind {
	case kindEnum, kindUnknown:
		return true
	case kindCodec:
		return d.fast == fastText || d.fast == fastJSON || d.fast == fastJSONB
	}
	return false
}

// decodeFast decodes src by d's fast path. ok is false when it does not apply (d has
// none, or src is not in the form the fast path reproduces): the caller then decodes
// with pgtype.
func (d *decodeInfo) decodeFast(format int16, src []byte, rb *rowBuf) (v any, ok bool, err error) {
	text := format == pgtype.TextFormatCode
	if !text && format != pgtype.BinaryFormatCode {
		return nil, false, nil
	}
	switch d.fast {
	case fastText:
		// pgtype.TextCodec: string(src) in both formats.
		return rb.string(src), true, nil
	case fastInt2:
		if text {
			if n, ok := parseDecimalInt(src); ok && n >= -1<<15 && n < 1<<15 {
				return int16(n), true, nil
			}
		} else if len(src) == 2 {
			return int16(binary.BigEndian.Uint16(src)), true, nil
		}
	case fastInt4:
		if text {
			if n, ok := parseDecimalInt(src); ok && n >= -1<<31 && n < 1<<31 {
				return int32(n), true, nil
			}
		} else if len(src) == 4 {
			return int32(binary.BigEndian.Uint32(src)), true, nil
		}
	case fastInt8:
		if text {
			if n, ok := parseDecimalInt(src); ok {
				return n, true, nil
			}
		} else if len(src) == 8 {
			return int64(binary.BigEndian.Uint64(src)), true, nil
		}
	case fastBool:
		if len(src) == 1 {
			switch {
			case text && src[0] == 't', !text && src[0] == 1:
				return true, true, nil
			case text && src[0] == 'f', !text && src[0] == 0:
				return false, true, nil
			}
		}
	case fastTimestamptz:
		if text {
			if t, ok := parseISOTimestamptz(src); ok {
				return t, true, nil
			}
		}
	case fastNumeric:
		if text {
			if n, ok := parsePlainNumeric(src); ok {
				return n, true, nil
			}
		}
	case fastJSON, fastJSONB:
		v, err := decodeRawJSON(d.fast == fastJSONB, format, src, rb)
		return v, true, err
	}
	return nil, false, nil
}

// parseDecimalInt parses -?[0-9]{1,18}: every such text is an int64, and
// strconv.ParseInt (pgtype's text parser for integers) gives the same value for it.
func parseDecimalInt(src []byte) (int64, bool) {
	i := 0
	if len(src) > 0 && src[0] == '-' {
		i = 1
	}
	if len(src) == i || len(src)-i > 18 {
		return 0, false
	}
	var n int64
	for _, c := range src[i:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if i == 1 {
		n = -n
	}
	return n, true
}

// parseISOTimestamptz parses timestamptz text in the form PostgreSQL's output function
// gives under DateStyle ISO for years 1 to 9999 AD:
//
//	YYYY-MM-DD HH:MM:SS[.f{1,6}](+|-)HH[:MM[:SS]]
//
// into the instant in UTC, which is what pgtype's parser followed by .UTC() gives for
// it. ok is false for anything else (infinity, BC, wider years or offsets, more
// fraction digits, malformed text), which then goes through pgtype.
func parseISOTimestamptz(s []byte) (time.Time, bool) {
	// Shortest: "2006-01-02 15:04:05+00" (22 bytes).
	if len(s) < 22 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[5:7])
	day, ok3 := digits(s[8:10])
	hour, ok4 := digits(s[11:13])
	minute, ok5 := digits(s[14:16])
	sec, ok6 := digits(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || year < 1 || month < 1 || month > 12 || day < 1 ||
		day > daysIn(year, month) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	i := 19
	nsec := 0
	if s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			nsec = nsec*10 + int(s[i]-'0')
			i++
		}
		n := i - start
		if n == 0 || n > 6 {
			return time.Time{}, false
		}
		for ; n < 9; n++ {
			nsec *= 10
		}
	}
	// Offset: sign, two hour digits, then optionally :MM and :SS.
	if i+3 > len(s) || (s[i] != '+' && s[i] != '-') {
		return time.Time{}, false
	}
	neg := s[i] == '-'
	offH, ok := digits(s[i+1 : i+3])
	if !ok {
		return time.Time{}, false
	}
	i += 3
	offM, offS := 0, 0
	if i < len(s) {
		if i+3 > len(s) || s[i] != ':' {
			return time.Time{}, false
		}
		if offM, ok = digits(s[i+1 : i+3]); !ok || offM > 59 {
			return time.Time{}, false
		}
		i += 3
		if i < len(s) {
			if i+3 != len(s) || s[i] != ':' {
				return time.Time{}, false
			}
			if offS, ok = digits(s[i+1 : i+3]); !ok || offS > 59 {
				return time.Time{}, false
			}
		}
	}
	off := offH*3600 + offM*60 + offS
	if neg {
		off = -off
	}
	// What time.Date(year, month, day, hour, minute, sec-off, nsec, time.UTC) gives
	// (the same Time, location UTC), without its normalization of out-of-range
	// fields: the fields are in range here.
	unix := civilDays(year, month, day)*86400 + int64(hour*3600+minute*60+sec-off)
	return time.Unix(unix, int64(nsec)).UTC(), true
}

// civilDays returns the number of days from 1970-01-01 to the given proleptic
// Gregorian date (year >= 1, month 1-12, day 1-31): Howard Hinnant's days_from_civil,
// for non-negative years.
func civilDays(year, month, day int) int64 {
	y := year
	if month <= 2 {
		y--
	}
	era := y / 400
	yoe := y - era*400 // [0, 399]
	mp := month - 3    // March is 0
	if month <= 2 {
		mp = month + 9
	}
	doy := (153*mp+2)/5 + day - 1          // [0, 365]
	doe := yoe*365 + yoe/4 - yoe/100 + doy // [0, 146096]
	return int64(era)*146097 + int64(doe) - 719468
}

// digits parses an all-digit field.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(year, month int) int {
	switch month {
	case 4, 6, 9, 11:
		return 30
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	}
	return 31
}

// newSmallInt returns big.NewInt(x) in one allocation instead of two (the Int and its
// one-word magnitude share it): the same value, reflect.DeepEqual to big.NewInt's.
func newSmallInt(x int64) *big.Int {
	if x == 0 || bits.UintSize != 64 {
		return big.NewInt(x)
	}
	a := new(struct {
		i big.Int
		w [1]big.Word
	})
	u := uint64(x)
	if x < 0 {
		u = -u
	}
	a.w[0] = big.Word(u)
	a.i.SetBits(a.w[:])
	if x < 0 {
		a.i.Neg(&a.i)
	}
	return &a.i
}

// rowBuf is one allocation holding the copies of a tuple's text values (strings) and
// json documents (json.RawMessage), instead of one allocation each. Strings are made
// with unsafe.String over it and never written again; each json.RawMessage is its own
// region with capacity = length, so appending to one cannot reach its neighbours.
// Every value taken from it keeps the whole buffer alive: a string kept from a row
// retains the row's other text and json copies (at most the row's size) until it is
// dropped.
type rowBuf struct{ buf []byte }

// newRowBuf returns a rowBuf with room for n bytes (nil when n is 0).
func newRowBuf(n int) *rowBuf {
	if n == 0 {
		return nil
	}
	return &rowBuf{buf: make([]byte, 0, n)}
}

// take copies src into the buffer and returns the copy, or nil if it does not fit
// (r nil or full): the buffer is never reallocated, so earlier copies stay where
// their strings point.
func (r *rowBuf) take(src []byte) []byte {
	if r == nil || len(src) == 0 || cap(r.buf)-len(r.buf) < len(src) {
		return nil
	}
	start := len(r.buf)
	r.buf = append(r.buf, src...)
	return r.buf[start:len(r.buf):len(r.buf)]
}

// string returns string(src), its bytes in the buffer when they fit.
func (r *rowBuf) string(src []byte) string {
	if b := r.take(src); b != nil {
		return unsafe.String(&b[0], len(b))
	}
	return string(src)
}

// bytes returns a copy of src (nil for an empty src, as append([]byte(nil), src...)),
// in the buffer when it fits.
func (r *rowBuf) bytes(src []byte) []byte {
	if b := r.take(src); b != nil {
		return b
	}
	return append([]byte(nil), src...)
}
