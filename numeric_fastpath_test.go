package dbsync

import (
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// TestDecodeNumericTextMatchesPgx checks that scaledNumericCodec's text shortcut
// (parsePlainNumeric) gives values reflect.DeepEqual to pgx's parser followed by the
// rescaling, on edge cases and random plain decimals of 1 to 20 digits, and that it
// declines what it must leave to pgx.
func TestDecodeNumericTextMatchesPgx(t *testing.T) {
	m := newTypeMap()
	c := scaledNumericCodec{}
	check := func(s string) bool {
		t.Helper()
		got, gerr := c.DecodeValue(m, pgtype.NumericOID, pgtype.TextFormatCode, []byte(s))
		want, werr := c.decodeValuePgx(m, pgtype.NumericOID, pgtype.TextFormatCode, []byte(s))
		if (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
			t.Fatalf("%q: error %v, pgx %v", s, gerr, werr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: %#v, pgx %#v", s, got, want)
		}
		_, fast := parsePlainNumeric([]byte(s))
		return fast
	}
	for _, s := range []string{"0", "-0", "0.00", "-0.00", "00", "000.000", "1", "-1", "10", "100", "-100", "1.50",
		"0.01", "-0.01", "123456789012345678", "-123456789012345678", "12345678901234567.8", "0.000000000000000001",
		"999999999999999999", "1000000000000000000", "-9223372036854775808", "12.50"} {
		check(s)
	}
	for _, s := range []string{"NaN", "Infinity", "-Infinity", "", "-", ".", "1.", ".5", "-.5", "+5", "1e5", "1.2.3",
		"1,5", " 1", "1 ", "--1", "1234567890123456789", "0.1234567890123456789", "abc"} {
		if check(s) {
			t.Fatalf("%q: taken by the shortcut, must go through pgx", s)
		}
	}
	rnd := rand.New(rand.NewSource(1))
	fast := 0
	for i := 0; i < 20000; i++ {
		var sb strings.Builder
		if rnd.Intn(3) == 0 {
			sb.WriteByte('-')
		}
		n := 1 + rnd.Intn(20)
		point := -1
		if rnd.Intn(2) == 0 && n > 1 {
			point = 1 + rnd.Intn(n-1)
		}
		for j := 0; j < n; j++ {
			if j == point {
				sb.WriteByte('.')
			}
			switch rnd.Intn(4) {
			case 0:
				sb.WriteByte('0')
			case 1:
				sb.WriteByte('9')
			default:
				sb.WriteByte(byte('0' + rnd.Intn(10)))
			}
		}
		if check(sb.String()) {
			fast++
		}
	}
	if fast < 10000 {
		t.Fatalf("only %d of 20000 random values took the shortcut", fast)
	}
}
