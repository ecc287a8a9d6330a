package dbsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// pglogreplParse is pglogrepl.Parse with panics turned into errors, on data without
// spare capacity (pglogrepl slices a MESSAGE's content up to the capacity).
func pglogreplParse(data []byte) (msg pglogrepl.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	return pglogrepl.Parse(data[:len(data):len(data)])
}

// tupleBytes builds a TupleData: each column is "n", "u", or a kind byte followed by a value.
func tupleBytes(cols ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c[0])
		if c[0] == 't' || c[0] == 'b' {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c)-1))
			b = append(b, c[1:]...)
		}
	}
	return b
}

func changeBytes(kind byte, parts ...any) []byte {
	b := []byte{kind, 0, 0, 0x40, 0x01}
	for _, p := range parts {
		switch v := p.(type) {
		case byte:
			b = append(b, v)
		case []byte:
			b = append(b, v...)
		}
	}
	return b
}

func parseChangeInputs(t testing.TB) map[string][]byte {
	in := map[string][]byte{
		"insert nulls toast binary": changeBytes('I', byte('N'), tupleBytes("t42", "n", "u", "b\x00\x01\x02", "t")),
		"update full":               changeBytes('U', byte('O'), tupleBytes("t1", "told"), byte('N'), tupleBytes("t1", "u")),
		"update new only":           changeBytes('U', byte('N'), tupleBytes("t1", "tnew")),
		"delete full":               changeBytes('D', byte('O'), tupleBytes("t1", "n")),
	}
	for _, c := range captured {
		switch c.file {
		case "insert.bin", "update.bin", "update_key.bin", "delete.bin":
			in[c.file] = readCaptured(t, c.file)
		}
	}
	return in
}

// TestParseChangeMatchesPglogrepl checks that parseChange builds exactly what
// pglogrepl.Parse builds, and that every truncation of a valid message is an error.
func TestParseChangeMatchesPglogrepl(t *testing.T) {
	arena := new(changeArena)
	for name, data := range parseChangeInputs(t) {
		want, err := pglogreplParse(data)
		require.NoError(t, err, name)
		for _, a := range []*changeArena{nil, arena} {
			for _, owned := range []bool{false, true} {
				in := append([]byte(nil), data...)
				got, err := parseChange(in, owned, a)
				require.NoError(t, err, name)
				require.Equal(t, want, got, name)
				require.Equal(t, want.Type(), got.Type(), name)
			}
			for n := 1; n < len(data); n++ {
				_, err := parseChange(data[:n], false, a)
				require.ErrorIs(t, err, ErrMalformedMessage, "%s cut at %d", name, n)
			}
		}
	}
	// A table without columns: pglogrepl rejects the 7-byte INSERT, parseChange does not.
	msg, err := parseChange(changeBytes('I', byte('N'), tupleBytes()), false, nil)
	require.NoError(t, err)
	require.Equal(t, uint16(0), msg.(*pglogrepl.InsertMessage).Tuple.ColumnNum)
	require.Nil(t, msg.(*pglogrepl.InsertMessage).Tuple.Columns)

	for _, bad := range [][]byte{
		changeBytes('I', byte('K'), tupleBytes("t1")),
		changeBytes('U', byte('X'), tupleBytes("t1")),
		changeBytes('U', byte('K'), tupleBytes("t1"), byte('Z'), tupleBytes("t1")),
		changeBytes('D', byte('N'), tupleBytes("t1")),
		changeBytes('I', byte('N'), tupleBytes("x1")),
		changeBytes('B', byte('N'), tupleBytes("t1")),
	} {
		_, err := parseChange(bad, false, nil)
		require.ErrorIs(t, err, ErrMalformedMessage, "%q", bad)
	}
}

// TestParseChangeOwnership checks that an unowned input is copied and an owned one is
// not.
func TestParseChangeOwnership(t *testing.T) {
	data := changeBytes('I', byte('N'), tupleBytes("tabc"))
	msg, err := parseChange(data, false, nil)
	require.NoError(t, err)
	data[len(data)-1] = 'X'
	require.Equal(t, "abc", string(msg.(*pglogrepl.InsertMessage).Tuple.Columns[0].Data))
	msg, err = parseChange(data, true, nil)
	require.NoError(t, err)
	col := msg.(*pglogrepl.InsertMessage).Tuple.Columns[0]
	require.Equal(t, "abX", string(col.Data))
	require.Equal(t, len(col.Data), cap(col.Data), "appending to a value must not overwrite the next one")
}

