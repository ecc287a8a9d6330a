package dbsync

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// parseChange decodes an INSERT, UPDATE or DELETE pgoutput message into the same
// pglogrepl structures pglogrepl.Parse builds (protocol version 1, PostgreSQL docs
// §55.9 "Logical Replication Message Formats"), with about a fifth of the
// allocations: pglogrepl allocates every column and copies every value, which made
// parsing the most expensive step of delivering a row. Here a tuple's columns share
// one array and their Data are sub-slices (capacity = length) of one buffer: data
// itself when owned is true (the caller hands data over and never changes it), else
// one copy of it. With an arena (non-nil a) the structures come from its slabs
// instead of three allocations per change. Malformed input gives an error wrapping
// ErrMalformedMessage.
func parseChange(data []byte, owned bool, a *changeArena) (pglogrepl.Message, error) {
	if len(data) > arenaRowBytes {
		// A slab's columns point into every row parsed from it, and one referenced
		// change keeps the slab and so all those rows alive: 256 rows of a two-column
		// table, 25 MiB for rows of 100 KB (TestBacklogOfLargeRowsHeapBounded). Large
		// rows' structures are allocated on their own, a small cost against their data.
		a = nil
	}
	if !owned {
		data = bytes.Clone(data)
	}
	bad := func(what string) error {
		return fmt.Errorf("%w: type %q, %d bytes: %s", ErrMalformedMessage, data[0], len(data), what)
	}
	if len(data) < 6 {
		return nil, bad("too short")
	}
	relID := binary.BigEndian.Uint32(data[1:])
	kind := data[5]
	off := 6
	switch data[0] {
	case 'I':
		if kind != 'N' {
			return nil, bad("tuple type is not N")
		}
		m := a.insert()
		if _, err := decodeTuple(data, off, &m.tup, a); err != nil {
			return nil, bad(err.Error())
		}
		m.msg.RelationID, m.msg.Tuple = relID, &m.tup
		m.msg.SetType(pglogrepl.MessageTypeInsert)
		return &m.msg, nil
	case 'U':
		m := a.update()
		m.msg.RelationID = relID
		if kind == 'K' || kind == 'O' {
			end, err := decodeTuple(data, off, &m.old, a)
			if err != nil {
				return nil, bad(err.Error())
			}
			m.msg.OldTupleType, m.msg.OldTuple = kind, &m.old
			if end >= len(data) || data[end] != 'N' {
				return nil, bad("no new tuple after the old one")
			}
			off = end + 1
		} else if kind != 'N' {
			return nil, bad("tuple type is not K, O or N")
		}
		if _, err := decodeTuple(data, off, &m.new, a); err != nil {
			return nil, bad(err.Error())
		}
		m.msg.NewTuple = &m.new
		m.msg.SetType(pglogrepl.MessageTypeUpdate)
		return &m.msg, nil
	case 'D':
		if kind != 'K' && kind != 'O' {
			return nil, bad("tuple type is not K or O")
		}
		m := a.delete()
		if _, err := decodeTuple(data, off, &m.tup, a); err != nil {
			return nil, bad(err.Error())
		}
		m.msg.RelationID, m.msg.OldTupleType, m.msg.OldTuple = relID, kind, &m.tup
		m.msg.SetType(pglogrepl.MessageTypeDelete)
		return &m.msg, nil
	}
	return nil, bad("not a row change")
}

