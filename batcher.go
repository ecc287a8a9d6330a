package dbsync

import (
	"fmt"
	"sort"
)

// batchState accumulates the net effect of a poll's committed transactions per table
// for a Batcher: the last upserted values of each record ID, or its deletion, and
// whether the table was truncated first.
type batchState struct {
	pending   []batchOp // the open transaction's changes
	upserts   map[string]map[string]StringMap
	deletes   map[string]map[string]bool
	truncated map[string]bool // tables truncated in this poll: emptied before the rest
}

type batchOp struct {
	doctype, id string
	values      StringMap // nil: delete (or truncate)
	truncate    bool      // a TRUNCATE of doctype (id and values unused)
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
	doctype := c.Table.QualifiedName()
	if c.Op == OpDelete {
		b.pending = append(b.pending, batchOp{doctype: doctype, id: c.Key})
		return
	}
	if c.OldKey != "" {
		b.pending = append(b.pending, batchOp{doctype: doctype, id: c.OldKey})
	}
	b.pending = append(b.pending, batchOp{doctype: doctype, id: c.Key, values: c.New})
}

// refresh adds refresh rows (a selection's rows at its high watermark) as upserts at
// the current position in the poll.
func (b *batchState) refresh(items []DBItem) {
	for _, it := range items {
		b.pending = append(b.pending, batchOp{doctype: it.Table.QualifiedName(), id: it.Key, values: it.Values})
	}
	b.commit()
}

// commit folds the open transaction's changes into the poll's net effect.
func (b *batchState) commit() {
	for _, op := range b.pending {
		if op.truncate {
			b.upserts[op.doctype] = map[string]StringMap{}
			b.deletes[op.doctype] = map[string]bool{}
			b.truncated[op.doctype] = true
			continue
		}
		if b.upserts[op.doctype] == nil {
			b.upserts[op.doctype] = map[string]StringMap{}
			b.deletes[op.doctype] = map[string]bool{}
		}
		if op.values == nil {
			delete(b.upserts[op.doctype], op.id)
			b.deletes[op.doctype][op.id] = true
		} else {
			prev := b.upserts[op.doctype][op.id]
			merged := op.values
			if prev != nil {
				// Keep columns the change did not carry (unchanged TOAST values).
				merged = make(StringMap, len(prev))
				for k, v := range prev {
					merged[k] = v
				}
				for k, v := range op.values {
					merged[k] = v
				}
			}
			b.upserts[op.doctype][op.id] = merged
			delete(b.deletes[op.doctype], op.id)
		}
	}
	b.pending = b.pending[:0]
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