// TestParseCopiesMessageContent checks that Parse's logical decoding message does not
// share its input (pglogrepl's decoder returns a view of it), and PGMSG.Parse's does.
func TestParseCopiesMessageContent(t *testing.T) {
	data := readCaptured(t, "message.bin")
	msg, err := Parse(data)
	require.NoError(t, err)
	m := msg.(*pglogrepl.LogicalDecodingMessage)
	want := string(m.Content)
	require.NotEmpty(t, want)
	for i := range data {
		data[i] = 0
	}
	require.Equal(t, want, string(m.Content))

	data = readCaptured(t, "message.bin")
	msg, err = PGMSG{Data: data}.Parse()
	require.NoError(t, err)
	content := msg.(*pglogrepl.LogicalDecodingMessage).Content
	data[len(data)-1] ^= 0xff
	require.Equal(t, data[len(data)-1], content[len(content)-1], "PGMSG.Parse keeps views of Data")
}

// TestPGMSGParse checks that PGMSG.Parse gives Parse's message for every captured kind
// and that a row change's values are views of the row's Data, not a copy.
func TestPGMSGParse(t *testing.T) {
	var p Parser
	for _, c := range captured {
		data := readCaptured(t, c.file)
		want, err := Parse(data)
		require.NoError(t, err, c.file)
		got, err := PGMSG{Data: data}.Parse()
		require.NoError(t, err, c.file)
		require.Equal(t, want, got, c.file)
		got, err = p.Parse(PGMSG{Data: data})
		require.NoError(t, err, c.file)
		require.Equal(t, want, got, c.file)
	}
	data := changeBytes('I', byte('N'), tupleBytes("tabc"))
	msg, err := PGMSG{Data: data}.Parse()
	require.NoError(t, err)
	data[len(data)-1] = 'X'
	require.Equal(t, "abX", string(msg.(*pglogrepl.InsertMessage).Tuple.Columns[0].Data))
	_, err = PGMSG{}.Parse()
	require.ErrorIs(t, err, ErrMalformedMessage)
	_, err = p.Parse(PGMSG{})
	require.ErrorIs(t, err, ErrMalformedMessage)
}

// TestParserKeepsEveryMessage parses thousands of changes of every kind and width
// through one Parser (many slabs used up and replaced, wide tuples outside them,
// malformed changes in between), keeps them all, and checks afterwards that each is
// still exactly what Parse builds from its bytes, and that no tuple's Columns can be
// appended to over a neighbour's.
func TestParserKeepsEveryMessage(t *testing.T) {
	var p Parser
	var rows [][]byte
	var got []pglogrepl.Message
	for i := 0; i < 3000; i++ {
		ncol := []int{1, 6, 17, 129, 300, 0}[i%6]
		vals := make([]string, ncol)
		for j := range vals {
			vals[j] = fmt.Sprintf("t%d.%d", i, j)
			if (i+j)%7 == 0 {
				vals[j] = "n"
			}
		}
		var data []byte
		switch i % 4 {
		case 0:
			data = changeBytes('I', byte('N'), tupleBytes(vals...))
		case 1:
			data = changeBytes('U', byte('N'), tupleBytes(vals...))
		case 2:
			data = changeBytes('U', byte('O'), tupleBytes(vals...), byte('N'), tupleBytes(vals...))
		case 3:
			data = changeBytes('D', byte('K'), tupleBytes(vals...))
		}
		if i%50 == 0 {
			_, err := p.Parse(PGMSG{Data: data[:len(data)-1]})
			require.ErrorIs(t, err, ErrMalformedMessage, "row %d cut", i)
		}
		msg, err := p.Parse(PGMSG{Data: data})
		require.NoError(t, err, "row %d", i)
		rows, got = append(rows, data), append(got, msg)
	}
	for i, data := range rows {
		want, err := Parse(data)
		require.NoError(t, err)
		require.Equal(t, want, got[i], "row %d", i)
		var tuples []*pglogrepl.TupleData
		switch m := got[i].(type) {
		case *pglogrepl.InsertMessage:
			tuples = append(tuples, m.Tuple)
		case *pglogrepl.UpdateMessage:
			tuples = append(tuples, m.OldTuple, m.NewTuple)
		case *pglogrepl.DeleteMessage:
			tuples = append(tuples, m.OldTuple)
		}
		for _, tup := range tuples {
			if tup != nil {
				require.Equal(t, len(tup.Columns), cap(tup.Columns), "row %d", i)
			}
		}
	}
}

