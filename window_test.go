package dbsync

import (
	"strconv"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// Pure tests of the window state machine: no database.

const relItems, relOther = 100, 200

// selOf is a selection of distinct keys as a chunk's SELECT gives it: not indexed.
func selOf(keys ...string) *InMemSelection {
	s := NewInMemSelection()
	for _, k := range keys {
		s.appendUnique(DBItem{Key: k, Values: StringMap{"k": k}}, nil)
	}
	return s
}

func keysOf(em *emission) []string {
	if em == nil {
		return nil
	}
	out := []string{}
	for _, it := range em.items {
		out = append(out, it.Key)
	}
	return out
}

func snapOf(t *testing.T, s string) xidSnapshot {
	t.Helper()
	snap, err := parseSnapshot(s)
	require.NoError(t, err)
	return snap
}

// tx runs one transaction through the window and returns its emission (nil: none;
// it panics on more than one, which these tests never write in one transaction).
func tx(w *window, xid uint32, body func()) *emission {
	w.begin(xid)
	body()
	ems := w.commit()
	switch len(ems) {
	case 0:
		return nil
	case 1:
		return ems[0]
	}
	panic("more than one emission")
}

func TestWindowDropsKeysTouchedInsideOnly(t *testing.T) {
	w := &window{}
	w.register("s1", relItems)
	// Before L, visible to the snapshot (xid 10 < xmin 20): kept.
	require.Nil(t, tx(w, 10, func() { w.change(relItems, "a", "", false) }))
	require.Nil(t, tx(w, 11, func() { w.watermark("s1", wmLow) }))
	// Inside the window: dropped, whatever their visibility.
	require.Nil(t, tx(w, 12, func() { w.change(relItems, "b", "", false) }))
	require.Nil(t, tx(w, 13, func() { w.change(relItems, "c2", "c", false) })) // key-changing update c -> c2
	// Another table's key with the same record ID: not this selection's row.
	require.Nil(t, tx(w, 14, func() { w.change(relOther, "d", "", false) }))
	require.True(t, w.setRows("s1", selOf("a", "b", "c", "d", "e"), snapOf(t, "20:30:")))
	em := tx(w, 15, func() { w.watermark("s1", wmHigh) })
	require.Equal(t, []string{"a", "d", "e"}, keysOf(em))
	require.Equal(t, "s1", em.id)
	// After H: no effect on what was emitted; a re-delivered H emits the same again.
	require.Nil(t, tx(w, 16, func() { w.change(relItems, "e", "", false) }))
	w.done("s1")
	require.Nil(t, tx(w, 15, func() { w.watermark("s1", wmHigh) }), "H of a finished selection is ignored")
}

func TestWindowInvisibleTransactionBeforeLowWatermark(t *testing.T) {
	for _, fix := range []bool{true, false} {
		w := &window{ignoreSnapshot: !fix}
		// xid 21 commits (in the WAL) before L but the SELECT's snapshot lists it in
		// xip: the SELECT did not see its change. xid 40 >= xmax: also invisible.
		require.Nil(t, tx(w, 21, func() { w.change(relItems, "x", "", false) }))
		require.Nil(t, tx(w, 40, func() { w.change(relItems, "z", "", false) }))
		// xid 22 is between xmin and xmax and not in xip: visible, kept.
		require.Nil(t, tx(w, 22, func() { w.change(relItems, "y", "", false) }))
		w.register("s1", relItems)
		require.Nil(t, tx(w, 30, func() { w.watermark("s1", wmLow) }))
		require.True(t, w.setRows("s1", selOf("x", "y", "z", "w"), snapOf(t, "20:35:20,21")))
		em := tx(w, 31, func() { w.watermark("s1", wmHigh) })
		if fix {
			require.Equal(t, []string{"y", "w"}, keysOf(em))
		} else {
			require.Equal(t, []string{"x", "y", "z", "w"}, keysOf(em), "plain DBLog keeps the stale rows")
		}
	}
}

func TestWindowTruncateAndUnknownKey(t *testing.T) {
	w := &window{}
	w.register("s1", relItems)
	require.Nil(t, tx(w, 1, func() { w.watermark("s1", wmLow) }))
	require.Nil(t, tx(w, 2, func() { w.truncate(relOther) }))
	require.True(t, w.setRows("s1", selOf("a", "b"), snapOf(t, "5:5:")))
	require.Equal(t, []string{"a", "b"}, keysOf(tx(w, 3, func() { w.watermark("s1", wmHigh) })))

	w = &window{}
	w.register("s2", relItems)
	require.Nil(t, tx(w, 1, func() { w.watermark("s2", wmLow) }))
	require.Nil(t, tx(w, 2, func() { w.truncate(relItems) }))
	require.True(t, w.setRows("s2", selOf("a", "b"), snapOf(t, "5:5:")))
	require.Equal(t, []string{}, keysOf(tx(w, 3, func() { w.watermark("s2", wmHigh) })))
}

func TestWindowIgnoresForeignWatermarksAndWaitsForRows(t *testing.T) {
	w := &window{}
	// Leftovers of a crashed run and another syncer's selection.
	require.Nil(t, tx(w, 1, func() { w.watermark("old-1", wmLow) }))
	require.Nil(t, tx(w, 2, func() { w.watermark("old-1", wmHigh) }))
	w.register("s1", relItems)
	require.Nil(t, tx(w, 3, func() { w.watermark("other-7", wmHigh) }))
	// H before L (cannot happen for our own selection) or before rows: nothing.
	require.Nil(t, tx(w, 4, func() { w.watermark("s1", wmHigh) }))
	require.Nil(t, tx(w, 5, func() { w.watermark("s1", wmLow) }))
	require.Nil(t, tx(w, 6, func() { w.watermark("s1", wmHigh) }), "rows not set yet")
	require.False(t, w.setRows("nope", selOf("a"), snapOf(t, "1:1:")))
	require.True(t, w.setRows("s1", selOf("a"), snapOf(t, "7:7:")))
	require.Equal(t, []string{"a"}, keysOf(tx(w, 8, func() { w.watermark("s1", wmHigh) })))
}

func TestWindowRedeliveredLowWatermark(t *testing.T) {
	// A retry re-delivers L and everything after it: the window restarts at the
	// second L and the re-delivered transactions still drop their keys.
	w := &window{}
	w.register("s1", relItems)
	require.Nil(t, tx(w, 10, func() { w.watermark("s1", wmLow) }))
	require.Nil(t, tx(w, 11, func() { w.change(relItems, "a", "", false) }))
	require.Nil(t, tx(w, 10, func() { w.watermark("s1", wmLow) }))
	require.Nil(t, tx(w, 11, func() { w.change(relItems, "a", "", false) }))
	require.True(t, w.setRows("s1", selOf("a", "b"), snapOf(t, "12:12:"))) // 11 visible
	require.Equal(t, []string{"b"}, keysOf(tx(w, 12, func() { w.watermark("s1", wmHigh) })))
}

func TestWindowPrune(t *testing.T) {
	w := &window{}
	require.Nil(t, tx(w, 10, func() { w.change(relItems, "a", "", false) }))
	require.Nil(t, tx(w, 11, func() { w.change(relItems, "b", "", false) }))
	require.Nil(t, tx(w, 12, func() {})) // touched nothing: not kept
	require.Len(t, w.hist, 2)
	// 11 still running in the pruning snapshot: kept; 10 complete: forgotten.
	w.prune(snapOf(t, "11:13:11"))
	require.Equal(t, []uint32{11}, histXids(w))
	// A registered selection whose snapshot is not known yet keeps everything.
	w.register("s1", relItems)
	w.prune(snapOf(t, "20:20:"))
	require.Equal(t, []uint32{11}, histXids(w))
	require.Nil(t, tx(w, 13, func() { w.watermark("s1", wmLow) }))
	require.Nil(t, tx(w, 14, func() { w.change(relItems, "c", "", false) })) // inside the window
	require.True(t, w.setRows("s1", selOf("a", "b", "c", "d"), snapOf(t, "11:14:11")))
	// Complete now, but 11 was invisible to the selection and 14 is inside: kept.
	w.prune(snapOf(t, "20:20:"))
	require.Equal(t, []uint32{11, 14}, histXids(w))
	require.Equal(t, []string{"a", "d"}, keysOf(tx(w, 15, func() { w.watermark("s1", wmHigh) })))
	w.done("s1")
	w.prune(snapOf(t, "20:20:"))
	require.Empty(t, w.hist)

	// A ready selection lets go of what its snapshot saw.
	require.Nil(t, tx(w, 30, func() { w.change(relItems, "a", "", false) }))
	require.Nil(t, tx(w, 31, func() { w.change(relItems, "b", "", false) }))
	w.register("s2", relItems)
	require.True(t, w.setRows("s2", selOf("a", "b"), snapOf(t, "31:32:31")))
	w.prune(snapOf(t, "40:40:"))
	require.Equal(t, []uint32{31}, histXids(w))
}

func histXids(w *window) []uint32 {
	var out []uint32
	for _, tx := range w.hist {
		out = append(out, tx.xid)
	}
	return out
}

func TestParseSnapshotAndWraparound(t *testing.T) {
	s := snapOf(t, "4294967300:4294967310:4294967301,4294967305")
	// xid8 values carry the epoch; the low 32 bits are compared.
	require.Equal(t, uint32(4), s.xmin)
	require.Equal(t, uint32(14), s.xmax)
	require.True(t, s.inProgress(5))
	require.True(t, s.inProgress(9))
	require.False(t, s.inProgress(6))
	require.True(t, s.inProgress(14))
	require.True(t, s.inProgress(20))
	require.False(t, s.inProgress(3))
	require.False(t, s.inProgress(4294967290), "an xid just before the wraparound precedes xmax 14")
	require.True(t, s.inProgress(0))
	_, err := parseSnapshot("1:2")
	require.Error(t, err)
	_, err = parseSnapshot("a:2:")
	require.Error(t, err)
	e := snapOf(t, "7:7:")
	require.Empty(t, e.xip)
}

func TestInMemSelection(t *testing.T) {
	s := selOf("a", "b", "c")
	require.True(t, s.Remove("b"))
	require.False(t, s.Remove("b"))
	s.Add(DBItem{Key: "b"})
	s.Add(DBItem{Key: "a", Values: StringMap{"k": "a2"}})
	require.Equal(t, 3, s.Len())
	var keys []string
	for _, it := range s.Items() {
		keys = append(keys, it.Key)
	}
	require.Equal(t, []string{"a", "b", "c"}, keys)
	it, ok := s.Get("a")
	require.True(t, ok)
	require.Equal(t, "a2", it.Values["k"])
	_, ok = s.Get("zz")
	require.False(t, ok)
	s.Clear()
	require.Zero(t, s.Len())

	// Key texts stay known for removed rows (follow-up reads need them).
	s = NewInMemSelection()
	s.add(DBItem{Key: "k1"}, []string{"1"})
	s.add(DBItem{Key: "k2"}, []string{"2"})
	require.True(t, s.Remove("k1"))
	_, ok = s.Get("k1")
	require.False(t, ok)
	require.Equal(t, [][]string{{"2"}, {"1"}, nil}, s.keyTextsOf([]string{"k2", "k1", "nope"}))
	require.Equal(t, []string{"k1", "k2"}, s.selectedKeys())
	require.Equal(t, 1, s.Len())
}

// TestInMemSelectionUnindexed checks rows added with appendUnique (a chunk's rows, not
// indexed until needed): removeKeys filters them without an index, and every indexed
// operation afterwards (Get, Remove, add, keyTextsOf) sees the same rows.
func TestInMemSelectionUnindexed(t *testing.T) {
	s := NewInMemSelection()
	for _, k := range []string{"a", "b", "c", "d"} {
		s.appendUnique(DBItem{Key: k, Values: StringMap{"k": k}}, []string{k + "-text"})
	}
	require.Nil(t, s.index)
	s.removeKeys(map[string]bool{"b": true, "zz": false})
	s.removeKeys(map[string]bool{"b": true}) // removing twice counts once
	require.Nil(t, s.index, "filtering by a few keys must not index the rows")
	require.Equal(t, 3, s.Len())
	require.Equal(t, []string{"a", "c", "d"}, keysOf(&emission{items: s.Items()}))

	_, ok := s.Get("b")
	require.False(t, ok)
	it, ok := s.Get("c")
	require.True(t, ok)
	require.Equal(t, "c", it.Values["k"])
	require.NotNil(t, s.index)
	require.Equal(t, [][]string{{"b-text"}, {"d-text"}}, s.keyTextsOf([]string{"b", "d"}))

	// Indexed from here on: appendUnique keeps the index, add replaces in place,
	// removeKeys uses the index.
	s.appendUnique(DBItem{Key: "e"}, []string{"e-text"})
	s.add(DBItem{Key: "b", Values: StringMap{"k": "b2"}}, nil)
	s.removeKeys(map[string]bool{"a": true, "e": false})
	require.Equal(t, []string{"b", "c", "d"}, keysOf(&emission{items: s.Items()}))
	it, _ = s.Get("b")
	require.Equal(t, "b2", it.Values["k"])
	require.Equal(t, [][]string{{"b-text"}}, s.keyTextsOf([]string{"b"}), "add without key text keeps the old one")
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, s.selectedKeys())

	s.Clear()
	require.Zero(t, s.Len())
	s.appendUnique(DBItem{Key: "a"}, nil)
	require.Nil(t, s.index)
	require.True(t, s.Remove("a"))
	require.Zero(t, s.Len())
}

