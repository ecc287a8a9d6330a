package rowmatch

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSameValue(t *testing.T) {
	nan := math.NaN()
	f32nan := float32(math.NaN())
	for _, c := range []struct {
		a, b any
		want bool
	}{
		{1, 1, true},
		{"a", "b", false},
		{nan, nan, true},
		{nan, 1.0, false},
		{f32nan, f32nan, true},
		{nan, f32nan, false},
		{[]any{nan, 1.0}, []any{nan, 1.0}, true},
		{[]any{[]any{nan}, []any{2.0}}, []any{[]any{nan}, []any{2.0}}, true},
		{[]any{nan, 1.0}, []any{nan, 2.0}, false},
		{[]any{nan}, []any{nan, nan}, false},
		{[]any{nan}, nan, false},
		{nil, nil, true},
		{nil, 0, false},
	} {
		require.Equal(t, c.want, SameValue(c.a, c.b), "%v ~ %v", c.a, c.b)
	}
}

func TestSameRow(t *testing.T) {
	row := map[string]any{"id": 1, "v": "a", "f": math.NaN()}
	require.True(t, SameRow(row, nil))
	require.True(t, SameRow(row, map[string]any{"id": 1}))
	require.True(t, SameRow(row, map[string]any{"id": 1, "v": "a", "f": math.NaN(), "big": "B"}), "a column row lacks does not count")
	require.False(t, SameRow(row, map[string]any{"id": 1, "v": "b"}))
}

func TestLeaving(t *testing.T) {
	rows := []map[string]any{{"id": 1, "v": "a"}, {"id": 1, "v": "b"}}
	at := func(i int) map[string]any { return rows[i] }
	require.Equal(t, -1, Leaving(0, at, nil, false), "none of ours: the row from before")
	require.Equal(t, -1, Leaving(0, at, nil, true))
	require.Equal(t, 0, Leaving(1, at, map[string]any{"v": "zz"}, true), "the one row there")
	require.Equal(t, 0, Leaving(2, at, map[string]any{"v": "a"}, false), "the one that agrees")
	require.Equal(t, 1, Leaving(2, at, nil, false), "a key only agrees with the latest")
	require.Equal(t, -1, Leaving(2, at, map[string]any{"v": "c"}, false), "none agrees: the row from before")
	require.Equal(t, 1, Leaving(2, at, map[string]any{"v": "c"}, true), "none agrees and the row from before is gone: the latest")
}
