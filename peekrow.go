package dbsync

import (
	"database/sql"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// rowScanner reads rows of pg_logical_slot_peek_binary_changes (lsn, xid, data) into
// PGMSGs. It parses the lsn column itself: pglogrepl.LSN.Scan goes through
// fmt.Sscanf, which cost more per row than decoding a small change.
type rowScanner struct {
	lsn sql.RawBytes
}

// scan reads the current row into m. m.Data is a fresh copy owned by m.
func (r *rowScanner) scan(rows *sql.Rows, m *PGMSG) error {
	if err := rows.Scan(&r.lsn, &m.Xid, &m.Data); err != nil {
		return err
	}
	lsn, err := parseLSN(r.lsn)
	if err != nil {
		return err
	}
	m.LSN = lsn
	return nil
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
