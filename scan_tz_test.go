package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// tzScans records, per scan path, the instants ScanTuple (changes) and RefreshRow.Scan
// (refresh rows) give for a timestamptz column into *time.Time, sql.NullTime and
// **time.Time, as "instant location".
type tzScans struct {
	DefaultMessageHandler
	mu  sync.Mutex
	got []string
}

func (h *tzScans) add(path string, err error, a time.Time, b sql.NullTime, c *time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.got = append(h.got, path+": "+err.Error())
		return
	}
	h.got = append(h.got, fmt.Sprintf("%s: %s %s | %s %s | %s %s", path, a.Format(time.RFC3339), a.Location(),
		b.Time.Format(time.RFC3339), b.Time.Location(), c.Format(time.RFC3339), c.Location()))
}

func (h *tzScans) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, t *PGTableInfo) error {
	var a time.Time
	var b sql.NullTime
	var c *time.Time
	err := t.ScanTuple(reln, m.Tuple, nil, &a, &b, &c)
	h.add("change", err, a, b, c)
	return nil
}

func (h *tzScans) HandleRefreshRow(row *RefreshRow) error {
	var a time.Time
	var b sql.NullTime
	var c *time.Time
	err := row.Scan(nil, &a, &b, &c)
	h.add("refresh", err, a, b, c)
	return nil
}

func (h *tzScans) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

// TestTimestamptzScansInUTC: docs/VALUES.md gives a timestamptz as the instant in
// UTC ("the session's TimeZone never shows"), and ScanTuple and RefreshRow.Scan into
// *time.Time do so; but into sql.NullTime or **time.Time (pgtype's scans, the usual
// destinations of a nullable column) the same value came in time.Local, on every path
// (changes and refresh rows, text and binary, lib/pq and pgx): with the process in
// another zone than UTC (Asia/Kathmandu here) the three destinations of one value
// differed (2020-01-01T00:00:00Z vs 2020-01-01T05:45:00+05:45). All are UTC now.
func TestTimestamptzScansInUTC(t *testing.T) {
	kathmandu, err := time.LoadLocation("Asia/Kathmandu")
	require.NoError(t, err)
	local := time.Local
	time.Local = kathmandu
	t.Cleanup(func() { time.Local = local })
	const want = "2020-01-01T00:00:00Z UTC | 2020-01-01T00:00:00Z UTC | 2020-01-01T00:00:00Z UTC"
	for _, binary := range []bool{false, true} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(fmt.Sprintf("binary=%v/%s", binary, driver), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE TABLE tz (id int PRIMARY KEY, a timestamptz, b timestamptz, c timestamptz)`)
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				h := &tzScans{}
				s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("tz"), WithBinary(binary))
				execAll(t, d.DB, `INSERT INTO tz VALUES (1, '2020-01-01 05:45+05:45', '2020-01-01 00:00+00', '2019-12-31 19:00-05')`)
				waitFor(t, 20*time.Second, func() bool { return len(h.list()) == 1 }, "change")
				_, err = s.RefreshContext(context.Background(), `SELECT * FROM tz`)
				require.NoError(t, err)
				require.NoError(t, stop())
				require.Equal(t, []string{"change: " + want, "refresh: " + want}, h.list())
			})
		}
	}
}
