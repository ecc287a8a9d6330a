package dbsync

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// The decode micro-benchmarks run on pgoutput messages captured from a real
// PostgreSQL 15 server (testdata/pgoutput, written by `dbsync bench -capture
// testdata/pgoutput`): the orders table of the benchmark, with bigint, text, int,
// numeric, timestamptz and jsonb columns. CI runs them briefly so they keep working:
//
//	go test -run '^$' -bench . -benchtime 100x .

var captured = []struct {
	file string
	want any
}{
	{"begin.bin", &pglogrepl.BeginMessage{}},
	{"relation.bin", &pglogrepl.RelationMessage{}},
	{"insert.bin", &pglogrepl.InsertMessage{}},
	{"update.bin", &pglogrepl.UpdateMessage{}},
	{"update_key.bin", &pglogrepl.UpdateMessage{}},
	{"delete.bin", &pglogrepl.DeleteMessage{}},
	{"truncate.bin", &pglogrepl.TruncateMessage{}},
	{"message.bin", &pglogrepl.LogicalDecodingMessage{}},
	{"commit.bin", &pglogrepl.CommitMessage{}},
}

func readCaptured(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "pgoutput", name))
	require.NoError(tb, err)
	return b
}

// capturedRelation returns the orders RELATION message and a table info derived from
// it (key: the replica identity columns), as the decoder would use.
func capturedRelation(tb testing.TB) (*pglogrepl.RelationMessage, *PGTableInfo) {
	tb.Helper()
	msg, err := Parse(readCaptured(tb, "relation.bin"))
	require.NoError(tb, err)
	reln := msg.(*pglogrepl.RelationMessage)
	return reln, tableInfoFromRelation(reln)
}

// TestCapturedPGOutput checks that the benchmark inputs are what they claim to be.
func TestCapturedPGOutput(t *testing.T) {
	for _, c := range captured {
		msg, err := Parse(readCaptured(t, c.file))
		require.NoError(t, err, c.file)
		require.IsType(t, c.want, msg, c.file)
	}
	reln, info := capturedRelation(t)
	require.Equal(t, "orders", reln.RelationName)
	require.Equal(t, []string{"id"}, info.PrimaryKey)
	var names []string
	for _, c := range reln.Columns {
		names = append(names, c.Name)
	}
	require.Equal(t, []string{"id", "customer", "qty", "amount", "created_at", "attrs"}, names)

	cases := []struct {
		file   string
		op     Op
		newLen int
		oldKey bool
	}{
		{"insert.bin", OpInsert, 6, false},
		{"update.bin", OpUpdate, 6, false},
		{"update_key.bin", OpUpdate, 6, true},
		{"delete.bin", OpDelete, 0, false},
	}
	for _, c := range cases {
		msg, err := Parse(readCaptured(t, c.file))
		require.NoError(t, err)
		ch, err := DecodeChange(msg, reln, info)
		require.NoError(t, err, c.file)
		require.Equal(t, c.op, ch.Op, c.file)
		require.Len(t, ch.New, c.newLen, c.file)
		require.Equal(t, c.oldKey, ch.OldKey != "", c.file)
		if c.newLen > 0 {
			require.Equal(t, "customer-42", ch.New["customer"], c.file)
		}
	}
}

// BenchmarkParse measures dbsync.Parse (pglogrepl.Parse with panic recovery) per
// message kind.
func BenchmarkParse(b *testing.B) {
	for _, c := range captured {
		data := readCaptured(b, c.file)
		b.Run(c.file[:len(c.file)-len(".bin")], func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Parse(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeChange measures the whole decode path of one row change: Parse, then
// DecodeChange into a Change with every column value decoded and the record ID built.
func BenchmarkDecodeChange(b *testing.B) {
	reln, info := capturedRelation(b)
	for _, name := range []string{"insert", "update", "update_key", "delete"} {
		data := readCaptured(b, name+".bin")
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				msg, err := Parse(data)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := DecodeChange(msg, reln, info); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// orderRow is the benchmark table's row as typed Go variables, for ScanTuple.
type orderRow struct {
	id        int64
	customer  string
	qty       int32
	amount    pgtype.Numeric
	createdAt time.Time
	attrs     json.RawMessage
}

func (o *orderRow) dest() []any {
	return []any{&o.id, &o.customer, &o.qty, &o.amount, &o.createdAt, &o.attrs}
}

func newTupleOf(tb testing.TB, msg pglogrepl.Message) *pglogrepl.TupleData {
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		return m.Tuple
	case *pglogrepl.UpdateMessage:
		return m.NewTuple
	}
	tb.Fatalf("%T has no new tuple", msg)
	return nil
}

// TestCapturedScanTuple checks that ScanTuple's typed values of the captured rows are
// DecodeChange's.
func TestCapturedScanTuple(t *testing.T) {
	reln, info := capturedRelation(t)
	for _, name := range []string{"insert", "update", "update_key"} {
		msg, err := Parse(readCaptured(t, name+".bin"))
		require.NoError(t, err)
		ch, err := DecodeChange(msg, reln, info)
		require.NoError(t, err)
		var o orderRow
		require.NoError(t, info.ScanTuple(reln, newTupleOf(t, msg), o.dest()...), name)
		require.Equal(t, StringMap{"id": o.id, "customer": o.customer, "qty": o.qty, "amount": o.amount,
			"created_at": o.createdAt, "attrs": o.attrs}, ch.New, name)
	}
}

// BenchmarkScanTuple measures the typed decode path: Parse, then ScanTuple of every
// column into typed variables (no map, no record ID).
func BenchmarkScanTuple(b *testing.B) {
	reln, info := capturedRelation(b)
	for _, name := range []string{"insert", "update"} {
		data := readCaptured(b, name+".bin")
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			var o orderRow
			dest := o.dest()
			for b.Loop() {
				msg, err := Parse(data)
				if err != nil {
					b.Fatal(err)
				}
				if err := info.ScanTuple(reln, newTupleOf(b, msg), dest...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodePath is one INSERT of the benchmark table as the poller decodes it:
// parsed from bytes the poller owns (its copy of the peek row) by a Parser, as the
// poller's reader parses (no clone, structures from slabs), then decoded by the handler, into a map
// (DecodeChange) or typed variables (ScanTuple). Its rate on one core is what the
// "decode path >= 5x the catch-up rate" target compares (docs/BENCHMARKS.md).
func BenchmarkDecodePath(b *testing.B) {
	reln, info := capturedRelation(b)
	data := readCaptured(b, "insert.bin")
	b.Run("DecodeChange", func(b *testing.B) {
		b.ReportAllocs()
		var p Parser
		for b.Loop() {
			msg, err := p.Parse(PGMSG{Data: data})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := DecodeChange(msg, reln, info); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ScanTuple", func(b *testing.B) {
		b.ReportAllocs()
		var o orderRow
		dest := o.dest()
		var p Parser
		for b.Loop() {
			msg, err := p.Parse(PGMSG{Data: data})
			if err != nil {
				b.Fatal(err)
			}
			if err := info.ScanTuple(reln, newTupleOf(b, msg), dest...); err != nil {
				b.Fatal(err)
			}
		}
	})
}
