package dbsync

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var jsonValidCases = []string{
	``, ` `, `{}`, `[]`, `{ }`, `[ ]`, ` {} `, "\t\r\n[]\n", `null`, `true`, `false`, `nul`, `tru`, `fals`, `nulll`, `truex`,
	`0`, `-0`, `01`, `-01`, `1.`, `.1`, `1.5`, `-1.5e10`, `1e`, `1e+`, `1E-5`, `1e5.5`, `+1`, `-`, `--1`, `0x1`, `1 2`, `Infinity`, `NaN`,
	`""`, `"`, `"abc`, `"a\"b"`, `"\\"`, `"\/"`, `"\b\f\n\r\t"`, `"\u00e9"`, `"\u00E9"`, `"\u00g9"`, `"\u00"`, `"\x"`, `"\'"`,
	"\"\x00\"", "\"\x1f\"", "\"\x7f\"", "\"\xff\xfe\"", "\"\xc3\xa9\"", "\"a\tb\"",
	`{"a":1}`, `{"a" : 1 , "b" : [ 1 , 2 ] }`, `{"a":}`, `{"a"}`, `{"a":1,}`, `{,}`, `{1:1}`, `{"a":1 "b":2}`, `{'a':1}`,
	`[1,]`, `[,1]`, `[1 2]`, `[1,,2]`, `[[]]`, `[[],{}]`, `[{"a":[{"b":null}]}]`, `[`, `]`, `[}`, `{]`, `{"a":1}}`, `[]]`,
	`{"n": 42, "sku": "sku-42", "tags": ["a", "b"]}`, `{"b": 1.000000000000000000001,  "a": [1, 2], "a": "dup"}`,
	`{"a":1}x`, `[] []`, `"a" "b"`, "[1]\x00", "\x00", `{"a":tru}`, `[-]`, `[1e]`, `{"a":"b":"c"}`, `{"a" 1}`,
}

// tooDeepForStdlib tells whether encoding/json stops at b for its nesting limit (10,000
// levels), which validJSON does not have: the two are compared on the other inputs.
func tooDeepForStdlib(b []byte) bool {
	var out bytes.Buffer
	err := json.Compact(&out, b)
	return err != nil && strings.Contains(err.Error(), "exceeded max depth")
}

// TestValidJSONMatchesStdlib: validJSON agrees with encoding/json.Valid on edge cases,
// nesting up to encoding/json's limit, and random documents and their mutations; past
// that limit it accepts what PostgreSQL accepts.
func TestValidJSONMatchesStdlib(t *testing.T) {
	check := func(s string) {
		t.Helper()
		if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Fatalf("%q: validJSON %v, json.Valid %v", s, got, want)
		}
	}
	for _, s := range jsonValidCases {
		check(s)
	}
	for _, depth := range []int{63, 64, 65, 9999, 10000} {
		check(strings.Repeat("[", depth) + strings.Repeat("]", depth))
		check(strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth))
		check(strings.Repeat("[", depth) + strings.Repeat("]", depth-1))
	}
	for _, depth := range []int{10001, 100000} {
		deep := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		require.True(t, tooDeepForStdlib([]byte(deep)))
		require.True(t, validJSON([]byte(deep)), "depth %d", depth)
		require.True(t, validJSON([]byte(strings.Repeat(`{"a":`, depth)+"1"+strings.Repeat("}", depth))), "depth %d", depth)
		require.False(t, validJSON([]byte(deep[:len(deep)-1])), "depth %d, one bracket short", depth)
		require.False(t, validJSON([]byte(deep+",")), "depth %d, trailing comma", depth)
	}
	rnd := rand.New(rand.NewSource(1))
	const soup = "{}[],:\"\\ -+.0123456789eEtrufalsn\t\nxu/"
	valid := 0
	for i := 0; i < 50000; i++ {
		b := []byte(randomJSON(rnd, 4))
		for n := rnd.Intn(3); n > 0 && len(b) > 0; n-- {
			switch rnd.Intn(3) {
			case 0:
				b[rnd.Intn(len(b))] = soup[rnd.Intn(len(soup))]
			case 1:
				b = b[:rnd.Intn(len(b))]
			default:
				j := rnd.Intn(len(b))
				b = append(b[:j], append([]byte{soup[rnd.Intn(len(soup))]}, b[j:]...)...)
			}
		}
		check(string(b))
		if json.Valid(b) {
			valid++
		}
	}
	if valid < 10000 || valid > 45000 {
		t.Fatalf("%d of 50000 random documents valid: the generator does not exercise both sides", valid)
	}
}

