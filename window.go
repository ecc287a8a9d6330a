package dbsync

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// This file is the pure DBLog window state machine: no database, no I/O. Its inputs
// are the decoded log in commit order (BEGIN with the transaction's xid, row changes
// reduced to (relation OID, record ID), watermark rows, COMMIT) and, per selection,
// the selected rows and the snapshot (pg_current_snapshot()) the SELECT ran under.
// Its output, at the COMMIT of a selection's high watermark, is the rows to hand over
// as refresh rows. See docs/SNAPSHOTS.md and shared/reference/dblog.md.
//
// Rule (DBLog plus the PostgreSQL visibility fix): a selected row is dropped when a
// transaction T touched its key and T's COMMIT comes before the high watermark H in
// the log and either
//   - T's COMMIT comes after the low watermark L, or
//   - T was in progress in the SELECT's snapshot (xid in xip, or xid >= xmax): its
//     commit record can precede L in the WAL while T is still invisible, because
//     PostgreSQL flushes the commit record before it removes T from the proc array.
//
// Because the second case concerns transactions the log delivered before L — possibly
// before the selection was even registered — the window keeps a history of recent
// transactions' touched keys. History is pruned with a snapshot taken after the
// entries were delivered (prune): a transaction complete in that snapshot is complete
// in every later one. The registered selection's snapshot may be older than the
// pruning one, so what it may still need is kept too.

// xidSnapshot is a pg_snapshot (pg_current_snapshot()) reduced to 32-bit xids, the
// width of pgoutput's BEGIN xid. xids are compared modulo 2^32 as PostgreSQL does
// (TransactionIdPrecedes), which is exact for xids less than 2^31 apart.
type xidSnapshot struct {
	xmin, xmax uint32
	xip        map[uint32]struct{}
}

// parseSnapshot parses pg_snapshot's text form "xmin:xmax:xip,xip,..." (the values
// are xid8: epoch << 32 | xid). See PostgreSQL docs, "Snapshot Information Functions".
func parseSnapshot(s string) (xidSnapshot, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	if len(parts) != 3 {
		return xidSnapshot{}, fmt.Errorf("dbsync: malformed pg_snapshot %q", s)
	}
	num := func(v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("dbsync: malformed pg_snapshot %q: %w", s, err)
		}
		return uint32(n), nil
	}
	var snap xidSnapshot
	var err error
	if snap.xmin, err = num(parts[0]); err != nil {
		return snap, err
	}
	if snap.xmax, err = num(parts[1]); err != nil {
		return snap, err
	}
	snap.xip = map[uint32]struct{}{}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := num(x)
			if err != nil {
				return snap, err
			}
			snap.xip[v] = struct{}{}
		}
	}
	return snap, nil
}

// inProgress tells whether transaction xid was invisible to the snapshot: running
// (in xip) or not yet started (>= xmax). xid 0 (unknown) counts as in progress.
func (s xidSnapshot) inProgress(xid uint32) bool {
	if xid == 0 {
		return true
	}
	if _, ok := s.xip[xid]; ok {
		return true
	}
	return int32(xid-s.xmax) >= 0
}

// rowKey names one row: its table's OID (pgoutput's relation ID) and record ID
// (PGTableInfo.GetRecordID).
type rowKey struct {
	rel uint32
	key string
}

// txTouch is what one committed transaction touched.
type txTouch struct {
	seq uint64 // position of its COMMIT in the log, as seen by the window
	xid uint32
	// keys maps each touched key to whether the transaction's last change of it
	// left columns unknown (an UPDATE with unchanged TOASTed columns, 'u').
	keys      map[rowKey]bool
	truncated map[uint32]struct{} // relations truncated: every key of them
	unknown   map[uint32]struct{} // relations changed at a key that could not be read
	// moves lists, in order, the key-changing updates of the transaction that left
	// columns unknown (unchanged TOAST): the row of key from now lives at key to.
	moves []txMove
	// names holds the name (schema, table) the transaction's RELATION messages gave
	// their relations (the last one of each), noted while a selection is registered.
	names map[uint32][2]string
}

// txMove is one key-changing update that left columns of the row unknown (see
// txTouch.moves); texts are the new key's columns in text form (nil: unknown), which
// the query reading the row again binds.
type txMove struct {
	rel      uint32
	from, to string
	texts    []string
}

