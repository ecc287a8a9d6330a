package dbsync

import (
	"fmt"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestTextCastMatchesOutput checks on the server that for every type in textCastOIDs,
// "x::text" gives exactly format('%s', x) (the type's output function, what pgoutput
// sends), on edge values and under several session settings; and that the excluded
// types really differ (so the list is not wider than it must be by accident).
func TestTextCastMatchesOutput(t *testing.T) {
	d := pgtest.NewDatabase(t)
	samples := map[uint32][]string{
		20:   {"0", "-9223372036854775808", "9223372036854775807"},
		21:   {"-32768", "32767", "0"},
		23:   {"-2147483648", "2147483647", "42"},
		25:   {"''", "'  padded  '", "E'tab\\there'", "'ünïcödé'"},
		1043: {"''::varchar(5)", "'ab  '::varchar(5)"},
		26:   {"0", "4294967295"},
		700:  {"'NaN'", "'-Infinity'", "'-0'", "1.17549435e-38", "3.4028235e38", "0.1"},
		701:  {"'NaN'", "'Infinity'", "'-0'", "0.1", "1e308", "5e-324", "123456789.123456789"},
		1700: {"'NaN'", "0", "-0.000", "1.50", "123456789012345678901234567890.123456789", "1e-20"},
		1082: {"'infinity'", "'-infinity'", "'0044-03-15 BC'", "'2024-02-29'"},
		1083: {"'00:00'", "'23:59:59.999999'", "'24:00'"},
		1114: {"'infinity'", "'2024-01-01 00:00:00.5'", "'0001-01-01 00:00:00 BC'"},
		1184: {"'-infinity'", "'2024-03-01 12:34:56.789+02'", "'1900-01-01 00:00+00'"},
		1186: {"'1 year 2 mons 3 days 04:05:06.7'", "'-3 mons'", "'0'", "'-1 day +02:00'"},
		2950: {"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"},
		114:  {"'{\"b\": 1,  \"a\": [true, null]}'", "'  [ ]  '"},
		3802: {"'{\"b\": 1,  \"a\": [true, null]}'", "'\"\\u00e9\"'", "'1e2'"},
		17:   {"''::bytea", "'\\x00ff'::bytea", "'abc'::bytea"},
	}
	settings := [][]string{
		{"DateStyle", "ISO, MDY"},
		{"DateStyle", "SQL, DMY"},
		{"IntervalStyle", "sql_standard"},
		{"extra_float_digits", "0"},
		{"bytea_output", "escape"},
		{"TimeZone", "Asia/Kathmandu"},
	}
	conn, err := d.DB.Conn(t.Context())
	require.NoError(t, err)
	defer conn.Close()
	for oid := range textCastOIDs {
		vals, ok := samples[oid]
		require.True(t, ok, "no samples for type %d", oid)
		var typ string
		require.NoError(t, conn.QueryRowContext(t.Context(), `SELECT $1::regtype::text`, oid).Scan(&typ))
		for _, set := range append([][]string{nil}, settings...) {
			if set != nil {
				_, err := conn.ExecContext(t.Context(), `SELECT set_config($1, $2, false)`, set[0], set[1])
				require.NoError(t, err)
			}
			for _, v := range append(vals, "NULL") {
				var cast, formatted *string
				q := fmt.Sprintf(`SELECT (%[1]s)::%[2]s::text, CASE WHEN num_nulls((%[1]s)::%[2]s) = 1 THEN NULL ELSE format('%%s', (%[1]s)::%[2]s) END`, v, typ)
				require.NoError(t, conn.QueryRowContext(t.Context(), q).Scan(&cast, &formatted), q)
				require.Equal(t, formatted, cast, "%s under %v", q, set)
			}
		}
		_, err := conn.ExecContext(t.Context(), `RESET ALL`)
		require.NoError(t, err)
	}
	// The excluded ones differ.
	for _, v := range []string{"true", "'10.0.0.1'::inet", "'ab'::char(4)"} {
		var cast, formatted string
		require.NoError(t, conn.QueryRowContext(t.Context(), fmt.Sprintf(`SELECT (%[1]s)::text, format('%%s', %[1]s)`, v)).Scan(&cast, &formatted))
		require.NotEqual(t, formatted, cast, v)
	}
}