func TestWindowRereadAndRetry(t *testing.T) {
	w := &window{}
	w.register("s1", relItems)
	require.Nil(t, tx(w, 10, func() { w.watermark("s1", wmLow) }))
	// a: updated with an unchanged TOAST column, then fully: no re-read needed.
	// b: updated with an unchanged TOAST column last: re-read. c: deleted: no.
	// d: not selected: nothing. e: key-changed away (old key gone): no.
	require.Nil(t, tx(w, 11, func() {
		w.change(relItems, "a", "", true)
		w.change(relItems, "b", "", false)
		w.change(relItems, "d", "", true)
	}))
	require.Nil(t, tx(w, 12, func() {
		w.change(relItems, "a", "", false)
		w.change(relItems, "b", "", true)
		w.change(relItems, "c", "", false)
		w.change(relItems, "e2", "e", true)
	}))
	require.True(t, w.setRows("s1", selOf("a", "b", "c", "e", "f"), snapOf(t, "13:13:")))
	em := tx(w, 13, func() { w.watermark("s1", wmHigh) })
	require.Equal(t, []string{"f"}, keysOf(em))
	require.Equal(t, []string{"b"}, em.reread)
	require.False(t, em.retry)
	w.done("s1")

	// A change whose key could not be read: nothing is emitted, run it again.
	w.register("s2", relItems)
	require.Nil(t, tx(w, 20, func() { w.watermark("s2", wmLow) }))
	require.Nil(t, tx(w, 21, func() { w.unknownKey(relOther) }))
	require.True(t, w.setRows("s2", selOf("a"), snapOf(t, "22:22:")))
	em = tx(w, 22, func() { w.watermark("s2", wmHigh) })
	require.False(t, em.retry, "another table's unreadable key does not matter")
	require.Equal(t, []string{"a"}, keysOf(em))
	w.done("s2")
	w.register("s3", relItems)
	require.Nil(t, tx(w, 30, func() { w.watermark("s3", wmLow) }))
	require.Nil(t, tx(w, 31, func() { w.unknownKey(relItems) }))
	require.True(t, w.setRows("s3", selOf("a"), snapOf(t, "32:32:")))
	em = tx(w, 32, func() { w.watermark("s3", wmHigh) })
	require.True(t, em.retry)
	require.Empty(t, em.items)
}

