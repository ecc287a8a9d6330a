package dbsync

import (
	"database/sql"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// rowScanner reads rows of pg_logical_slot_peek_binary_changes (lsn, xid, data) into
// PGMSGs. It parses the lsn and xid columns itself (pglogrepl.LSN.Scan goes through
// fmt.Sscanf, and database/sql converts text into a *uint32 by reflection, each
// costing more per row than decoding a small change), and copies the data column
// into a shared slab (one allocation per dataSlabSize bytes instead of one per row).
type rowScanner struct {
	lsn, xid, data sql.RawBytes
	slab           []byte
}

// dataSlabSize is the size of the buffers row data is copied into. A message keeps
// its slab (at most this size, shared with its neighbours) alive while it is
// referenced; data larger than a quarter of it gets its own allocation.
const dataSlabSize = 64 << 10

// scan reads the current row into m. m.Data is a copy that no later row overwrites.
func (r *rowScanner) scan(rows *sql.Rows, m *PGMSG) error {
	if err := rows.Scan(&r.lsn, &r.xid, &r.data); err != nil {
		return err
	}
	lsn, err := parseLSN(r.lsn)
	if err != nil {
		return err
	}
	xid, err := parseXid(r.xid)
	if err != nil {
		return err
	}
	m.LSN, m.Xid, m.Data = lsn, xid, r.copyData(r.data)
	return nil
}

// copyData returns a copy of b (nil for nil), from the slab when it is small.
func (r *rowScanner) copyData(b []byte) []byte {
	if b == nil {
		return nil
	}
	if len(b) > dataSlabSize/4 {
		return append(make([]byte, 0, len(b)), b...)
	}
	if cap(r.slab)-len(r.slab) < len(b) {
		r.slab = make([]byte, 0, dataSlabSize)
	}
	start := len(r.slab)
	r.slab = append(r.slab, b...)
	return r.slab[start:len(r.slab):len(r.slab)]
}

// parseXid parses a transaction ID's text form (an unsigned 32-bit decimal).
func parseXid(b []byte) (uint32, error) {
	if len(b) == 0 || len(b) > 10 {
		return 0, fmt.Errorf("%w: invalid xid %q", ErrMalformedMessage, b)
	}
	var x uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: invalid xid %q", ErrMalformedMessage, b)
		}
		x = x*10 + uint64(c-'0')
	}
	if x > 1<<32-1 {
		return 0, fmt.Errorf("%w: invalid xid %q", ErrMalformedMessage, b)
	}
	return uint32(x), nil
}

// parseLSN parses PostgreSQL's text form of a pg_lsn ("16/B374D848": two hexadecimal
// halves of up to 8 digits each).
func parseLSN(b []byte) (pglogrepl.LSN, error) {
	var hi, lo uint64
	half, digits := &hi, 0
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c == '/' && half == &hi && digits > 0:
			half, digits = &lo, 0
			continue
		default:
			return 0, fmt.Errorf("%w: invalid LSN %q", ErrMalformedMessage, b)
		}
		if digits++; digits > 8 {
			return 0, fmt.Errorf("%w: invalid LSN %q", ErrMalformedMessage, b)
		}
		*half = *half<<4 | uint64(d)
	}
	if half != &lo || digits == 0 {
		return 0, fmt.Errorf("%w: invalid LSN %q", ErrMalformedMessage, b)
	}
	return pglogrepl.LSN(hi<<32 | lo), nil
}
