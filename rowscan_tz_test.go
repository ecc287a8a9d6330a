package dbsync

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestScanRowTimeZoneUnknownValue: ScanRow's values equal the changes' in a session of
// any TimeZone for the types dbsync decodes (a timestamptz, also in an array or a
// range, is an instant), but a value kept as its text (UnknownValue: a composite, a
// user-defined range) prints a timestamptz it holds in the session's TimeZone, where
// changes (and Refresh and snapshot selections) print it in UTC: the text, and the
// record ID of such a key, match only with TimeZone UTC (docs/VALUES.md, ScanRow).
func TestScanRowTimeZoneUnknownValue(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TYPE stamped AS (at timestamptz, n int)`,
		`CREATE TABLE tzk (k stamped PRIMARY KEY, at timestamptz, ats timestamptz[], r tstzrange)`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("tzk"), WithMessageHandler(rec))
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB, `INSERT INTO tzk VALUES (ROW('2020-01-01 00:00+00', 1), '2020-01-01 00:00+00', '{"2020-01-01 00:00+00"}', '[2020-01-01 00:00+00,)')`)
	c := rec.waitChanges(t, 1)[0]
	require.Equal(t, UnknownValue{Type: "stamped", Text: `("2020-01-01 00:00:00+00",1)`}, c.New["k"])
	require.Equal(t, `["(\"2020-01-01 00:00:00+00\",1)"]`, c.Key)
	scan := func(tz string) (StringMap, string) {
		ctx := context.Background()
		conn, err := d.DB.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.ExecContext(ctx, `SELECT set_config('TimeZone', $1, false)`, tz)
		require.NoError(t, err)
		rows, err := conn.QueryContext(ctx, `SELECT `+c.Table.SelectList()+` FROM `+c.Table.QuotedName())
		require.NoError(t, err)
		defer rows.Close()
		require.True(t, rows.Next())
		row, err := c.Table.ScanRow(rows)
		require.NoError(t, err)
		key, err := c.Table.GetRecordID(row)
		require.NoError(t, err)
		return row, key
	}
	row, key := scan("UTC")
	requireSameRow(t, c.New, row)
	require.Equal(t, c.Key, key)
	row, key = scan("Asia/Kathmandu")
	for _, col := range []string{"at", "ats", "r"} {
		require.Equal(t, c.New[col], row[col], col)
	}
	require.Equal(t, UnknownValue{Type: "stamped", Text: `("2020-01-01 05:45:00+05:45",1)`}, row["k"])
	require.Equal(t, `["(\"2020-01-01 05:45:00+05:45\",1)"]`, key)
}
