package dbsync

import (
	"database/sql"
	"testing"

	"github.com/jackc/pglogrepl"
)

// capturedTextRow returns the column names and text forms of the captured orders row
// (insert.bin: pgoutput text is the types' output functions, what SelectList selects).
func capturedTextRow(tb testing.TB) ([]string, []sql.RawBytes) {
	tb.Helper()
	reln, _ := capturedRelation(tb)
	msg, err := Parse(readCaptured(tb, "insert.bin"))
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	var raw []sql.RawBytes
	for i, c := range msg.(*pglogrepl.InsertMessage).Tuple.Columns {
		names = append(names, reln.Columns[i].Name)
		raw = append(raw, sql.RawBytes(c.Data))
	}
	return names, raw
}

// BenchmarkTextRow measures decoding one selected row (snapshot, refresh) in text form:
// the captured orders row, from sql.NullString (decodeTextRow) and from sql.RawBytes
// (decodeTextRowRaw). The driver's scan is not included.
func BenchmarkTextRow(b *testing.B) {
	_, info := capturedRelation(b)
	names, raw := capturedTextRow(b)
	b.Run("nullstring", func(b *testing.B) {
		ns := make([]sql.NullString, len(raw))
		for i, r := range raw {
			ns[i] = sql.NullString{String: string(r), Valid: r != nil}
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := info.decodeTextRow(names, ns, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rawbytes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := info.decodeTextRowRaw(names, raw, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