func TestWindowOverlappingSelections(t *testing.T) {
	// Two selections of one table in flight at once (a pipelined snapshot, or two
	// Refresh calls): L1 L2 H1 H2. Each is judged on its own window only.
	w := &window{}
	w.register("s1", relItems)
	w.register("s2", relItems)
	require.Nil(t, tx(w, 10, func() { w.watermark("s1", wmLow) }))
	require.Nil(t, tx(w, 11, func() { w.change(relItems, "a", "", false) }))
	require.Nil(t, tx(w, 12, func() { w.watermark("s2", wmLow) }))
	require.Nil(t, tx(w, 13, func() { w.change(relItems, "b", "", false) }))
	require.True(t, w.setRows("s1", selOf("a", "b", "c"), snapOf(t, "12:12:")))
	require.True(t, w.setRows("s2", selOf("a", "b", "c", "d"), snapOf(t, "14:14:")))
	// History is pruned while both are open: s2's window (after 12) must survive
	// s1's completion.
	w.prune(snapOf(t, "20:20:"))
	em := tx(w, 14, func() { w.watermark("s1", wmHigh) })
	require.Equal(t, "s1", em.id)
	require.Equal(t, []string{"c"}, keysOf(em), "a and b changed inside s1's window")
	w.done("s1")
	w.prune(snapOf(t, "20:20:"))
	require.Equal(t, []uint32{13}, histXids(w), "11 is before s2's window and visible to it")
	require.Nil(t, tx(w, 15, func() { w.change(relItems, "c", "", false) }))
	em = tx(w, 16, func() { w.watermark("s2", wmHigh) })
	require.Equal(t, "s2", em.id)
	require.Equal(t, []string{"a", "d"}, keysOf(em), "b and c changed inside s2's window; a before it")
	w.done("s2")
	w.prune(snapOf(t, "20:20:"))
	require.Empty(t, w.hist)

	// Two high watermarks in one transaction: two emissions, in watermark order.
	w.register("s3", relItems)
	w.register("s4", relOther)
	require.Nil(t, tx(w, 30, func() { w.watermark("s3", wmLow); w.watermark("s4", wmLow) }))
	require.True(t, w.setRows("s3", selOf("x"), snapOf(t, "31:31:")))
	require.True(t, w.setRows("s4", selOf("y"), snapOf(t, "31:31:")))
	w.begin(31)
	w.watermark("s4", wmHigh)
	w.watermark("s3", wmHigh)
	ems := w.commit()
	require.Len(t, ems, 2)
	require.Equal(t, "s4", ems[0].id)
	require.Equal(t, []string{"y"}, keysOf(ems[0]))
	require.Equal(t, "s3", ems[1].id)
	require.Equal(t, []string{"x"}, keysOf(ems[1]))
}

