package dbsync

import (
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

func TestParseLSN(t *testing.T) {
	for _, s := range []string{"0/0", "0/1", "16/B374D848", "FFFFFFFF/FFFFFFFF", "1/a0"} {
		want, err := pglogrepl.ParseLSN(s)
		require.NoError(t, err, s)
		got, err := parseLSN([]byte(s))
		require.NoError(t, err, s)
		require.Equal(t, want, got, s)
	}
	for _, s := range []string{"", "/", "0/", "/0", "1", "0/0/0", "G/0", "123456789/0", "0/123456789", " 0/0"} {
		_, err := parseLSN([]byte(s))
		require.ErrorIs(t, err, ErrMalformedMessage, s)
	}
}

func BenchmarkParseLSN(b *testing.B) {
	in := []byte("16/B374D848")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseLSN(in); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParseXid(t *testing.T) {
	for in, want := range map[string]uint32{"0": 0, "3": 3, "4294967295": 4294967295, "0000000012": 12} {
		got, err := parseXid([]byte(in))
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "4294967296", "12a", " 1", "99999999999"} {
		_, err := parseXid([]byte(in))
		require.ErrorIs(t, err, ErrMalformedMessage, in)
	}
}

// TestRowScannerCopiesData checks that each row's data is its own bytes: later rows
// (and the driver reusing its buffer) never change an earlier row's, appending to one
// cannot reach its neighbour, and large data gets its own allocation.
func TestRowScannerCopiesData(t *testing.T) {
	var r rowScanner
	buf := []byte("first")
	a := r.copyData(buf)
	copy(buf, "XXXXX")
	b := r.copyData([]byte("second"))
	require.Equal(t, "first", string(a))
	require.Equal(t, "second", string(b))
	require.Equal(t, len(a), cap(a), "capacity is capped: appending copies")
	_ = append(a, '!')
	require.Equal(t, "second", string(b))
	require.Nil(t, r.copyData(nil))
	require.NotNil(t, r.copyData([]byte{}))
	big := make([]byte, dataSlabSize/2)
	c := r.copyData(big)
	require.Len(t, c, len(big))
	d := r.copyData([]byte("after"))
	require.Equal(t, "after", string(d))
	// Filling the slab starts a new one; earlier copies stay intact.
	for i := 0; i < 2*dataSlabSize/100; i++ {
		r.copyData(make([]byte, 100))
	}
	require.Equal(t, "first", string(a))
	require.Equal(t, "after", string(d))
}