// wmKind is a watermark's kind (the watermark table's wm_type).
type wmKind string

const (
	wmLow  wmKind = "low"
	wmHigh wmKind = "high"
)

// windowSel is the window's view of one registered selection.
type windowSel struct {
	id     string
	lowSeq uint64 // seq of the COMMIT carrying the low watermark; 0: not seen yet
	ready  bool   // rows and snapshot are known (set before the high watermark is written)
	rel    uint32
	rows   *InMemSelection
	snap   xidSnapshot
	// emitted: its rows were handed over in this poll (newPoll clears it). The
	// selection is forgotten only when the poll ends, so a second high watermark row
	// in the same poll must not hand them over again.
	emitted bool
}

// window is the state machine. It is not safe for concurrent use (windowTracker
// serialises access).
type window struct {
	seq  uint64
	open *txTouch   // the transaction between BEGIN and COMMIT
	wms  []wmEvent  // watermarks of the open transaction
	hist []*txTouch // committed transactions not yet pruned
	// sels are the registered selections by ID. Several may be open at once (a
	// pipelined snapshot keeps a few chunks in flight; Refresh calls may overlap):
	// each is judged on its own window, so they never interfere.
	sels map[string]*windowSel
	// ignoreSnapshot disables the visibility fix (plain DBLog). Tests only.
	ignoreSnapshot bool
}

type wmEvent struct {
	id   string
	kind wmKind
}

// emission is what the window hands over at a high watermark's COMMIT.
type emission struct {
	id    string
	items []DBItem
	// reread lists record IDs of selected rows that were dropped and whose last
	// change inside the window left columns unknown to a consumer that never saw the
	// row (unchanged TOAST): they must be read again in another window.
	reread []string
	// rereadMoved lists, as key column texts, the keys that dropped selected rows
	// moved to inside the window by key-changing updates that left columns unknown
	// (and that no later change filled in): they must be read again too, at their
	// new keys.
	rereadMoved [][]string
	// retry: a change whose key could not be read touched the table inside the
	// window; nothing was emitted and the whole selection must run again.
	retry bool
}

// begin starts a transaction (pgoutput BEGIN).
func (w *window) begin(xid uint32) {
	w.open = &txTouch{xid: xid, keys: map[rowKey]bool{}}
	w.wms = w.wms[:0]
}

// change records that the open transaction touched key (and oldKey, for a
// key-changing update; "" otherwise) of relation rel. partial says the change left
// columns of key's row unknown (unchanged TOASTed values not sent).
func (w *window) change(rel uint32, key, oldKey string, partial bool) {
	if w.open == nil {
		return
	}
	if oldKey != "" {
		w.open.keys[rowKey{rel, oldKey}] = false // the old key's row is gone
	}
	w.open.keys[rowKey{rel, key}] = partial
}

// move records that the open transaction's last change (change, with partial true)
// moved the row of key from to key to, whose key columns' texts are texts (nil:
// unknown).
func (w *window) move(rel uint32, from, to string, texts []string) {
	if w.open == nil {
		return
	}
	w.open.moves = append(w.open.moves, txMove{rel: rel, from: from, to: to, texts: texts})
}

// unknownKey records that the open transaction changed a row of rel whose key could
// not be read (e.g. a DELETE under REPLICA IDENTITY NOTHING).
func (w *window) unknownKey(rel uint32) {
	if w.open == nil {
		return
	}
	if w.open.unknown == nil {
		w.open.unknown = map[uint32]struct{}{}
	}
	w.open.unknown[rel] = struct{}{}
}

// relation records the name (schema, table) a RELATION message of the open
// transaction gives relation rel.
func (w *window) relation(rel uint32, schema, table string) {
	if w.open == nil || len(w.sels) == 0 {
		// Only a window needs names, and a selection registers before its low
		// watermark is written, so before any transaction inside its window.
		return
	}
	if w.open.names == nil {
		w.open.names = map[uint32][2]string{}
	}
	w.open.names[rel] = [2]string{schema, table}
}

// truncate records that the open transaction truncated relation rel.
func (w *window) truncate(rel uint32) {
	if w.open == nil {
		return
	}
	if w.open.truncated == nil {
		w.open.truncated = map[uint32]struct{}{}
	}
	w.open.truncated[rel] = struct{}{}
}