// collectMoved feeds tr the update of a row of table rel (key id int, body text)
// that moves it from key 0 to key id without touching its TOASTed body.
func collectMoved(tr *windowTracker, rel uint32, id int32) {
	reln := &pglogrepl.RelationMessage{RelationID: rel, Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "id", DataType: pgtype.Int4OID, Flags: 1}, {Name: "body", DataType: pgtype.TextOID}}}
	info := &PGTableInfo{PrimaryKey: []string{"id"}}
	text := strconv.Itoa(int(id))
	msg := &pglogrepl.UpdateMessage{NewTuple: &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte(text)}, {DataType: pglogrepl.TupleDataTypeToast}}}}
	tr.touchChange(reln, info, msg, func() (*Change, error) {
		return &Change{Key: `["` + text + `"]`, OldKey: `["0"]`, Unchanged: []string{"body"}, New: StringMap{"id": id}}, nil
	})
}

// movedTexts is rows (watchRows) as record ID -> key texts.
func movedTexts(rows map[string]movedKey) map[string][]string {
	out := map[string][]string{}
	for id, k := range rows {
		out[id] = k.texts
	}
	return out
}

// TestWatchCountsSnapshots: two snapshots of one table at once share the collection
// of moved rows; the first to finish must not stop it for the other. Rows are kept
// by their key columns' texts as pgoutput sent them. Collecting stops once no
// Snapshot of the table runs and one finished it.
func TestWatchCountsSnapshots(t *testing.T) {
	tr := newWindowTracker()
	const rel, sig = 7, "id int"
	tr.watchStart(rel, sig)
	tr.watchStart(rel, sig)
	collectMoved(tr, rel, 1)
	tr.watchFinished(rel)
	tr.watchStop(rel) // the first snapshot finishes
	collectMoved(tr, rel, 2)
	got := tr.watchRows(rel)
	require.Equal(t, map[string][]string{`["1"]`: {"1"}, `["2"]`: {"2"}}, movedTexts(got))
	tr.watchDone(rel, got) // read again
	tr.watchFinished(rel)
	tr.watchStop(rel) // the second finishes too: collecting stops
	collectMoved(tr, rel, 3)
	require.Empty(t, tr.watchRows(rel))
	require.Empty(t, tr.moved)
}

