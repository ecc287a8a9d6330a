package dbsync

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// relationBytes builds a RELATION message with n columns.
func relationBytes(n int) []byte {
	b := []byte{'R', 0, 0, 0x40, 0x01}
	b = append(b, "public\x00wide\x00d"...)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	for i := 0; i < n; i++ {
		b = append(b, byte(i%2))
		b = append(b, strings.Repeat("c", 1+i%5)+"\x00"...)
		b = binary.BigEndian.AppendUint32(b, 23)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

// parseSeeds are well-formed messages of the kinds no capture holds.
func parseSeeds() map[string][]byte {
	return map[string][]byte{
		"relation of 300 columns":           relationBytes(300),
		"type":                              []byte("Y\x00\x00\x40\x01public\x00mood\x00"),
		"origin":                            []byte("O\x00\x00\x00\x00\x01\x02\x03\x04node_a\x00"),
		"truncate cascade restart identity": []byte("T\x00\x00\x00\x02\x03\x00\x00\x40\x0d\x00\x00\x40\x0e"),
		"transactional message":             []byte("M\x01\x00\x00\x00\x00\x01\x02\x03\x04pfx\x00\x00\x00\x00\x03abc"),
	}
}

// TestParseSeedsMatchPglogrepl: the hand-made seeds of FuzzParseMatchesPglogrepl are
// messages both parsers decode, and to the same message.
func TestParseSeedsMatchPglogrepl(t *testing.T) {
	for name, b := range parseSeeds() {
		want, err := pglogreplParse(b)
		require.NoError(t, err, name)
		got, err := Parse(b)
		require.NoError(t, err, name)
		require.Equal(t, want, got, name)
	}
}

// FuzzParseMatchesPglogrepl is a differential fuzz test of Parse against
// pglogrepl.Parse on messages of every kind (BEGIN, COMMIT, ORIGIN, RELATION, TYPE,
// TRUNCATE with options, LOGICAL MESSAGE; row changes are FuzzParseChangeMatchesPglogrepl's):
// where the declared sizes fit the message, Parse must give exactly pglogrepl's message
// or, where pglogrepl fails, an ErrMalformedMessage error; where they do not, an
// ErrMalformedMessage error (pglogrepl would allocate them first).
func FuzzParseMatchesPglogrepl(f *testing.F) {
	for _, c := range captured {
		if b, err := os.ReadFile(filepath.Join("testdata", "pgoutput", c.file)); err == nil {
			f.Add(b)
		}
	}
	for _, b := range parseSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || data[0] == 'I' || data[0] == 'U' || data[0] == 'D' {
			return
		}
		got, gerr := Parse(data)
		if gerr != nil && !errors.Is(gerr, ErrMalformedMessage) {
			t.Fatalf("untyped error %v", gerr)
		}
		if err := checkBounds(data); err != nil {
			if gerr == nil {
				t.Fatalf("Parse accepted %q with sizes past the end: %v", data, err)
			}
			return
		}
		want, werr := pglogreplParse(data)
		switch {
		case werr == nil && gerr == nil:
			require.Equal(t, want, got)
		case werr == nil:
			t.Fatalf("pglogrepl decoded %q as %#v, Parse failed: %v", data, want, gerr)
		case gerr == nil:
			t.Fatalf("Parse accepted %q as %#v, pglogrepl fails: %v", data, got, werr)
		}
	})
}

// TestParseMessageContentPastTheEnd: a logical decoding message whose declared content
// length runs past the end of the message is ErrMalformedMessage, whatever lies past
// the end in the slice's capacity: pglogrepl slices the content up to the capacity,
// which made Parse return a zero byte it made up (its copy's spare capacity) and
// PGMSG.Parse the bytes that follow Data in the caller's buffer (found by
// FuzzParseMatchesPglogrepl).
func TestParseMessageContentPastTheEnd(t *testing.T) {
	msg := func(declared uint32, content string) []byte {
		b := []byte("M\x01\x00\x00\x00\x00\x01\x02\x03\x04p\x00")
		b = binary.BigEndian.AppendUint32(b, declared)
		return append(b, content...)
	}
	good := msg(3, "abc")
	m, err := Parse(good)
	require.NoError(t, err)
	require.Equal(t, "abc", string(m.(*pglogrepl.LogicalDecodingMessage).Content))

	short := msg(4, "abc")
	_, err = Parse(short)
	require.ErrorIs(t, err, ErrMalformedMessage, "Parse")
	buf := append(append([]byte(nil), short...), "SECRET"...)
	_, err = PGMSG{Data: buf[:len(short)]}.Parse()
	require.ErrorIs(t, err, ErrMalformedMessage, "PGMSG.Parse")
	var p Parser
	_, err = p.Parse(PGMSG{Data: buf[:len(short)]})
	require.ErrorIs(t, err, ErrMalformedMessage, "Parser.Parse")
	_, err = Parse(msg(0xffffffff, "abc"))
	require.ErrorIs(t, err, ErrMalformedMessage, "4 GiB declared")
}
