package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// timesIn lists every time.Time that v (a scan destination) holds, depth first, as
// "RFC 3339 instant location", to compare the location each destination gives.
func timesIn(v any) string {
	var out []string
	var walk func(r reflect.Value)
	walk = func(r reflect.Value) {
		if !r.IsValid() {
			return
		}
		if r.Type() == reflect.TypeOf(time.Time{}) {
			t := r.Interface().(time.Time)
			out = append(out, t.Format("2006-01-02T15:04:05Z07:00")+" "+t.Location().String())
			return
		}
		switch r.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !r.IsNil() {
				walk(r.Elem())
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < r.Len(); i++ {
				walk(r.Index(i))
			}
		case reflect.Struct:
			for i := 0; i < r.NumField(); i++ {
				if r.Type().Field(i).IsExported() {
					walk(r.Field(i))
				}
			}
		}
	}
	walk(reflect.ValueOf(v))
	return strings.Join(out, ", ")
}

// tzDestSets are the sets of destinations, one per column of tzall (see
// TestTimestamptzEveryDestinationInUTC), that each row is scanned into.
func tzDestSets() [][]any {
	return [][]any{
		{nil, new(pgtype.Timestamptz), new([]time.Time), new(pgtype.Range[time.Time]), new(pgtype.Multirange[pgtype.Range[time.Time]]), new(pgtype.Timestamptz), new([]time.Time), new(time.Time), new([]time.Time), new(time.Time)},
		{nil, new(*time.Time), new(pgtype.FlatArray[time.Time]), new(pgtype.Range[pgtype.Timestamptz]), new(pgtype.Multirange[pgtype.Range[pgtype.Timestamptz]]), new(sql.NullTime), new(pgtype.Array[time.Time]), new(pgtype.Timestamp), new(pgtype.FlatArray[time.Time]), new(pgtype.Date)},
		{nil, new(any), new([]*time.Time), new(pgtype.Range[any]), new(any), new(time.Time), new([]pgtype.Timestamptz), new(*time.Time), new(any), new(any)},
		{nil, new(time.Time), new(pgtype.Array[pgtype.Timestamptz]), new(any), new(pgtype.Multirange[pgtype.Range[any]]), new(**time.Time), new([]*time.Time), new(any), new([]pgtype.Timestamp), new(*time.Time)},
		{nil, new(sql.NullTime), new([]any), new(*pgtype.Range[time.Time]), new(any), new(any), new(any), new(sql.NullTime), new([]any), new(sql.NullTime)},
		{nil, new(sql.Null[time.Time]), new([]sql.NullTime), new(pgtype.Range[*time.Time]), new(pgtype.Multirange[pgtype.Range[*time.Time]]), new(sql.Null[time.Time]), new(pgtype.FlatArray[pgtype.Timestamptz]), new(sql.Null[time.Time]), new([]*time.Time), new(sql.Null[time.Time])},
	}
}

// tzAllScans scans each insert (ScanTuple) and refresh row (RefreshRow.Scan) of tzall
// into every set of tzDestSets, recording "path set column: times" lines.
type tzAllScans struct {
	DefaultMessageHandler
	mu  sync.Mutex
	got []string
}

func (h *tzAllScans) record(path string, names []string, scan func(dest ...any) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, set := range tzDestSets() {
		if err := scan(set...); err != nil {
			h.got = append(h.got, fmt.Sprintf("%s %d: %v", path, i, err))
			continue
		}
		for j, d := range set {
			if d != nil {
				h.got = append(h.got, fmt.Sprintf("%s %d %s %T: %s", path, i, names[j], d, timesIn(d)))
			}
		}
	}
}

func (h *tzAllScans) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, t *PGTableInfo) error {
	var names []string
	for _, c := range reln.Columns {
		names = append(names, c.Name)
	}
	h.record("change", names, func(dest ...any) error { return t.ScanTuple(reln, m.Tuple, dest...) })
	return nil
}