// TestWatchKeepsRowsOfUnfinishedSnapshot: rows a Snapshot did not read again before
// it returned (its read failed, or they came after) stay for the next Snapshot of
// the table, unless its key changed meanwhile; a row collected again while it was
// being read stays after the read.
func TestWatchKeepsRowsOfUnfinishedSnapshot(t *testing.T) {
	tr := newWindowTracker()
	const rel = 7
	tr.watchStart(rel, "id int")
	collectMoved(tr, rel, 1)
	require.Len(t, tr.watchRows(rel), 1) // the read of row 1 starts ...
	collectMoved(tr, rel, 2)
	tr.watchStop(rel) // ... and fails: nothing was done
	require.Equal(t, map[string][]string{`["1"]`: {"1"}, `["2"]`: {"2"}}, movedTexts(tr.watchRows(rel)))
	tr.watchStart(rel, "id int")
	rows := tr.watchRows(rel)
	require.Equal(t, map[string][]string{`["1"]`: {"1"}, `["2"]`: {"2"}}, movedTexts(rows))
	collectMoved(tr, rel, 1) // moved to key 1 again while being read
	tr.watchDone(rel, rows)
	require.Equal(t, map[string][]string{`["1"]`: {"1"}}, movedTexts(tr.watchRows(rel)))
	collectMoved(tr, rel, 3)
	tr.watchStop(rel)
	tr.watchStart(rel, "id bigint") // the key's type changed: its old texts are dropped
	require.Empty(t, tr.watchRows(rel))
	tr.watchFinished(rel)
	tr.watchStop(rel)
	require.Empty(t, tr.moved)
}

