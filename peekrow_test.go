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
