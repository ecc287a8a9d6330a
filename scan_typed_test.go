package dbsync

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// typedScanRecorder records changes (changeRecorder) and scans every refresh row
// into destinations of the Go type of each value Values gives.
type typedScanRecorder struct {
	changeRecorder
	mu2      sync.Mutex
	problems []string
	rows     int
}

func (r *typedScanRecorder) HandleRefreshRow(row *RefreshRow) error {
	values, err := row.Values()
	if err != nil {
		return err
	}
	names := row.Columns()
	dest := make([]any, len(names))
	for i, n := range names {
		if v := values[n]; v != nil {
			dest[i] = reflect.New(reflect.TypeOf(v)).Interface()
		}
	}
	err = row.Scan(dest...)
	r.mu2.Lock()
	defer r.mu2.Unlock()
	r.rows++
	if err != nil {
		r.problems = append(r.problems, fmt.Sprintf("%s: %v", row.Key, err))
		return nil
	}
	for i, n := range names {
		if dest[i] == nil {
			continue
		}
		g := nanSafe(reflect.ValueOf(dest[i]).Elem().Interface())
		if w := nanSafe(values[n]); !reflect.DeepEqual(w, g) {
			r.problems = append(r.problems, fmt.Sprintf("%s: column %s: Scan into %T gave %#v, Values %#v", row.Key, n, dest[i], g, w))
		}
	}
	return nil
}

// TestTypedScanMatchesValues: ScanTuple (changes) and RefreshRow.Scan (refresh rows)
// into a destination of the Go type MessageToMap / Values give for a column give that
// same value (docs/VALUES.md), for every type and edge value of the parity table.
func TestTypedScanMatchesValues(t *testing.T) {
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, parityDDL)
			rec := &typedScanRecorder{}
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), rec, ForTables("pv"), WithBinary(binary))
			cols := strings.Join(parityCols, ", ")
			for i, r := range parityRows {
				vals := strings.TrimSuffix(strings.Repeat("NULL, ", len(parityCols)), ", ")
				if r != nil {
					vals = strings.Join(r, ", ")
				}
				execAll(t, d.DB, fmt.Sprintf(`INSERT INTO pv (id, %s) VALUES (%d, %s)`, cols, i+1, vals))
			}
			changes := rec.waitChanges(t, len(parityRows))
			var problems []string
			for i, c := range changes {
				rt := rec.tuple(i)
				dest := make([]any, len(rt.reln.Columns))
				for j, col := range rt.reln.Columns {
					if v := c.New[col.Name]; v != nil {
						dest[j] = reflect.New(reflect.TypeOf(v)).Interface()
					}
				}
				if err := c.Table.ScanTuple(rt.reln, rt.tuple, dest...); err != nil {
					problems = append(problems, fmt.Sprintf("%s: %v", c.Key, err))
					continue
				}
				for j, col := range rt.reln.Columns {
					if dest[j] == nil {
						continue
					}
					g := nanSafe(reflect.ValueOf(dest[j]).Elem().Interface())
					if w := nanSafe(c.New[col.Name]); !reflect.DeepEqual(w, g) {
						problems = append(problems, fmt.Sprintf("%s: column %s: ScanTuple into %T gave %#v, MessageToMap %#v", c.Key, col.Name, dest[j], g, w))
					}
				}
			}
			_, err := s.RefreshContext(context.Background(), `SELECT id, `+cols+` FROM pv`)
			require.NoError(t, err)
			require.Equal(t, len(parityRows), rec.rows)
			problems = append(problems, rec.problems...)
			require.Empty(t, problems)
		})
	}
}
