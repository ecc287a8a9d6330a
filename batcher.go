package dbsync

import (
	"fmt"
	"sort"

	"github.com/dbsync/dbsync/internal/rowmatch"
)

// batchState accumulates the net effect of a poll's committed transactions per table
// for a Batcher: the last upserted values of each record ID, or its deletion, and
// whether the table was truncated first.
type batchState struct {
	pending   []batchOp // the open transaction's changes
	upserts   map[string]map[string]StringMap
	deletes   map[string]map[string]bool
	truncated map[string]bool // tables truncated in this poll: emptied before the rest
	// tx follows the open transaction's rows in commit; kept between commits so that
	// following them allocates nothing per transaction once warm.
	tx txFollow
}

// batchOp is one change of the open transaction, as add recorded it.
type batchOp struct {
	doctype string
	// A change removes the row at from (a delete, or the update of a row that was at
	// from) when remove is set; old is what PostgreSQL sent of that row (nil: nothing,
	// an update whose key did not change under REPLICA IDENTITY DEFAULT), which tells
	// which row left from when two held it for a moment (a DEFERRABLE key).
	remove bool
	from   string
	old    StringMap
	// It puts values at to (an insert, the new row of an update, a refresh row) when
	// put is set.
	put    bool
	to     string
	values StringMap
	// truncate: a TRUNCATE of doctype (nothing else is set).
	truncate bool
}

func newBatchState() *batchState {
	return &batchState{upserts: map[string]map[string]StringMap{}, deletes: map[string]map[string]bool{}, truncated: map[string]bool{}}
}

// truncate records a TRUNCATE of doctype in the open transaction: what this poll
// upserted or deleted in it before is dropped, and the Batcher empties it first.
func (b *batchState) truncate(doctype string) {
	b.pending = append(b.pending, batchOp{doctype: doctype, truncate: true})
}

// add records a decoded row change of the open transaction: a delete, or an upsert
// of the new values (and the removal of the old key of a key-changing update).
// Columns in c.Unchanged are absent from c.New: commit keeps an earlier value of this
// poll, and the Batcher must merge (see Batcher).
func (b *batchState) add(c *Change) {
	op := batchOp{doctype: c.Table.QualifiedName()}
	switch {
	case c.Op == OpDelete:
		op.remove, op.from, op.old = true, c.Key, c.Old
	case c.Op == OpUpdate:
		op.remove, op.from, op.old = true, c.Key, c.Old
		if c.OldKey != "" {
			op.from = c.OldKey
		}
		op.put, op.to, op.values = true, c.Key, c.New
	default:
		op.put, op.to, op.values = true, c.Key, c.New
	}
	b.pending = append(b.pending, op)
}

// refresh adds refresh rows (a selection's rows at its high watermark) as upserts at
// the current position in the poll.
func (b *batchState) refresh(items []DBItem) {
	for _, it := range items {
		b.pending = append(b.pending, batchOp{doctype: it.Table.QualifiedName(), remove: true, from: it.Key, put: true, to: it.Key, values: it.Values})
	}
	b.commit()
}

// txKey is a record ID of a table.
type txKey struct{ doctype, id string }

// txRows is what the open transaction did at one record ID: the rows it put there
// that are still there (more than one only while a DEFERRABLE key is violated), and
// whether the row that was there before the transaction left. dropped: a TRUNCATE of
// its table later in the transaction emptied it.
type txRows struct {
	key     txKey
	ours    []StringMap
	preGone bool
	dropped bool
}

// txFollow is the record IDs the open transaction touched, in the order it first
// touched them.
type txFollow struct {
	index map[txKey]int
	rows  []txRows
}

// at returns what the transaction did at k, added when k is new. The pointer is good
// until the next at.
func (f *txFollow) at(k txKey) *txRows {
	if i, ok := f.index[k]; ok {
		return &f.rows[i]
	}
	if f.index == nil {
		f.index = map[txKey]int{}
	}
	f.index[k] = len(f.rows)
	if len(f.rows) < cap(f.rows) {
		f.rows = f.rows[:len(f.rows)+1]
		r := &f.rows[len(f.rows)-1]
		*r = txRows{key: k, ours: r.ours[:0]} // keeps ours' backing array
		return r
	}
	f.rows = append(f.rows, txRows{key: k})
	return &f.rows[len(f.rows)-1]
}

// drop forgets what the transaction did to doctype's rows (a TRUNCATE of it).
func (f *txFollow) drop(doctype string) {
	for i := range f.rows {
		if r := &f.rows[i]; r.key.doctype == doctype && !r.dropped {
			r.dropped = true
			delete(f.index, r.key)
		}
	}
}