// watermark records a watermark row written by the open transaction.
func (w *window) watermark(id string, kind wmKind) {
	w.wms = append(w.wms, wmEvent{id, kind})
}

// commit ends the open transaction. For each high watermark it carried of a
// registered, ready selection, the selection's rows that no transaction inside its
// window touched are returned, once per poll: a second high watermark row of the
// selection in the same poll (in this transaction or a later one) is ignored. The
// selection stays registered until done, so a high watermark re-delivered in a
// later poll (the first one's rows were not taken) emits again.
func (w *window) commit() []*emission {
	tx := w.open
	w.open = nil
	if tx == nil {
		return nil
	}
	w.seq++
	tx.seq = w.seq
	if len(tx.keys) > 0 || len(tx.truncated) > 0 || len(tx.unknown) > 0 || len(tx.moves) > 0 || len(tx.names) > 0 {
		w.hist = append(w.hist, tx)
	}
	var ems []*emission
	for _, wm := range w.wms {
		sel := w.sels[wm.id]
		if sel == nil {
			continue // another run's or another syncer's watermark: ignore
		}
		switch wm.kind {
		case wmLow:
			// A re-delivered low watermark (after a retry) moves the window start;
			// every transaction after it is delivered again, so nothing is lost.
			sel.lowSeq = tx.seq
		case wmHigh:
			if sel.ready && sel.lowSeq != 0 && !sel.emitted {
				sel.emitted = true
				ems = append(ems, w.emit(sel))
			}
		}
	}
	w.wms = w.wms[:0]
	return ems
}

// registered tells whether a selection of relation rel is registered.
func (w *window) registered(rel uint32) bool {
	for _, sel := range w.sels {
		if sel.rel == rel {
			return true
		}
	}
	return false
}

// highSeen tells whether the poller has met selection id's high watermark in this
// poll: its rows were handed over (emitted), or the transaction carrying it is being
// read (they will be at its COMMIT).
func (w *window) highSeen(id string) bool {
	if sel := w.sels[id]; sel != nil && sel.emitted {
		return true
	}
	for _, wm := range w.wms {
		if wm.id == id && wm.kind == wmHigh {
			return true
		}
	}
	return false
}

// newPoll starts a poll: the log is read from the slot's position again, so
// selections whose rows were handed over in an earlier poll that was not taken
// (a handler error) emit again at their high watermark.
func (w *window) newPoll() {
	for _, sel := range w.sels {
		sel.emitted = false
	}
}

// emit drops touched keys from a selection and returns what is left.
func (w *window) emit(sel *windowSel) *emission {
	partial := map[string]bool{} // dropped key -> its last change left columns unknown
	// at follows rows moved with columns left unknown: their key now -> the key they
	// had before the first such move, and the texts of the key now.
	var at map[string]txMove
	// name follows the table's name through the RELATION messages inside the window:
	// renamed (or moved to another schema) there, after the rows were read (a
	// selection finding its table renamed fails), the rows take its new name. lost:
	// another relation showed up under the name the table last had (the table was
	// dropped, or renamed with no change of it since, and another took its name): the
	// rows are not that relation's, and the selection runs again (to fail on the
	// replaced table, TestRefreshTableReplacedInWindow).
	var name [2]string
	known, lost := false, false
	if sel.rows != nil {
		for _, it := range sel.rows.rows {
			if it.item.Table != nil {
				name, known = [2]string{it.item.Table.Namespace, it.item.Table.TableName}, true
				break
			}
		}
	}
	orig := name
	for _, tx := range w.hist {
		inside := tx.seq > sel.lowSeq
		if inside && known && len(tx.names) > 0 {
			if n, ok := tx.names[sel.rel]; ok {
				name, lost = n, false
			}
			for rel, n := range tx.names {
				if rel != sel.rel && n == name {
					lost = true
				}
			}
		}
		if !inside && (w.ignoreSnapshot || !sel.snap.inProgress(tx.xid)) {
			continue
		}
		if _, ok := tx.unknown[sel.rel]; ok {
			return &emission{id: sel.id, retry: true}
		}
		if _, ok := tx.truncated[sel.rel]; ok {
			sel.rows.Clear()
			partial = map[string]bool{}
			at = nil
			continue
		}
		for k, p := range tx.keys {
			if k.rel == sel.rel {
				partial[k.key] = p
			}
		}
		for _, m := range tx.moves {
			if m.rel != sel.rel {
				continue
			}
			origin := m.from
			if prev, ok := at[m.from]; ok {
				origin = prev.from
				delete(at, m.from)
			}
			if at == nil {
				at = map[string]txMove{}
			}
			at[m.to] = txMove{from: origin, to: m.to, texts: m.texts}
		}
	}
	// Every key in partial was touched after the last TRUNCATE (if any).
	if lost {
		return &emission{id: sel.id, retry: true}
	}
	sel.rows.removeKeys(partial)
	em := &emission{id: sel.id, items: sel.rows.Items()}
	if name != orig {
		renameItems(em.items, name[0], name[1])
	}
	for _, p := range partial {
		if p { // some dropped row may need reading again: find them in selection order
			for _, key := range sel.rows.selectedKeys() {
				if partial[key] {
					em.reread = append(em.reread, key)
				}
			}
			break
		}
	}
	if len(at) > 0 {
		// A selected row moved to a key outside the selection, its columns left
		// unknown: a consumer that never saw it gets it there without them, and the
		// selection no longer holds it. Read it again at its new key, in key order.
		selected := map[string]bool{}
		for _, key := range sel.rows.selectedKeys() {
			selected[key] = true
		}
		keys := make([]string, 0, len(at))
		for key := range at {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			m := at[key]
			if selected[m.from] && !selected[key] && partial[key] && m.texts != nil {
				em.rereadMoved = append(em.rereadMoved, m.texts)
			}
		}
	}
	return em
}