// BenchmarkParseInsertPglogrepl is pglogrepl.Parse on the captured INSERT, the
// reference for BenchmarkParse/insert.
func BenchmarkParseInsertPglogrepl(b *testing.B) {
	data := readCaptured(b, "insert.bin")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pglogrepl.Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParseChangeMatchesPglogrepl is a differential fuzz test of parseChange against
// pglogrepl.Parse on arbitrary INSERT/UPDATE/DELETE bytes: where pglogrepl decodes a
// message, parseChange must decode the same message; where parseChange accepts input,
// pglogrepl must accept it too and agree (except a tuple of zero columns, which
// pglogrepl's length check rejects). Seeds: parseChangeInputs.
func FuzzParseChangeMatchesPglogrepl(f *testing.F) {
	var fuzzArena changeArena
	// The captured messages and changes holding NULL ('n'), unchanged TOAST ('u') and
	// binary ('b') values, and old tuples of both kinds.
	for _, b := range parseChangeInputs(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || (data[0] != 'I' && data[0] != 'U' && data[0] != 'D') {
			return
		}
		got, gerr := parseChange(data, false, nil)
		if gerr != nil && !errors.Is(gerr, ErrMalformedMessage) {
			t.Fatalf("untyped error %v", gerr)
		}
		// The same through an arena (slabs shared with the earlier inputs).
		if agot, aerr := parseChange(data, false, &fuzzArena); (aerr == nil) != (gerr == nil) || !reflect.DeepEqual(agot, got) {
			t.Fatalf("with an arena: %v, %v; without: %v, %v", agot, aerr, got, gerr)
		}
		if err := checkBounds(data); err != nil {
			// Sizes past the end: pglogrepl would allocate them (up to 4 GiB) before
			// failing; parseChange must reject the message.
			if gerr == nil {
				t.Fatalf("parseChange accepted %q with sizes past the end: %v", data, err)
			}
			return
		}
		want, werr := pglogreplParse(data)
		switch {
		case werr == nil && gerr == nil:
			require.Equal(t, want, got)
		case werr == nil:
			// pglogrepl reads what it needs and ignores trailing bytes; parseChange
			// may reject input pglogrepl half-reads, but never a message it reads whole.
			if len(data) == consumed(want) {
				t.Fatalf("pglogrepl decoded %q, parseChange failed: %v", data, gerr)
			}
		case gerr == nil:
			if !zeroColumns(got) {
				t.Fatalf("parseChange accepted %q that pglogrepl rejects: %v", data, werr)
			}
		}
	})
}

// tuples returns the tuples of a row change message.
func tuples(m pglogrepl.Message) []*pglogrepl.TupleData {
	switch v := m.(type) {
	case *pglogrepl.InsertMessage:
		return []*pglogrepl.TupleData{v.Tuple}
	case *pglogrepl.UpdateMessage:
		if v.OldTuple != nil {
			return []*pglogrepl.TupleData{v.OldTuple, v.NewTuple}
		}
		return []*pglogrepl.TupleData{v.NewTuple}
	case *pglogrepl.DeleteMessage:
		return []*pglogrepl.TupleData{v.OldTuple}
	}
	return nil
}

// consumed is the encoded size of a decoded row change, or -1 when it holds a column
// kind other than n, u, t, b (pglogrepl accepts those silently; parseChange rejects).
func consumed(m pglogrepl.Message) int {
	n := 1 + 4 // type, relation ID
	for _, t := range tuples(m) {
		n += 1 + 2 // tuple marker, column count
		for _, c := range t.Columns {
			switch c.DataType {
			case 'n', 'u':
				n++
			case 't', 'b':
				n += 1 + 4 + len(c.Data)
			default:
				return -1
			}
		}
	}
	return n
}

func zeroColumns(m pglogrepl.Message) bool {
	for _, t := range tuples(m) {
		if t.ColumnNum == 0 {
			return true
		}
	}
	return false
}
