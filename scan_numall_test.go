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
	"github.com/stretchr/testify/require"
)

// numText prints a pgtype.Numeric as Int "e" Exp (NaN, ±Inf, NULL by name), a run of
// ten or more zeros in Int as 0{n}, so a 131072-digit value stays readable.
func numText(n pgtype.Numeric) string {
	switch {
	case !n.Valid:
		return "NULL"
	case n.NaN:
		return "NaN"
	case n.InfinityModifier == pgtype.Infinity:
		return "Inf"
	case n.InfinityModifier == pgtype.NegativeInfinity:
		return "-Inf"
	case n.Int == nil:
		return fmt.Sprintf("<nil>e%d", n.Exp)
	}
	return fmt.Sprintf("%se%d", zeroRuns(n.Int.String()), n.Exp)
}

// zeroRuns replaces each run of ten or more '0's in s by 0{n}.
func zeroRuns(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] == '0' {
			j++
		}
		switch {
		case j-i >= 10:
			fmt.Fprintf(&b, "0{%d}", j-i)
			i = j
		case j > i:
			b.WriteString(s[i:j])
			i = j
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

// numsIn lists the numerics (and strings) that v, a scan destination, holds, depth first.
func numsIn(v any) string {
	var out []string
	var walk func(r reflect.Value)
	walk = func(r reflect.Value) {
		if !r.IsValid() {
			return
		}
		switch x := r.Interface().(type) {
		case pgtype.Numeric:
			out = append(out, numText(x))
			return
		case string:
			out = append(out, zeroRuns(x))
			return
		case float64:
			out = append(out, fmt.Sprint(x))
			return
		case pgtype.BoundType:
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

// numDestSets are the sets of destinations, one per column of numall (see
// TestNumericEveryDestinationKeepsScale), that each row is scanned into.
func numDestSets() [][]any {
	return [][]any{
		{nil, new(pgtype.Numeric), new(pgtype.Numeric), new([]pgtype.Numeric), new(pgtype.Range[pgtype.Numeric]), new(pgtype.Multirange[pgtype.Range[pgtype.Numeric]]), new(pgtype.Numeric), new([]pgtype.Numeric)},
		{nil, new(*pgtype.Numeric), new(**pgtype.Numeric), new(pgtype.FlatArray[pgtype.Numeric]), new(pgtype.Range[*pgtype.Numeric]), new(pgtype.Multirange[pgtype.Range[*pgtype.Numeric]]), new(*pgtype.Numeric), new(pgtype.Array[pgtype.Numeric])},
		{nil, new(any), new(any), new([]any), new(pgtype.Range[any]), new(pgtype.Multirange[pgtype.Range[any]]), new(any), new([]*pgtype.Numeric)},
		{nil, new(string), new(string), new([]string), new(any), new(any), new(string), new([]string)},
	}
}

// numAllScans scans each insert (ScanTuple) and refresh row (RefreshRow.Scan) of
// numall into every set of numDestSets, recording "path set column type: values".
type numAllScans struct {
	DefaultMessageHandler
	sets func() [][]any // numDestSets when nil
	mu   sync.Mutex
	got  []string
}

func (h *numAllScans) record(path string, id int, names []string, scan func(dest ...any) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sets := numDestSets
	if h.sets != nil {
		sets = h.sets
	}
	for i, set := range sets() {
		if err := scan(set...); err != nil {
			h.got = append(h.got, fmt.Sprintf("%s row %d set %d: %v", path, id, i, err))
			continue
		}
		for j, d := range set {
			if d != nil {
				h.got = append(h.got, fmt.Sprintf("%s row %d set %d %s %T: %s", path, id, i, names[j], d, numsIn(d)))
			}
		}
	}
}

func (h *numAllScans) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, t *PGTableInfo) error {
	var names []string
	for _, c := range reln.Columns {
		names = append(names, c.Name)
	}
	var id int64
	dest := make([]any, len(reln.Columns))
	dest[0] = &id
	if err := t.ScanTuple(reln, m.Tuple, dest...); err != nil {
		return err
	}
	h.record("change", int(id), names, func(dest ...any) error { return t.ScanTuple(reln, m.Tuple, dest...) })
	return nil
}

func (h *numAllScans) HandleRefreshRow(row *RefreshRow) error {
	var id int64
	dest := make([]any, len(row.Columns()))
	dest[0] = &id
	if err := row.Scan(dest...); err != nil {
		return err
	}
	h.record("refresh", int(id), row.Columns(), row.Scan)
	return nil
}

func (h *numAllScans) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

// numAllRows are numall's rows: id, then n numeric(12,2), u numeric, arr numeric[],
// r numrange, mr nummultirange, d numdom, darr numdom[].
var numAllRows = [][]string{
	{`1`, `0`, `100`, `'{100,1.50,0.00,1e3}'`, `'[0.00,100)'`, `'{[0.00,1.50),[100,2e2)}'`, `1.50`, `'{100,0.00}'`},
	{`2`, `'NaN'`, `'-Infinity'`, `'{NaN,Infinity,-Infinity}'`, `'[-Infinity,Infinity]'`, `'{[1e-1000,1.0)}'`, `'Infinity'`, `'{NaN,-0.000}'`},
	{`3`, `-1.5`, `('1' || repeat('0', 131071))::numeric`, `ARRAY[1e-1000, ('1' || repeat('0', 131071))::numeric]`, `'[-1.0,1e-1000)'`, `'{}'`, `-0.0`, `'{}'`},
}

// numAllWant gives, per row and column, the numerics each destination of numDestSets
// holds, the same for every destination that takes numerics (Exp = -scale); string
// destinations (set 3) hold PostgreSQL's text, and set 3's *any the MessageToMap value.
func numAllWant(paths ...string) []string {
	const big = "10{131071}e0"
	tiny := "1e-1000"
	tinyText := "0." + "0{999}" + "1"
	bigText := "10{131071}"
	cols := []string{"n", "u", "arr", "r", "mr", "d", "darr"}
	nums := [][]string{
		{"0e-2", "100e0", "100e0, 150e-2, 0e-2, 1000e0", "0e-2, 100e0", "0e-2, 150e-2, 100e0, 200e0", "150e-2", "100e0, 0e-2"},
		{"NaN", "-Inf", "NaN, Inf, -Inf", "-Inf, Inf", tiny + ", 10e-1", "Inf", "NaN, 0e-3"},
		{"-150e-2", big, tiny + ", " + big, "-10e-1, " + tiny, "", "0e-1", ""},
	}
	texts := [][]string{
		{"0.00", "100", "100, 1.50, 0.00, 1000", "", "", "1.50", "100, 0.00"},
		{"NaN", "-Infinity", "NaN, Infinity, -Infinity", "", "", "Infinity", "NaN, 0.000"},
		{"-1.50", bigText, tinyText + ", " + bigText, "", "", "0.0", ""},
	}
	var want []string
	for _, path := range paths {
		for row := range numAllRows {
			for i, set := range numDestSets() {
				for j, d := range set[1:] {
					v := nums[row][j]
					if i == 3 && cols[j] != "r" && cols[j] != "mr" {
						v = texts[row][j]
					}
					want = append(want, fmt.Sprintf("%s row %d set %d %s %T: %s", path, row+1, i, cols[j], d, v))
				}
			}
		}
	}
	return want
}

// TestNumericEveryDestinationKeepsScale maps every pgtype destination of numeric,
// numeric(p,s), numeric[], numrange, nummultirange, a domain over numeric and an array
// of it, for changes (ScanTuple) and refresh rows (RefreshRow.Scan) of a Refresh and
// of a Snapshot, text and binary, lib/pq and pgx, with NaN, ±Infinity, 1e-1000,
// 10^131071 and trailing zeros: every destination holding a pgtype.Numeric gets
// Exp = -scale, as MessageToMap gives it (docs/VALUES.md), and *string / []string
// PostgreSQL's text in both formats.
func TestNumericEveryDestinationKeepsScale(t *testing.T) {
	for _, binary := range []bool{false, true} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(fmt.Sprintf("binary=%v/%s", binary, driver), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE DOMAIN numdom AS numeric`,
					`CREATE TABLE numall (id int PRIMARY KEY, n numeric(12,2), u numeric, arr numeric[], r numrange, mr nummultirange, d numdom, darr numdom[])`)
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				h := &numAllScans{}
				s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("numall"), WithBinary(binary))
				for _, r := range numAllRows {
					execAll(t, d.DB, `INSERT INTO numall VALUES (`+strings.Join(r, ", ")+`)`)
				}
				n := len(numAllWant("change"))
				waitFor(t, 20*time.Second, func() bool { return len(h.list()) >= n }, "changes")
				_, err = s.RefreshContext(context.Background(), `SELECT * FROM numall ORDER BY id`)
				require.NoError(t, err)
				require.NoError(t, s.Snapshot(context.Background(), "numall"))
				require.NoError(t, stop())
				require.Equal(t, numAllWant("change", "refresh", "refresh"), h.list())
			})
		}
	}
}

// TestNumericOtherDestinations scans numeric, numeric[], numrange[] and a domain
// numeric(12,2) into float, text and sql destinations and arrays of ranges, for changes
// and refresh rows, text and binary, lib/pq and pgx: the same values in every path
// (PostgreSQL's text, with its trailing zeros, in every text destination).
func TestNumericOtherDestinations(t *testing.T) {
	sets := func() [][]any {
		return [][]any{
			{nil, new(float64), new([]float64), new([]pgtype.Range[pgtype.Numeric]), new(float64)},
			{nil, new(sql.NullString), new([]sql.NullString), new(any), new(pgtype.Text)},
			{nil, new(pgtype.Text), new(pgtype.FlatArray[pgtype.Text]), new(pgtype.FlatArray[pgtype.Range[*pgtype.Numeric]]), new(sql.NullFloat64)},
		}
	}
	cols := []string{"n", "arr", "ra", "d"}
	vals := [][]string{
		{"0", "1.5, 2.25", "0e-2, 100e0, 150e-2, NULL", "100"},
		{"0.00", "1.5, 2.25", "0e-2, 100e0, 150e-2", "100.00"},
		{"0.00", "1.5, 2.25", "0e-2, 100e0, 150e-2", "100"},
	}
	for _, binary := range []bool{false, true} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(fmt.Sprintf("binary=%v/%s", binary, driver), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE DOMAIN num2 AS numeric(12,2)`,
					`CREATE TABLE numoth (id int PRIMARY KEY, n numeric(12,2), arr numeric[], ra numrange[], d num2)`)
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				h := &numAllScans{sets: sets}
				s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("numoth"), WithBinary(binary))
				execAll(t, d.DB, `INSERT INTO numoth VALUES (1, 0, '{1.5,2.25}', '{"[0.00,100)","[1.50,)"}', 100)`)
				var want []string
				for _, path := range []string{"change", "refresh", "refresh"} {
					for i, set := range sets() {
						for j, dst := range set[1:] {
							want = append(want, fmt.Sprintf("%s row 1 set %d %s %T: %s", path, i, cols[j], dst, vals[i][j]))
						}
					}
				}
				waitFor(t, 20*time.Second, func() bool { return len(h.list()) >= len(want)/3 }, "changes")
				_, err = s.RefreshContext(context.Background(), `SELECT * FROM numoth`)
				require.NoError(t, err)
				require.NoError(t, s.Snapshot(context.Background(), "numoth"))
				require.NoError(t, stop())
				require.Equal(t, want, h.list())
			})
		}
	}
}