// register starts tracking a selection of relation rel (before its low watermark is
// written). IDs must be unique; registering an ID again starts it over.
func (w *window) register(id string, rel uint32) {
	if w.sels == nil {
		w.sels = map[string]*windowSel{}
	}
	w.sels[id] = &windowSel{id: id, rel: rel}
}

// setRows gives a registered selection its rows and snapshot (before its high
// watermark is written).
func (w *window) setRows(id string, rows *InMemSelection, snap xidSnapshot) bool {
	sel := w.sels[id]
	if sel == nil {
		return false
	}
	sel.rows, sel.snap, sel.ready = rows, snap, true
	return true
}

// done forgets the selection.
func (w *window) done(id string) {
	delete(w.sels, id)
}

// prune forgets committed transactions nobody can need any more; snap must have been
// taken after they were delivered. A transaction is kept while it is in progress in
// snap (a later selection's snapshot may not see it either) or while a registered
// selection may need it: it lies inside that selection's window, the selection's
// snapshot is not known yet, or that snapshot did not see it.
func (w *window) prune(snap xidSnapshot) {
	needed := func(tx *txTouch) bool {
		if snap.inProgress(tx.xid) {
			return true
		}
		for _, sel := range w.sels {
			if sel.lowSeq != 0 && tx.seq > sel.lowSeq {
				return true
			}
			if !sel.ready || (!w.ignoreSnapshot && sel.snap.inProgress(tx.xid)) {
				return true
			}
		}
		return false
	}
	kept := w.hist[:0]
	for _, tx := range w.hist {
		if needed(tx) {
			kept = append(kept, tx)
		}
	}
	for i := len(kept); i < len(w.hist); i++ {
		w.hist[i] = nil
	}
	w.hist = kept
}

// renameItems makes refresh rows read before their table was renamed (ALTER TABLE ...
// RENAME TO, SET SCHEMA) name it by its new name, as the changes delivered before
// them do: the same relation, described as when the rows were read but for its name
// (TestRefreshTableRenamedInWindow).
func renameItems(items []DBItem, schema, table string) {
	var from, to *PGTableInfo
	for i := range items {
		it := &items[i]
		if it.Table == nil || (it.Table.Namespace == schema && it.Table.TableName == table) {
			continue
		}
		if it.Table != from {
			from = it.Table
			c := *from
			c.Namespace, c.TableName = schema, table
			if from.reln != nil {
				r := *from.reln
				r.Namespace, r.RelationName = schema, table
				c.reln = &r
			}
			to = &c
		}
		it.Table = to
		if it.row != nil {
			r := *it.row
			r.Table = to
			it.row = &r
		}
	}
}