// TestWatchRowsStayUntilRead: two Snapshots of one table at once, A and B. A row
// leaves the shared set only when read again: a Snapshot starting to read it does
// not take it from the other (B's last look still finds the row A is reading, and
// reads it itself), and a row that A failed to read stays after B, finished, was the
// last to stop. (TestSnapshotConcurrentRereadNotLost runs the first case against
// PostgreSQL.)
func TestWatchRowsStayUntilRead(t *testing.T) {
	const rel, sig = 7, "id int"
	five := map[string][]string{`["5"]`: {"5"}}

	tr := newWindowTracker()
	tr.watchStart(rel, sig) // A
	tr.watchStart(rel, sig) // B
	collectMoved(tr, rel, 5)
	require.Equal(t, five, movedTexts(tr.watchRows(rel))) // A starts reading row 5
	b := tr.watchRows(rel)                                // B's last look
	require.Equal(t, five, movedTexts(b))
	tr.watchDone(rel, b) // B read it
	tr.watchFinished(rel)
	tr.watchStop(rel) // A's read failed: A ends
	tr.watchStop(rel) // B ends
	require.Empty(t, tr.moved)

	tr = newWindowTracker()
	tr.watchStart(rel, sig)             // A
	tr.watchStart(rel, sig)             // B
	require.Empty(t, tr.watchRows(rel)) // B's last look: B finishes the table
	tr.watchFinished(rel)
	collectMoved(tr, rel, 5) // moved while A runs
	require.Equal(t, five, movedTexts(tr.watchRows(rel)))
	tr.watchStop(rel) // A's read failed: A ends
	tr.watchStop(rel) // B, finished, ends last
	tr.watchStart(rel, sig)
	require.Equal(t, five, movedTexts(tr.watchRows(rel)), "the next Snapshot reads row 5")
}

// TestLostWatermarkNeedsCommitStampAndCompletePoll: a written watermark fails its
// selection only once it has a position (stamped after its commit) and a complete
// poll reached that position without delivering it; a watermark seen in the log, one
// not yet committed, and one whose position the poll did not reach never fail.
func TestLostWatermarkNeedsCommitStampAndCompletePoll(t *testing.T) {
	tr := newWindowTracker()
	lost, seen := tr.register("lost", 1), tr.register("seen", 1)
	failed := func(ch <-chan selDone) error {
		select {
		case r := <-ch:
			return r.err
		default:
			return nil
		}
	}
	tr.expect("lost", wmLow)
	tr.expect("seen", wmLow)
	tr.polledThrough(1000)
	require.Nil(t, tr.writtenUnstamped(), "nothing committed yet")
	tr.wrote("lost", wmLow)
	tr.wrote("seen", wmLow)
	tr.polledThrough(1000) // not stamped: no position known yet
	require.NoError(t, failed(lost))
	keys := tr.writtenUnstamped()
	require.ElementsMatch(t, []wmKey{{"lost", wmLow}, {"seen", wmLow}}, keys)
	tr.stamp(keys, 500)
	require.Nil(t, tr.writtenUnstamped())
	tr.watermark("seen", wmLow)
	tr.polledThrough(499) // short of the position
	require.NoError(t, failed(lost))
	tr.polledThrough(500) // a peek up to 500 decodes a commit record ending at 500
	err := failed(lost)
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.Contains(t, err.Error(), "low watermark of selection lost")
	require.NoError(t, failed(seen))
	require.Empty(t, tr.pending)
	require.NotContains(t, tr.waiters, "lost")

	// A high watermark written while the low one is still pending is checked on its own.
	h := tr.register("both", 1)
	tr.expect("both", wmLow)
	tr.wrote("both", wmLow)
	tr.expect("both", wmHigh)
	tr.stamp(tr.writtenUnstamped(), 700) // only the low one was committed
	tr.wrote("both", wmHigh)
	tr.watermark("both", wmLow)
	tr.polledThrough(800)
	require.NoError(t, failed(h), "the high watermark has no position yet")
	tr.stamp(tr.writtenUnstamped(), 900)
	tr.polledThrough(900)
	require.ErrorContains(t, failed(h), "high watermark of selection both")
}

