package dbsync

import (
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestOutputTextVsCast records why SelectList uses format('%s', col) and not col::text:
// format calls the type's output function (what pgoutput sends), while some casts to
// text differ (bool -> "true", inet -> always with the netmask). bytea and timestamptz
// agree either way.
func TestOutputTextVsCast(t *testing.T) {
	d := pgtest.NewDatabase(t)
	var fb, cb, fi, ci, fby, cby, ft, ct string
	require.NoError(t, d.DB.QueryRow(`SELECT format('%s', true), true::text,
		format('%s', '10.0.0.1'::inet), '10.0.0.1'::inet::text,
		format('%s', '\x00ff'::bytea), '\x00ff'::bytea::text,
		format('%s', '2020-01-01 00:00+00'::timestamptz), '2020-01-01 00:00+00'::timestamptz::text`).
		Scan(&fb, &cb, &fi, &ci, &fby, &cby, &ft, &ct))
	require.Equal(t, []string{"t", "true"}, []string{fb, cb})
	require.Equal(t, []string{"10.0.0.1", "10.0.0.1/32"}, []string{fi, ci})
	require.Equal(t, fby, cby)
	require.Equal(t, ft, ct)
}