// decodeTuple decodes the TupleData at data[off:] into t (its columns from a when
// non-nil) and returns the offset after it.
func decodeTuple(data []byte, off int, t *pglogrepl.TupleData, a *changeArena) (int, error) {
	if off+2 > len(data) {
		return 0, fmt.Errorf("tuple column count at %d past the end", off)
	}
	n := int(binary.BigEndian.Uint16(data[off:]))
	off += 2
	t.ColumnNum = uint16(n)
	if n == 0 {
		return off, nil
	}
	cols, ptrs := a.columns(n)
	for i := range cols {
		if off >= len(data) {
			return 0, fmt.Errorf("column %d of %d past the end", i+1, n)
		}
		c := &cols[i]
		c.DataType = data[off]
		off++
		switch c.DataType {
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			if off+4 > len(data) {
				return 0, fmt.Errorf("length of column %d past the end", i+1)
			}
			l := binary.BigEndian.Uint32(data[off:])
			off += 4
			if uint64(off)+uint64(l) > uint64(len(data)) {
				return 0, fmt.Errorf("column %d: %d bytes past the end", i+1, l)
			}
			c.Length = l
			c.Data = data[off : off+int(l) : off+int(l)]
			off += int(l)
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
		default:
			return 0, fmt.Errorf("column %d has unknown kind %q", i+1, c.DataType)
		}
		ptrs[i] = c
	}
	t.Columns = ptrs
	return off, nil
}

// The structures of one parsed change, allocated together.
type (
	insertAlloc struct {
		msg pglogrepl.InsertMessage
		tup pglogrepl.TupleData
	}
	updateAlloc struct {
		msg      pglogrepl.UpdateMessage
		old, new pglogrepl.TupleData
	}
	deleteAlloc struct {
		msg pglogrepl.DeleteMessage
		tup pglogrepl.TupleData
	}
)

// changeArena hands out the structures parseChange builds from slabs allocated a few
// at a time: one allocation per arenaMessages changes of a kind and per arenaColumns
// columns, instead of three per change. A slab is never reused, only replaced when
// used up, so a message stays valid for as long as it is referenced; a referenced
// message keeps its slabs alive (~25 KiB), and with them the row data their other
// columns point into. The nil arena allocates every change's structures on their own.
// Not safe for concurrent use.
type changeArena struct {
	ins  []insertAlloc
	upd  []updateAlloc
	del  []deleteAlloc
	cols []pglogrepl.TupleDataColumn
	ptrs []*pglogrepl.TupleDataColumn
}

// Slab sizes: 64 messages of a kind (3-6 KiB), 512 columns (16 KiB of columns and
// 4 KiB of pointers), so a batch of the poller's 256 rows of a 6-column table takes
// a handful of allocations.
const (
	arenaMessages = 64
	arenaColumns  = 512
	arenaRowBytes = 4 << 10 // a row change of more bytes than this is not taken from slabs
)

func (a *changeArena) insert() *insertAlloc {
	if a == nil {
		return new(insertAlloc)
	}
	return takeOne(&a.ins)
}

func (a *changeArena) update() *updateAlloc {
	if a == nil {
		return new(updateAlloc)
	}
	return takeOne(&a.upd)
}

func (a *changeArena) delete() *deleteAlloc {
	if a == nil {
		return new(deleteAlloc)
	}
	return takeOne(&a.del)
}

// takeOne returns the first zeroed value of *slab, a new slab of arenaMessages when it
// is used up.
func takeOne[T any](slab *[]T) *T {
	if len(*slab) == 0 {
		*slab = make([]T, arenaMessages)
	}
	m := &(*slab)[0]
	*slab = (*slab)[1:]
	return m
}

// columns returns n zeroed columns and n pointer slots, each slice with capacity n
// (appending to one never writes into a neighbour's share of the slab).
func (a *changeArena) columns(n int) ([]pglogrepl.TupleDataColumn, []*pglogrepl.TupleDataColumn) {
	if a == nil || n > arenaColumns/4 {
		return make([]pglogrepl.TupleDataColumn, n), make([]*pglogrepl.TupleDataColumn, n)
	}
	if len(a.cols) < n {
		a.cols = make([]pglogrepl.TupleDataColumn, arenaColumns)
		a.ptrs = make([]*pglogrepl.TupleDataColumn, arenaColumns)
	}
	cols, ptrs := a.cols[:n:n], a.ptrs[:n:n]
	a.cols, a.ptrs = a.cols[n:], a.ptrs[n:]
	return cols, ptrs
}
