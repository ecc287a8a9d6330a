package dbsync

import (
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"
)

// RefreshRowHandler is an optional interface of a MessageHandler. When the handler
// implements it, the rows of Refresh and Snapshot (refresh rows) are handed to
// HandleRefreshRow instead of HandleRefresh, as read: the handler scans the columns it
// needs into typed variables (RefreshRow.Scan) or asks for the map HandleRefresh would
// have had (RefreshRow.Values). The Syncer then decodes only each row's key (for its
// record ID and the watermark window), not a map of every value: on the development
// machine that map was the largest part of a snapshot's client CPU per row
// (docs/BENCHMARKS.md, snapshot). Refresh rows come at the same places, in the same
// order, as through HandleRefresh (docs/SNAPSHOTS.md); a Batcher, when set, still gets
// them decoded.
type RefreshRowHandler interface {
	// HandleRefreshRow gets one refresh row. row and its bytes are valid only during
	// the call: keep what Scan or Values returned, not row.
	HandleRefreshRow(row *RefreshRow) error
}

// RefreshRow is one refresh row as the selection read it: each selected column in
// PostgreSQL's text output form, the form pgoutput sends in changes.
type RefreshRow struct {
	// Table is the table the row belongs to.
	Table *PGTableInfo
	// Key is the row's record ID (PGTableInfo.GetRecordID of its primary key), as in
	// DBItem.Key and Change.Key.
	Key string

	names  []string        // selected column names
	cols   []*PGColumnInfo // their descriptions (nil: not a column of Table)
	raw    []sql.RawBytes  // their values (nil: NULL)
	values StringMap       // decoded already (a Batcher needed them); nil otherwise
}

// Columns returns the names of the row's columns, in the order Scan takes them (the
// table's column order for a snapshot, the query's for Refresh). The slice must not be
// modified.
func (r *RefreshRow) Columns() []string { return r.names }

// Values returns the row's values decoded as DBItem.Values holds them for
// HandleRefresh (docs/VALUES.md): a new map on each call. Errors wrap ErrDecodeValue.
func (r *RefreshRow) Values() (StringMap, error) {
	if r.values != nil {
		out := make(StringMap, len(r.values))
		for k, v := range r.values {
			out[k] = v
		}
		return out, nil
	}
	return r.Table.decodeTextCols(r.names, r.cols, r.raw, true)
}

// Scan decodes the row's columns into dest, one destination per column (Columns), with
// ScanTuple's destination rules: nil skips a column; *any receives the value Values
// gives; *string, *int64, *int32, *int16, *bool, *time.Time, *pgtype.Numeric,
// *json.RawMessage and the other types of docs/VALUES.md take the common types without
// boxing; anything else goes through pgx's pgtype. NULL scans as nil into *any and
// through pgtype otherwise (use a pointer-to-pointer or a sql.Null type for nullable
// columns). A column that is not one of Table's (a Refresh query's own expression)
// scans as its text into *any or *string. A timestamptz comes in UTC into every
// destination, as in ScanTuple (also the elements and bounds of timestamptz[],
// tstzrange and tstzmultirange in []time.Time, pgtype.Range[time.Time], ...), so a
// refresh row's instants equal its changes' whatever time.Local is. A numeric keeps its
// scale into every destination, as in ScanTuple (also in []pgtype.Numeric,
// pgtype.Range[pgtype.Numeric], ...), so it equals its changes' values.
//
// Errors: ErrConfig (len(dest) is not the number of columns, or an unknown column
// into another destination), ErrDecodeValue.
func (r *RefreshRow) Scan(dest ...any) error {
	if len(dest) != len(r.names) {
		return fmt.Errorf("%w: RefreshRow.Scan: %s has %d selected columns, got %d destinations", ErrConfig, r.Table.QualifiedName(), len(r.names), len(dest))
	}
	var vs valueScanner
	defer vs.release()
	// Copies of text and json values share one buffer, sized for all of them.
	need := 0
	for i, col := range r.cols {
		if dest[i] == nil || r.raw[i] == nil {
			continue
		}
		if col == nil {
			need += len(r.raw[i]) // scanUnknownColumn copies its text
		} else if d := col.decoder(); d.kind == kindCodec && copiesInto(d, dest[i]) {
			need += len(r.raw[i])
		}
	}
	if need > 0 {
		vs.rb.buf = make([]byte, 0, need)
	}
	for i, dst := range dest {
		if dst == nil {
			continue
		}
		src, col := r.raw[i], r.cols[i]
		if col == nil {
			if err := scanUnknownColumn(r.names[i], src, dst, &vs.rb); err != nil {
				return fmt.Errorf("%s: %w", r.Table.QualifiedName(), err)
			}
			continue
		}
		if err := vs.scan(col, col.TypeOID, pgtype.TextFormatCode, src, src == nil, dst); err != nil {
			return fmt.Errorf("%s: %w", r.Table.QualifiedName(), err)
		}
	}
	return nil
}

// scanUnknownColumn scans a selected column that is not one of the table's: its text.
func scanUnknownColumn(name string, src []byte, dst any, rb *rowBuf) error {
	switch p := dst.(type) {
	case *any:
		if src == nil {
			*p = nil
		} else {
			*p = rb.string(src)
		}
		return nil
	case *string:
		if src != nil {
			*p = rb.string(src)
			return nil
		}
		return fmt.Errorf("%w: column %q is NULL; scan it into *any", ErrDecodeValue, name)
	}
	return fmt.Errorf("%w: column %q is not a column of the table: scan it into *any or *string, not %T", ErrConfig, name, dst)
}

// refreshRowHandler returns the MessageHandler as a RefreshRowHandler, if it is one.
func (s *Syncer) refreshRowHandler() (RefreshRowHandler, bool) {
	rh, ok := s.MessageHandler.(RefreshRowHandler)
	return rh, ok
}