// randomJSON returns a random valid JSON document with random whitespace.
func randomJSON(rnd *rand.Rand, depth int) string {
	ws := func() string { return []string{"", "", " ", "\n", "\t ", "\r\n"}[rnd.Intn(6)] }
	switch k := rnd.Intn(9); {
	case depth > 0 && k == 0:
		var parts []string
		for n := rnd.Intn(4); n > 0; n-- {
			parts = append(parts, ws()+randomJSON(rnd, depth-1)+ws())
		}
		return "[" + strings.Join(parts, ",") + ws() + "]"
	case depth > 0 && k == 1:
		var parts []string
		for n := rnd.Intn(4); n > 0; n-- {
			parts = append(parts, ws()+randomJSONString(rnd)+ws()+":"+ws()+randomJSON(rnd, depth-1)+ws())
		}
		return "{" + strings.Join(parts, ",") + ws() + "}"
	case k == 2:
		return []string{"true", "false", "null"}[rnd.Intn(3)]
	case k <= 5:
		return randomJSONString(rnd)
	default:
		s := []string{"0", "-0", "7", "-12", "3.25", "1e9", "-4.5E-3", "6e+2", "100"}[rnd.Intn(9)]
		return s
	}
}

func randomJSONString(rnd *rand.Rand) string {
	parts := []string{"a", "é", `\"`, `\\`, `\/`, `\n`, `\u00e9`, `\uD83D`, " ", "\xff", "x y", "日"}
	var sb strings.Builder
	sb.WriteByte('"')
	for n := rnd.Intn(5); n > 0; n-- {
		sb.WriteString(parts[rnd.Intn(len(parts))])
	}
	sb.WriteByte('"')
	return sb.String()
}

// FuzzValidJSONMatchesStdlib: validJSON and encoding/json.Valid agree on any input
// that is not deeper than encoding/json's nesting limit.
func FuzzValidJSONMatchesStdlib(f *testing.F) {
	for _, s := range jsonValidCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want && !tooDeepForStdlib(b) {
			t.Fatalf("%q: validJSON %v, json.Valid %v", b, got, want)
		}
	})
}

// BenchmarkValidJSON compares validJSON with json.Valid on the benchmark table's attrs
// document.
func BenchmarkValidJSON(b *testing.B) {
	doc := []byte(`{"n": 42, "sku": "sku-42", "tags": ["a", "b"]}`)
	b.Run("validJSON", func(b *testing.B) {
		for b.Loop() {
			if !validJSON(doc) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		for b.Loop() {
			if !json.Valid(doc) {
				b.Fatal("invalid")
			}
		}
	})
}

// TestStdlibTooDeep: the nesting that makes JSONValue render a document as its text
// counts containers, not brackets inside strings (escaped quotes included).
func TestStdlibTooDeep(t *testing.T) {
	deep := strings.Repeat("[", 10001) + strings.Repeat("]", 10001)
	require.True(t, stdlibTooDeep([]byte(deep)))
	require.False(t, stdlibTooDeep([]byte(strings.Repeat("[", 10000)+strings.Repeat("]", 10000))))
	inString := `["\"` + strings.Repeat("[", 20001) + `"]`
	require.True(t, json.Valid([]byte(inString)))
	require.False(t, stdlibTooDeep([]byte(inString)))
	for _, doc := range []string{deep, inString} {
		_, err := json.Marshal(map[string]any{"v": mustJSONValue(t, json.RawMessage(doc))})
		require.NoError(t, err, "JSONValue's result must encode")
	}
}

func mustJSONValue(t *testing.T, v any) any {
	t.Helper()
	j, err := jsonValue(nil, v)
	require.NoError(t, err)
	return j
}