// TestWindowDuplicateWatermark: the same watermark row (selection ID and kind)
// arriving twice, in separate transactions. A second low watermark between the
// SELECT and the high one moves the window's start past a change of a key the
// SELECT could not see, which is still dropped (in progress in the snapshot), and
// past one it saw, whose row is kept (the selected row is as new). A high watermark
// before the rows are set is ignored, and one after the selection is done too: no
// rows twice, no early close.
func TestWindowDuplicateWatermark(t *testing.T) {
	w := &window{}
	w.register("s1", relItems)
	require.Nil(t, tx(w, 10, func() { w.watermark("s1", wmLow) }))
	require.Nil(t, tx(w, 11, func() { w.watermark("s1", wmHigh) }), "H again before the rows: ignored")
	require.Nil(t, tx(w, 12, func() { w.change(relItems, "a", "", false) })) // seen by the SELECT
	require.Nil(t, tx(w, 21, func() { w.change(relItems, "b", "", false) })) // not seen (>= xmax 20)
	require.True(t, w.setRows("s1", selOf("a", "b", "c"), snapOf(t, "20:20:")))
	require.Nil(t, tx(w, 22, func() { w.watermark("s1", wmLow) }), "L again after the SELECT")
	require.Nil(t, tx(w, 23, func() { w.change(relItems, "c", "", false) }))
	em := tx(w, 24, func() { w.watermark("s1", wmHigh) })
	require.Equal(t, []string{"a"}, keysOf(em))
	w.done("s1") // the tracker forgets a selection once its rows were delivered
	require.Nil(t, tx(w, 25, func() { w.watermark("s1", wmHigh) }), "H again after delivery: ignored")
	require.Nil(t, tx(w, 26, func() { w.watermark("s1", wmLow) }), "L again after delivery: ignored")
	require.Empty(t, w.sels)
}

// TestWindowHighWatermarkTwiceInOnePoll: a selection's high watermark row twice in
// one poll (in one transaction, or in two) emits its rows once: the selection is
// forgotten only when the poll ends (windowTracker.delivered), so without a mark a
// second one would hand the rows over again. A poll read again (after a handler
// error: newPoll) emits them again, as the first one's were not taken.
func TestWindowHighWatermarkTwiceInOnePoll(t *testing.T) {
	w := &window{}
	w.register("s1", relItems)
	w.newPoll()
	require.Nil(t, tx(w, 10, func() { w.watermark("s1", wmLow) }))
	require.True(t, w.setRows("s1", selOf("a", "b"), snapOf(t, "11:11:")))
	w.begin(11)
	w.watermark("s1", wmHigh)
	w.watermark("s1", wmHigh)
	ems := w.commit()
	require.Len(t, ems, 1)
	require.Equal(t, []string{"a", "b"}, keysOf(ems[0]))
	require.Nil(t, tx(w, 12, func() { w.watermark("s1", wmHigh) }), "again later in the same poll")
	// The poll is read again from the low watermark.
	w.newPoll()
	require.Nil(t, tx(w, 10, func() { w.watermark("s1", wmLow) }))
	require.Equal(t, []string{"a", "b"}, keysOf(tx(w, 11, func() { w.watermark("s1", wmHigh) })))
}

