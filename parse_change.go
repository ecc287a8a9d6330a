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
// one copy of it. Malformed input gives an error wrapping ErrMalformedMessage.
func parseChange(data []byte, owned bool) (pglogrepl.Message, error) {
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
		a := new(struct {
			msg pglogrepl.InsertMessage
			tup pglogrepl.TupleData
		})
		if _, err := decodeTuple(data, off, &a.tup); err != nil {
			return nil, bad(err.Error())
		}
		a.msg.RelationID, a.msg.Tuple = relID, &a.tup
		a.msg.SetType(pglogrepl.MessageTypeInsert)
		return &a.msg, nil
	case 'U':
		a := new(struct {
			msg      pglogrepl.UpdateMessage
			old, new pglogrepl.TupleData
		})
		a.msg.RelationID = relID
		if kind == 'K' || kind == 'O' {
			end, err := decodeTuple(data, off, &a.old)
			if err != nil {
				return nil, bad(err.Error())
			}
			a.msg.OldTupleType, a.msg.OldTuple = kind, &a.old
			if end >= len(data) || data[end] != 'N' {
				return nil, bad("no new tuple after the old one")
			}
			off = end + 1
		} else if kind != 'N' {
			return nil, bad("tuple type is not K, O or N")
		}
		if _, err := decodeTuple(data, off, &a.new); err != nil {
			return nil, bad(err.Error())
		}
		a.msg.NewTuple = &a.new
		a.msg.SetType(pglogrepl.MessageTypeUpdate)
		return &a.msg, nil
	case 'D':
		if kind != 'K' && kind != 'O' {
			return nil, bad("tuple type is not K or O")
		}
		a := new(struct {
			msg pglogrepl.DeleteMessage
			tup pglogrepl.TupleData
		})
		if _, err := decodeTuple(data, off, &a.tup); err != nil {
			return nil, bad(err.Error())
		}
		a.msg.RelationID, a.msg.OldTupleType, a.msg.OldTuple = relID, kind, &a.tup
		a.msg.SetType(pglogrepl.MessageTypeDelete)
		return &a.msg, nil
	}
	return nil, bad("not a row change")
}

// decodeTuple decodes the TupleData at data[off:] into t and returns the offset
// after it.
func decodeTuple(data []byte, off int, t *pglogrepl.TupleData) (int, error) {
	if off+2 > len(data) {
		return 0, fmt.Errorf("tuple column count at %d past the end", off)
	}
	n := int(binary.BigEndian.Uint16(data[off:]))
	off += 2
	t.ColumnNum = uint16(n)
	if n == 0 {
		return off, nil
	}
	cols := make([]pglogrepl.TupleDataColumn, n)
	ptrs := make([]*pglogrepl.TupleDataColumn, n)
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
