// Package rowmatch tells whether a row a consumer holds is the one PostgreSQL sent as
// a change's old row. Consumers that follow rows within a transaction (the Batcher's
// net effect, handlers.Cache) need it where a DEFERRABLE key lets two rows hold one
// record ID for a moment: the old row (REPLICA IDENTITY FULL sends it whole) says which
// of them a change moved or deleted.
package rowmatch

import (
	"math"
	"reflect"
)

// SameRow tells whether row agrees with old on every column both hold (a column
// missing from row, such as an unchanged TOAST value, does not count against it).
func SameRow(row, old map[string]any) bool {
	for col, ov := range old {
		if rv, ok := row[col]; ok && !SameValue(rv, ov) {
			return false
		}
	}
	return true
}

// SameValue is reflect.DeepEqual, except that a float NaN equals NaN, as PostgreSQL
// orders and compares it, also as an element of an array ([]any, nested by
// dimension).
func SameValue(a, b any) bool {
	if reflect.DeepEqual(a, b) {
		return true
	}
	switch x := a.(type) {
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !SameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	case float64:
		y, ok := b.(float64)
		return ok && math.IsNaN(x) && math.IsNaN(y)
	case float32:
		y, ok := b.(float32)
		return ok && math.IsNaN(float64(x)) && math.IsNaN(float64(y))
	}
	return false
}

// Leaving picks the row a change takes away from a record ID inside a transaction: of
// the n rows the transaction put there that are still there (row(i), oldest first;
// more than one only while a DEFERRABLE key is violated), the latest that agrees with
// old (what PostgreSQL sent of the old row; nil or a key only agrees with any), or -1
// for the row that was there before the transaction. preGone says that row already
// left: then one of the transaction's rows leaves, the last one when none agrees
// (values that compare unequal, such as a column the row lacks a key for, must not
// leave a row behind that is gone).
func Leaving(n int, row func(int) map[string]any, old map[string]any, preGone bool) int {
	if n == 0 {
		return -1
	}
	if n == 1 && preGone {
		return 0 // the one row there
	}
	for i := n - 1; i >= 0; i-- {
		if SameRow(row(i), old) {
			return i
		}
	}
	if preGone {
		return n - 1
	}
	return -1
}