// TestReleaseUnlessSeen: a selection whose high watermark INSERT failed without a
// reply is released unless the poller met its high watermark: met in the transaction
// being read, or already handed over, the outcome comes to its waiter (opening it
// again would hand its rows over twice); not met, it is forgotten, and a high
// watermark arriving later hands nothing over.
func TestReleaseUnlessSeen(t *testing.T) {
	const rel = 7
	tr := newWindowTracker()
	ready := func(id string) <-chan selDone {
		ch := tr.register(id, rel)
		tr.begin(1)
		tr.watermark(id, wmLow)
		require.Empty(t, tr.commit())
		rows := NewInMemSelection()
		rows.Add(DBItem{Key: `["1"]`})
		require.True(t, tr.setRows(id, rows, xidSnapshot{}))
		return ch
	}

	// Met in the transaction being read: not released, handed over at its COMMIT.
	a := ready("a")
	tr.begin(2)
	tr.watermark("a", wmHigh)
	require.True(t, tr.releaseUnlessSeen("a"))
	ems := tr.commit()
	require.Len(t, ems, 1)
	tr.delivered(ems)
	require.Equal(t, 1, (<-a).emitted)

	// Handed over already (emitted, not yet marked delivered): not released.
	b := ready("b")
	tr.begin(3)
	tr.watermark("b", wmHigh)
	ems = tr.commit()
	require.Len(t, ems, 1)
	require.True(t, tr.releaseUnlessSeen("b"))
	tr.delivered(ems)
	require.Equal(t, 1, (<-b).emitted)

	// Delivered and forgotten: its outcome is in the channel.
	require.True(t, tr.releaseUnlessSeen("b"))

	// Not met: released, and its high watermark arriving later is ignored.
	c := ready("c")
	require.False(t, tr.releaseUnlessSeen("c"))
	tr.begin(4)
	tr.watermark("c", wmHigh)
	require.Empty(t, tr.commit())
	select {
	case r := <-c:
		t.Fatalf("a released selection got an outcome: %+v", r)
	default:
	}
}

// TestWatchGoesOnUntilFinished: a Snapshot that ends without finishing its table
// (cancelled, failed) leaves the table's moved rows collected while no Snapshot of it
// runs, for the Snapshot that resumes it (TestSnapshotResumeRereadsRowsMovedWhileStopped
// runs it against PostgreSQL); once one finished the table and none runs, they are
// not.
func TestWatchGoesOnUntilFinished(t *testing.T) {
	const rel, sig = 7, "id int"
	tr := newWindowTracker()
	tr.watchStart(rel, sig)
	tr.watchStop(rel) // cancelled after its first chunk
	collectMoved(tr, rel, 1)
	tr.watchStart(rel, sig) // resumes
	rows := tr.watchRows(rel)
	require.Equal(t, map[string][]string{`["1"]`: {"1"}}, movedTexts(rows))
	tr.watchDone(rel, rows)
	tr.watchFinished(rel)
	tr.watchStop(rel)
	require.Empty(t, tr.moved)
	collectMoved(tr, rel, 2)
	require.Empty(t, tr.moved)
}

// TestWindowRereadsMovedRows: a selected row moved inside the window by key-changing
// updates that left columns unknown is read again at the key it ended at, unless a
// later change there left nothing unknown, the key is selected itself (read again as
// such), or it was not the selection's row.
func TestWindowRereadsMovedRows(t *testing.T) {
	w := &window{}
	w.register("s", relItems)
	require.Nil(t, tx(w, 1, func() { w.watermark("s", wmLow) }))
	rows := NewInMemSelection()
	for _, k := range []string{"a", "b", "c", "d"} {
		rows.Add(DBItem{Key: k})
	}
	require.True(t, w.setRows("s", rows, xidSnapshot{xmin: 5, xmax: 5, xip: map[uint32]struct{}{}}))
	move := func(from, to string) {
		w.change(relItems, to, from, true)
		w.move(relItems, from, to, []string{to})
	}
	require.Nil(t, tx(w, 10, func() { move("a", "a2") }))
	require.Nil(t, tx(w, 11, func() { move("a2", "a3") }))                                     // a ends at a3
	require.Nil(t, tx(w, 12, func() { move("b", "b2"); w.change(relItems, "b2", "", false) })) // filled in
	require.Nil(t, tx(w, 13, func() { move("c", "d") }))                                       // onto a selected key
	require.Nil(t, tx(w, 14, func() { move("x", "x2") }))                                      // not the selection's row
	require.Nil(t, tx(w, 15, func() { w.change(relOther, "a3", "", false) }))                  // another table
	em := tx(w, 16, func() { w.watermark("s", wmHigh) })
	require.NotNil(t, em)
	require.Empty(t, em.items)
	require.Equal(t, []string{"d"}, em.reread)
	require.Equal(t, [][]string{{"a3"}}, em.rereadMoved)
}