// reset forgets the transaction, keeping the storage (and no row maps).
func (f *txFollow) reset() {
	clear(f.index)
	for i := range f.rows {
		clear(f.rows[i].ours)
	}
	f.rows = f.rows[:0]
}

// commit folds the open transaction's changes into the poll's net effect.
//
// Within a transaction a DEFERRABLE key can be held by two rows for a moment (a swap,
// UPDATE ... SET id = 3 - id), so the changes are followed row by row: a row leaving
// a record ID is the one the transaction put there whose values match what
// PostgreSQL sent of the old row, else the row that was there before. Between
// transactions a key is held by one row at most.
func (b *batchState) commit() {
	if len(b.pending) == 0 {
		return
	}
	f := &b.tx
	defer f.reset()
	for _, op := range b.pending {
		if op.truncate {
			// What the transaction did to the table before is emptied with it; its
			// other tables' rows are followed on.
			f.drop(op.doctype)
			b.upserts[op.doctype] = map[string]StringMap{}
			b.deletes[op.doctype] = map[string]bool{}
			b.truncated[op.doctype] = true
			continue
		}
		var left StringMap // the transaction's own row that the change replaces
		if op.remove {
			r := f.at(txKey{op.doctype, op.from})
			if i := rowmatch.Leaving(len(r.ours), func(i int) map[string]any { return r.ours[i] }, op.old, r.preGone); i >= 0 {
				left = r.ours[i]
				r.ours = append(r.ours[:i], r.ours[i+1:]...)
			} else {
				r.preGone = true
			}
		}
		if op.put {
			v := op.values
			if left != nil {
				v = mergeValues(left, v)
			}
			r := f.at(txKey{op.doctype, op.to})
			r.ours = append(r.ours, v)
		}
	}
	for i := range f.rows {
		r := &f.rows[i]
		switch {
		case r.dropped:
		case len(r.ours) > 0:
			b.upsert(r.key.doctype, r.key.id, r.ours[len(r.ours)-1])
		case r.preGone:
			b.delete(r.key.doctype, r.key.id)
		}
	}
	b.pending = b.pending[:0]
}

// mergeValues returns prev with values over it: the columns values lacks (unchanged
// TOAST values) keep prev's.
func mergeValues(prev, values StringMap) StringMap {
	merged := make(StringMap, len(prev)+len(values))
	for k, v := range prev {
		merged[k] = v
	}
	for k, v := range values {
		merged[k] = v
	}
	return merged
}

// upsert folds an upsert of a transaction into the poll's net effect, keeping the
// columns it lacks from an earlier upsert of the poll.
func (b *batchState) upsert(doctype, id string, values StringMap) {
	b.table(doctype)
	if prev := b.upserts[doctype][id]; prev != nil {
		values = mergeValues(prev, values)
	}
	b.upserts[doctype][id] = values
	delete(b.deletes[doctype], id)
}

// delete folds a delete of a transaction into the poll's net effect.
func (b *batchState) delete(doctype, id string) {
	b.table(doctype)
	delete(b.upserts[doctype], id)
	b.deletes[doctype][id] = true
}

func (b *batchState) table(doctype string) {
	if b.upserts[doctype] == nil {
		b.upserts[doctype] = map[string]StringMap{}
		b.deletes[doctype] = map[string]bool{}
	}
}

// flush sends, per table in table-name order, the truncate (BatchTruncater), deletes,
// then upserts, and resets. A truncated table needs a Batcher that implements
// BatchTruncater; the dispatcher refuses the TRUNCATE otherwise, before this.
func (b *batchState) flush(bt Batcher) error {
	names := make([]string, 0, len(b.upserts))
	for n := range b.upserts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if b.truncated[n] {
			tr, ok := bt.(BatchTruncater)
			if !ok {
				return fmt.Errorf("%w: %s was truncated, and the Batcher does not implement BatchTruncater", ErrConfig, n)
			}
			if _, err := tr.BatchTruncate(n); err != nil {
				return err
			}
		}
		if len(b.deletes[n]) > 0 {
			ids := make([]string, 0, len(b.deletes[n]))
			for id := range b.deletes[n] {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			if _, err := bt.BatchDelete(n, ids); err != nil {
				return err
			}
		}
		if len(b.upserts[n]) > 0 {
			if _, err := bt.BatchUpsert(n, b.upserts[n]); err != nil {
				return err
			}
		}
	}
	b.upserts = map[string]map[string]StringMap{}
	b.deletes = map[string]map[string]bool{}
	b.truncated = map[string]bool{}
	return nil
}
