package dbsync

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBatchStateFollowsRows: the net effect of one transaction's changes, row by row.
func TestBatchStateFollowsRows(t *testing.T) {
	tbl := &PGTableInfo{Namespace: "public", TableName: "t"}
	ins := func(b *batchState, key string, v StringMap) {
		b.add(&Change{Op: OpInsert, Table: tbl, Key: key, New: v})
	}
	upd := func(b *batchState, oldKey, key string, old, v StringMap) {
		c := &Change{Op: OpUpdate, Table: tbl, Key: key, New: v, Old: old}
		if oldKey != key {
			c.OldKey = oldKey
		}
		b.add(c)
	}
	del := func(b *batchState, key string, old StringMap) {
		b.add(&Change{Op: OpDelete, Table: tbl, Key: key, Old: old})
	}

	// Inserted and deleted in one transaction: nothing to send.
	b := newBatchState()
	ins(b, "1", StringMap{"id": 1, "v": "a"})
	del(b, "1", StringMap{"id": 1})
	b.commit()
	require.Empty(t, b.upserts["public.t"])
	require.Empty(t, b.deletes["public.t"])

	// Updates without the unchanged TOAST column "big" keep it from the poll's
	// earlier upsert, across transactions and within one.
	b = newBatchState()
	ins(b, "1", StringMap{"id": 1, "v": "a", "big": "B"})
	b.commit()
	upd(b, "1", "1", nil, StringMap{"id": 1, "v": "b"})
	upd(b, "1", "1", nil, StringMap{"id": 1, "v": "c"})
	b.commit()
	require.Equal(t, map[string]StringMap{"1": {"id": 1, "v": "c", "big": "B"}}, b.upserts["public.t"])

	// A swap under a deferrable key, the old rows whole (REPLICA IDENTITY FULL), with
	// a NaN: the second row's move leaves the first row's new place alone.
	nan := math.NaN()
	b = newBatchState()
	upd(b, "1", "2", StringMap{"id": 1, "f": nan}, StringMap{"id": 2, "f": nan})
	upd(b, "2", "1", StringMap{"id": 2, "f": 0.5}, StringMap{"id": 1, "f": 0.5})
	b.commit()
	require.Len(t, b.upserts["public.t"], 2)
	require.Equal(t, 0.5, b.upserts["public.t"]["1"]["f"])
	require.True(t, math.IsNaN(b.upserts["public.t"]["2"]["f"].(float64)))
	require.Empty(t, b.deletes["public.t"])

	// The row with the NaN moves on from 2 to 3: 2 keeps what it held before.
	b = newBatchState()
	upd(b, "1", "2", StringMap{"id": 1, "f": nan}, StringMap{"id": 2, "f": nan})
	upd(b, "2", "3", StringMap{"id": 2, "f": nan}, StringMap{"id": 3, "f": nan})
	b.commit()
	require.Equal(t, map[string]bool{"1": true}, b.deletes["public.t"])
	require.Len(t, b.upserts["public.t"], 1)
	require.Contains(t, b.upserts["public.t"], "3")

	// The same with the NaN inside an array (float8[] decodes as []any): the moved
	// row is still told from the row that held key 2 before.
	b = newBatchState()
	upd(b, "1", "2", StringMap{"id": 1, "a": []any{nan, 1.0}}, StringMap{"id": 2, "a": []any{nan, 1.0}})
	upd(b, "2", "3", StringMap{"id": 2, "a": []any{nan, 1.0}}, StringMap{"id": 3, "a": []any{nan, 1.0}})
	b.commit()
	require.Equal(t, map[string]bool{"1": true}, b.deletes["public.t"])
	require.Len(t, b.upserts["public.t"], 1)
	require.Contains(t, b.upserts["public.t"], "3")

	// A TRUNCATE inside the transaction empties what it did to that table before;
	// another table's row is followed across it.
	other := &PGTableInfo{Namespace: "public", TableName: "u"}
	b = newBatchState()
	ins(b, "1", StringMap{"id": 1, "v": "a"})
	b.add(&Change{Op: OpInsert, Table: other, Key: "9", New: StringMap{"id": 9, "v": "x", "big": "B"}})
	b.truncate("public.t")
	ins(b, "2", StringMap{"id": 2, "v": "b"})
	b.add(&Change{Op: OpUpdate, Table: other, Key: "9", New: StringMap{"id": 9, "v": "y"}})
	b.commit()
	require.Equal(t, map[string]bool{"public.t": true}, b.truncated)
	require.Equal(t, map[string]StringMap{"2": {"id": 2, "v": "b"}}, b.upserts["public.t"])
	require.Equal(t, map[string]StringMap{"9": {"id": 9, "v": "y", "big": "B"}}, b.upserts["public.u"])
	require.Empty(t, b.deletes["public.u"])
}
