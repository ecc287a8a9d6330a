package dbsync

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// changeRecorder decodes every row change with DecodeChange (as the built-in handlers
// do) and records it, plus RELATION, TRUNCATE and logical decoding messages as lines.
type changeRecorder struct {
	DefaultMessageHandler
	mu      sync.Mutex
	changes []*Change
	tuples  []recordedTuple        // the new tuple of each INSERT/UPDATE, the old one of a DELETE
	olds    []*pglogrepl.TupleData // the old tuple of each UPDATE (nil: none), nil otherwise
	events  []string
	err     error
}

// recordedTuple is a change's tuple as the handler got it, for ScanTuple checks.
type recordedTuple struct {
	reln  *pglogrepl.RelationMessage
	tuple *pglogrepl.TupleData
}

func (r *changeRecorder) change(msg pglogrepl.Message, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	c, err := DecodeChange(msg, reln, info)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.err = err
		return err
	}
	r.changes = append(r.changes, c)
	var tuple, old *pglogrepl.TupleData
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		tuple = m.Tuple
	case *pglogrepl.UpdateMessage:
		tuple, old = m.NewTuple, m.OldTuple
	case *pglogrepl.DeleteMessage:
		tuple = m.OldTuple
	}
	r.tuples = append(r.tuples, recordedTuple{reln, tuple})
	r.olds = append(r.olds, old)
	r.events = append(r.events, fmt.Sprintf("%s %s %s", strings.ToUpper(string(c.Op)), info.TableName, c.Key))
	return nil
}

func (r *changeRecorder) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	return r.change(m, reln, info)
}
func (r *changeRecorder) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	return r.change(m, reln, info)
}
func (r *changeRecorder) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, info *PGTableInfo) error {
	return r.change(m, reln, info)
}
func (r *changeRecorder) HandleRelationMessage(_ int, m *pglogrepl.RelationMessage, info *PGTableInfo) error {
	cols := make([]string, len(m.Columns))
	for i, c := range m.Columns {
		cols[i] = c.Name + ":" + info.ColInfo[c.Name].TypeName
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("RELATION %s.%s (%s) key=%v", m.Namespace, m.RelationName, strings.Join(cols, ","), info.PrimaryKey))
	return nil
}
func (r *changeRecorder) HandleTruncateMessage(_ int, m *pglogrepl.TruncateMessage, relns []*pglogrepl.RelationMessage, _ []*PGTableInfo) error {
	names := make([]string, len(relns))
	for i, x := range relns {
		names[i] = x.RelationName
	}
	sort.Strings(names)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("TRUNCATE %s cascade=%v restart_identity=%v", strings.Join(names, ","),
		m.Option&pglogrepl.TruncateOptionCascade != 0, m.Option&pglogrepl.TruncateOptionRestartIdentity != 0))
	return nil
}
func (r *changeRecorder) HandleLogicalMessage(_ int, m *pglogrepl.LogicalDecodingMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("MESSAGE %s %s transactional=%v", m.Prefix, m.Content, m.Transactional))
	return nil
}

// tuple returns the i-th recorded change's tuple.
func (r *changeRecorder) tuple(i int) recordedTuple {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tuples[i]
}

func (r *changeRecorder) snapshot() ([]*Change, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Change(nil), r.changes...), append([]string(nil), r.events...)
}

func (r *changeRecorder) waitChanges(t *testing.T, n int) []*Change {
	t.Helper()
	waitFor(t, 30*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		require.NoError(t, r.err)
		return len(r.changes) >= n
	}, "%d changes", n)
	c, _ := r.snapshot()
	require.Len(t, c, n)
	return c
}

// selectTyped reads rows through pgx (the extended protocol: binary results for every
// type pgtype knows, text for the others, whatever the session's DateStyle) and
// decodes each column's raw wire bytes with info's column decoders — the "same driver"
// the WAL side uses: pgx's pgtype codecs behind PGColumnInfo.DecodeText/DecodeBytes.
// The WAL side gets pgoutput text (or binary with WithBinary), the SELECT side binary
// protocol bytes, so equal results mean the two independent encodings agree.
func selectTyped(t *testing.T, conn *pgx.Conn, info *PGTableInfo, allBinary bool, query string, args ...any) []StringMap {
	t.Helper()
	if allBinary {
		// Binary for every column, also types pgtype has no codec for (UnknownValue).
		args = append([]any{pgx.QueryResultFormats{pgx.BinaryFormatCode}}, args...)
	}
	rows, err := conn.Query(context.Background(), query, args...)
	require.NoError(t, err)
	defer rows.Close()
	var out []StringMap
	for rows.Next() {
		row := StringMap{}
		for i, fd := range rows.FieldDescriptions() {
			col := info.ColInfo[fd.Name]
			require.NotNil(t, col, fd.Name)
			raw := rows.RawValues()[i]
			if raw == nil {
				row[fd.Name] = nil
				continue
			}
			var v any
			if fd.Format == pgtype.BinaryFormatCode {
				v, err = col.DecodeBytes(raw)
			} else {
				v, err = col.DecodeText(raw)
			}
			require.NoError(t, err, "column %s", fd.Name)
			row[fd.Name] = v
		}
		out = append(out, row)
	}
	require.NoError(t, rows.Err())
	return out
}

// nanSafe replaces float NaNs (which never compare equal) by a marker, recursively, so
// require.Equal can compare decoded rows.
type nanMarker struct{ bits int }

func nanSafe(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) {
			return nanMarker{64}
		}
	case float32:
		if math.IsNaN(float64(x)) {
			return nanMarker{32}
		}
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = nanSafe(e)
		}
		return out
	case StringMap:
		out := StringMap{}
		for k, e := range x {
			out[k] = nanSafe(e)
		}
		return out
	}
	return v
}

// requireSameRow compares two decoded rows column by column, with the Go types.
func requireSameRow(t *testing.T, want, got StringMap, msgAndArgs ...any) {
	t.Helper()
	require.Equal(t, sortedKeys(want), sortedKeys(got), msgAndArgs...)
	for k := range want {
		w, g := nanSafe(want[k]), nanSafe(got[k])
		if !reflect.DeepEqual(w, g) {
			t.Fatalf("%v: column %s: want %#v (%T), got %#v (%T)", fmt.Sprint(msgAndArgs...), k, w, w, g, g)
		}
	}
}

func sortedKeys(m StringMap) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