func (h *tzAllScans) HandleRefreshRow(row *RefreshRow) error {
	h.record("refresh", row.Columns(), row.Scan)
	return nil
}

func (h *tzAllScans) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

// tzAllWant is what tzAllScans records for the row TestTimestamptzEveryDestinationInUTC
// inserts: each instant in UTC, the timestamp's wall clock (05:45) and the date's
// midnight in UTC, for each path given ("change", "refresh").
func tzAllWant(paths ...string) []string {
	const (
		at   = "2020-01-01T00:00:00Z UTC"
		rng  = at + ", 2020-01-02T00:00:00Z UTC"
		wall = "2020-01-01T05:45:00Z UTC"
		day  = at
	)
	cols := []string{"a", "arr", "r", "mr", "d", "darr", "ts", "tsarr", "dt"}
	times := []string{at, at, rng, rng, at, at, wall, wall, day}
	var want []string
	for _, path := range paths {
		for i, set := range tzDestSets() {
			for j, d := range set[1:] {
				want = append(want, fmt.Sprintf("%s %d %s %T: %s", path, i, cols[j], d, times[j]))
			}
		}
	}
	return want
}

// TestTimestamptzEveryDestinationInUTC maps every pgtype destination of timestamptz,
// timestamptz[], tstzrange, tstzmultirange, a domain over timestamptz and an array of
// it, for changes (ScanTuple) and refresh rows (RefreshRow.Scan) of a Refresh and of a
// Snapshot, text and binary,
// lib/pq and pgx, with the process in Asia/Kathmandu and the database's TimeZone
// '+05:45' (POSIX: 5:45 west): every instant comes in UTC; timestamp and date keep
// their wall clock in UTC. Before, only *time.Time, sql.NullTime, **time.Time and the
// MessageToMap types (*any, *[]any, *pgtype.Range[any], ...) gave UTC: pgtype's own
// scans of arrays, ranges and multiranges ([]time.Time, pgtype.Range[time.Time],
// pgtype.FlatArray, ...), *pgtype.Timestamptz and ***time.Time gave time.Local
// (2020-01-01T05:45:00+05:45 Asia/Kathmandu), so one value differed by destination.
func TestTimestamptzEveryDestinationInUTC(t *testing.T) {
	kathmandu, err := time.LoadLocation("Asia/Kathmandu")
	require.NoError(t, err)
	local := time.Local
	time.Local = kathmandu
	t.Cleanup(func() { time.Local = local })
	for _, binary := range []bool{false, true} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(fmt.Sprintf("binary=%v/%s", binary, driver), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE DOMAIN tsdom AS timestamptz`,
					`CREATE TABLE tzall (id int PRIMARY KEY, a timestamptz, arr timestamptz[], r tstzrange, mr tstzmultirange, d tsdom, darr tsdom[], ts timestamp, tsarr timestamp[], dt date)`,
					fmt.Sprintf(`ALTER DATABASE %s SET TimeZone = '+05:45'`, pq.QuoteIdentifier(d.Name)))
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				h := &tzAllScans{}
				s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("tzall"), WithBinary(binary))
				execAll(t, d.DB, `INSERT INTO tzall VALUES (1, '2020-01-01 05:45+05:45', '{"2020-01-01 05:45+05:45"}',
					'[2020-01-01 05:45+05:45,2020-01-02 05:45+05:45)', '{[2020-01-01 05:45+05:45,2020-01-02 05:45+05:45)}',
					'2020-01-01 05:45+05:45', '{"2020-01-01 05:45+05:45"}', '2020-01-01 05:45', '{"2020-01-01 05:45"}', '2020-01-01')`)
				waitFor(t, 20*time.Second, func() bool { return len(h.list()) > 0 }, "change")
				_, err = s.RefreshContext(context.Background(), `SELECT * FROM tzall`)
				require.NoError(t, err)
				require.NoError(t, s.Snapshot(context.Background(), "tzall"))
				require.NoError(t, stop())
				require.Equal(t, tzAllWant("change", "refresh", "refresh"), h.list())
			})
		}
	}
}
