package dbsync

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
)

// ScanTuple decodes the columns of a tuple — the new row of an INSERT or UPDATE, or
// the old row of an UPDATE or DELETE — into dest, one destination per column of reln
// in column order, like database/sql's Rows.Scan. It is the typed, allocation-light
// alternative to MessageToMap / DecodeChange for handlers that know their tables'
// columns: no map, and for the common types no boxing.
//
// Destinations:
//   - nil skips the column;
//   - *any receives exactly the value MessageToMap gives (docs/VALUES.md);
//   - *string (text, varchar, char, name), *int64 / *int32 / *int16 (integer types
//     that fit), *bool, *time.Time (timestamptz: the instant, in UTC), *pgtype.Numeric
//     (numeric), *json.RawMessage (json, jsonb; a copy, checked to be valid JSON), and
//     *float64 / *float32 / *[]byte / any other type MessageToMap gives for the column
//     (*UnknownValue, *pgtype.Range[any], *pgtype.Array[any], ...): the same value as
//     MessageToMap, without the map;
//   - anything else pgx's pgtype can scan the column's type into (e.g. *string for a
//     uuid, sql.NullInt64, *pgtype.Text, **int64 for a nullable column): pgtype's
//     Map.Scan with the column's type OID (a domain's base type; for an array of a
//     domain, or a domain over an array, the built-in array of the base type) and
//     the tuple's format.
//
// A timestamptz comes in UTC into every destination, as MessageToMap gives it: into
// *time.Time, *sql.NullTime, **time.Time, *pgtype.Timestamptz, and as the elements
// and bounds of a timestamptz[], tstzrange or tstzmultirange (also of a domain over
// timestamptz) scanned into []time.Time, pgtype.FlatArray[time.Time],
// pgtype.Range[time.Time], pgtype.Multirange[pgtype.Range[time.Time]], ... (pgx's own
// scans give time.Local). The session's TimeZone and the process's time.Local never
// show. timestamp and date keep their wall clock, in UTC (pgx's location for them).
//
// A numeric keeps its scale (Exp = -scale, as MessageToMap gives it) into every
// destination: *pgtype.Numeric, **pgtype.Numeric, and as the elements and bounds of a
// numeric[], numrange or nummultirange (also of a domain over numeric) scanned into
// []pgtype.Numeric, pgtype.FlatArray[pgtype.Numeric], pgtype.Range[pgtype.Numeric],
// ...; into *string, []string, *pgtype.Text or *sql.NullString it is PostgreSQL's
// text in both formats (pgx's own scans give 100 as 1e2 and binary 0.00 as 0e0, text
// "0"). A sql.Scanner of a pgtype.Numeric (sql.Null[pgtype.Numeric]) gets pgx's
// parse of the text, without the scale: scan into **pgtype.Numeric instead.
//
// NULL ('n') scans as nil into *any and through pgtype otherwise, which fails for a
// destination that cannot hold NULL (use a pointer-to-pointer or a sql.Null type).
// A column whose value was not sent — an unchanged TOASTed value ('u') — leaves its
// destination untouched: every other column is still scanned, and the error wraps
// ErrUnchangedTOAST naming those columns (keep their previous values; never store the
// destination's zero value). That includes a key column stored out of line that the
// update left unchanged: PostgreSQL then also sends the old key (UpdateMessage.OldTuple,
// 'K'), which holds its value; scan the key from there (DecodeChange fills it in from
// there, Change.Filled). For a 'K' old tuple (REPLICA IDENTITY DEFAULT/INDEX) only the
// key columns are sent; pass nil for the others.
//
// The copies of a tuple's text values (into *string) and json documents (into
// *json.RawMessage) share one allocation, as MessageToMap's do: a value kept retains
// the row's other copies (at most the row's size) until it is dropped.
//
// Errors: ErrConfig (len(dest) is not the number of columns), ErrMalformedMessage,
// ErrDecodeValue (the value does not decode into the destination), ErrUnchangedTOAST.
func (t *PGTableInfo) ScanTuple(reln *pglogrepl.RelationMessage, tuple *pglogrepl.TupleData, dest ...any) error {
	if reln == nil || tuple == nil {
		return fmt.Errorf("%w: ScanTuple needs a RELATION message and a tuple", ErrMalformedMessage)
	}
	if len(tuple.Columns) != len(reln.Columns) {
		return fmt.Errorf("%w: tuple has %d columns, relation %s.%s has %d", ErrMalformedMessage, len(tuple.Columns), reln.Namespace, reln.RelationName, len(reln.Columns))
	}
	if len(dest) != len(reln.Columns) {
		return fmt.Errorf("%w: ScanTuple: %s.%s has %d columns, got %d destinations", ErrConfig, reln.Namespace, reln.RelationName, len(reln.Columns), len(dest))
	}
	cols := t.columnsFor(reln)
	var vs valueScanner
	defer vs.release()
	var unchanged []string
	// The copies of text and json values go into one buffer (rowBuf), made when the
	// first of them is scanned and sized for it and every later one.
	rbMade := false
	for i, tc := range tuple.Columns {
		dst := dest[i]
		if dst == nil {
			continue
		}
		var format int16
		var src []byte
		switch tc.DataType {
		case pglogrepl.TupleDataTypeToast:
			unchanged = append(unchanged, reln.Columns[i].Name)
			continue
		case pglogrepl.TupleDataTypeNull:
		case pglogrepl.TupleDataTypeText:
			format, src = pgtype.TextFormatCode, tc.Data
		case pglogrepl.TupleDataTypeBinary:
			format, src = pgtype.BinaryFormatCode, tc.Data
		default:
			return fmt.Errorf("%w: column %q has tuple kind %q", ErrMalformedMessage, reln.Columns[i].Name, tc.DataType)
		}
		null := tc.DataType == pglogrepl.TupleDataTypeNull
		if !rbMade && !null {
			if d := cols[i].decoder(); d.kind == kindCodec && d.copies() && copiesInto(d, dst) {
				vs.rb.buf, rbMade = make([]byte, 0, scanCopyNeed(cols[i:], tuple.Columns[i:], dest[i:])), true
			}
		}
		if err := vs.scan(cols[i], reln.Columns[i].DataType, format, src, null, dst); err != nil {
			return fmt.Errorf("%s.%s: %w", reln.Namespace, reln.RelationName, err)
		}
	}
	if len(unchanged) > 0 {
		return fmt.Errorf("%w: %s.%s columns %v were not sent (unchanged TOAST); keep their previous values", ErrUnchangedTOAST, reln.Namespace, reln.RelationName, unchanged)
	}
	return nil
}

// valueScanner scans the values of one row into their destinations, the part
// ScanTuple and RefreshRow.Scan share: NULL into *any, scanFast's typed fast paths
// (copies of strings and json documents taken from rb), and pgx's pgtype for the rest
// with one pooled Map per row (release returns it).
type valueScanner struct {
	m  *pgtype.Map
	rb rowBuf
}

// scan scans one value of column c (type relOID; null: SQL NULL, src unused) into dst.
func (v *valueScanner) scan(c *PGColumnInfo, relOID uint32, format int16, src []byte, null bool, dst any) error {
	if null {
		if p, ok := dst.(*any); ok {
			*p = nil
			return nil
		}
	} else if d := c.decoder(); d.kind == kindCodec && scanFast(d, format, src, dst, &v.rb) {
		return nil
	}
	if v.m == nil {
		v.m = typeMaps.Get().(*pgtype.Map)
	}
	broken, err := scanColumn(v.m, c, relOID, format, src, null, dst)
	if broken {
		v.m = nil
	}
	return err
}

// release returns the pooled Map, if one was taken.
func (v *valueScanner) release() {
	if v.m != nil {
		typeMaps.Put(v.m)
		v.m = nil
	}
}

// scanColumn scans one value (null: SQL NULL, src unused) of column c into dst when
// scanFast did not apply. broken reports that a decoder panicked and m must not be
// reused.
func scanColumn(m *pgtype.Map, c *PGColumnInfo, relOID uint32, format int16, src []byte, null bool, dst any) (broken bool, err error) {
	d := c.decoder()
	if !null {
		// The value MessageToMap gives, when dst can hold it. It is decoded only for
		// destination types a MessageToMap value can have; other destinations (and
		// one of those types that is not this column's, e.g. *string for an int)
		// go to pgtype below.
		decode := func() (any, error) {
			v, b, err := c.decodeWith(m, format, src, nil)
			broken = b
			return v, err
		}
		if done, err := assignDecoded(dst, decode); done || err != nil {
			return broken, err
		}
	}
	oid := relOID
	switch {
	case d.kind == kindCodec:
		oid = d.oid // a domain scans as its base type
	case d.kind == kindArray && d.scanOID != 0:
		oid = d.scanOID // an array of a domain, or a domain over an array, as its base array
	}
	defer func() {
		if r := recover(); r != nil {
			broken, err = true, fmt.Errorf("%w: column %q (%s) into %T: %v", ErrDecodeValue, c.ColumnName, d.name, dst, r)
		}
	}()
	if null {
		src = nil
	}
	if err := m.Scan(oid, format, src, dst); err != nil {
		// A NULL has no format (the tuple's 'n', a selection's NULL): say NULL.
		how := formatName(format) + " format"
		if null {
			how = "NULL"
		}
		return false, fmt.Errorf("%w: column %q (%s, %s) into %T: %v", ErrDecodeValue, c.ColumnName, d.name, how, dst, err)
	}
	return false, nil
}

// copiesInto reports whether scanFast keeps a copy of a value of d (a type whose
// values d.copies()) in dst: a string or a json.RawMessage.
func copiesInto(d *decodeInfo, dst any) bool {
	switch dst.(type) {
	case *string:
		return d.fast == fastText
	case *json.RawMessage:
		return d.fast == fastJSON || d.fast == fastJSONB
	}
	return false
}

// scanCopyNeed is the room scanFast needs for the copies of the values of a tuple's
// columns (from the first one given on) into their destinations.
func scanCopyNeed(cols []*PGColumnInfo, tcs []*pglogrepl.TupleDataColumn, dest []any) int {
	need := 0
	for i, tc := range tcs {
		if i >= len(cols) || i >= len(dest) {
			break
		}
		if tc.DataType != pglogrepl.TupleDataTypeText && tc.DataType != pglogrepl.TupleDataTypeBinary {
			continue
		}
		if d := cols[i].decoder(); d.kind == kindCodec && copiesInto(d, dest[i]) {
			need += len(tc.Data)
		}
	}
	return need
}

// scanFast scans the common types straight into their Go types, with the same fast
// paths (and so the same values) as decodeFast. It reports false when it does not
// apply. Copies of strings and json documents are taken from rb when it has room
// (rb may be nil).
func scanFast(d *decodeInfo, format int16, src []byte, dst any, rb *rowBuf) bool {
	text := format == pgtype.TextFormatCode
	switch p := dst.(type) {
	case *string:
		if d.fast == fastText {
			*p = rb.string(src)
			return true
		}
	case *int64:
		if d.fast == fastInt8 || d.fast == fastInt4 || d.fast == fastInt2 {
			return scanInt(p, d.fast, text, src)
		}
	case *int32:
		if d.fast == fastInt4 || d.fast == fastInt2 {
			return scanInt(p, d.fast, text, src)
		}
	case *int16:
		if d.fast == fastInt2 {
			return scanInt(p, d.fast, text, src)
		}
	case *bool:
		if d.fast == fastBool && len(src) == 1 {
			switch {
			case text && src[0] == 't', !text && src[0] == 1:
				*p = true
				return true
			case text && src[0] == 'f', !text && src[0] == 0:
				*p = false
				return true
			}
		}
	case *time.Time:
		if d.fast == fastTimestamptz && text {
			if t, ok := parseISOTimestamptz(src); ok {
				*p = t
				return true
			}
		}
	case *pgtype.Numeric:
		if d.fast == fastNumeric && text {
			if n, ok := parsePlainNumeric(src); ok {
				*p = n
				return true
			}
		}
	case *json.RawMessage:
		if d.fast == fastJSON || d.fast == fastJSONB {
			if raw, err := rawJSON(d.fast == fastJSONB, format, src, rb); err == nil {
				*p = raw
				return true
			}
		}
	}
	return false
}

// columnInt parses a value of an integer column of kind (fastInt2, fastInt4,
// fastInt8): decimal text of at most 18 digits in the type's range, or the type's
// big-endian binary form of exactly its width (2, 4 or 8 bytes). It reports false for
// anything else, which pgtype decodes or rejects: an int4 column's 2-byte or 8-byte
// binary value, or an int2 column's text 40000, is an error there, not a number.
func columnInt(kind fastKind, text bool, src []byte) (int64, bool) {
	if text {
		n, ok := parseDecimalInt(src)
		switch {
		case !ok:
			return 0, false
		case kind == fastInt2:
			return n, n >= -1<<15 && n < 1<<15
		case kind == fastInt4:
			return n, n >= -1<<31 && n < 1<<31
		}
		return n, true
	}
	switch {
	case kind == fastInt2 && len(src) == 2:
		return int64(int16(binary.BigEndian.Uint16(src))), true
	case kind == fastInt4 && len(src) == 4:
		return int64(int32(binary.BigEndian.Uint32(src))), true
	case kind == fastInt8 && len(src) == 8:
		return int64(binary.BigEndian.Uint64(src)), true
	}
	return 0, false
}

// scanInt parses a value of an integer column of kind (columnInt) into *p when it
// fits T; it reports false (the caller falls back to pgtype, which reports the error)
// otherwise.
func scanInt[T int16 | int32 | int64](p *T, kind fastKind, text bool, src []byte) bool {
	n, ok := columnInt(kind, text, src)
	if !ok || int64(T(n)) != n {
		return false
	}
	*p = T(n)
	return true
}

// assignDecoded stores the value decode gives in *dst when dst is *any or points to a
// variable of that value's Go type; it reports whether it did. decode runs only for
// destination types a MessageToMap value can have.
func assignDecoded(dst any, decode func() (any, error)) (bool, error) {
	switch p := dst.(type) {
	case *any:
		v, err := decode()
		if err == nil {
			*p = v
		}
		return true, err
	case *string:
		return setDecoded(p, decode)
	case *int64:
		return setDecoded(p, decode)
	case *int32:
		return setDecoded(p, decode)
	case *int16:
		return setDecoded(p, decode)
	case *bool:
		return setDecoded(p, decode)
	case *float64:
		return setDecoded(p, decode)
	case *float32:
		return setDecoded(p, decode)
	case *time.Time:
		return setDecoded(p, decode)
	case *pgtype.Numeric:
		return setDecoded(p, decode)
	case *json.RawMessage:
		return setDecoded(p, decode)
	case *[]byte:
		return setDecoded(p, decode)
	case *[]any:
		return setDecoded(p, decode)
	// Go types of other columns' values: pgtype's own scans fail for these
	// (UnknownValue, an infinite date's modifier, a domain over an array with an
	// offset bound) or decode them otherwise (range bounds as time.Local instants).
	case *UnknownValue:
		return setDecoded(p, decode)
	case *pgtype.InfinityModifier:
		return setDecoded(p, decode)
	case *pgtype.Array[any]:
		return setDecoded(p, decode)
	case *pgtype.Range[any]:
		return setDecoded(p, decode)
	case *pgtype.Multirange[pgtype.Range[any]]:
		return setDecoded(p, decode)
	}
	return false, nil
}

// setDecoded stores the decoded value in *p if it is a T.
func setDecoded[T any](p *T, decode func() (any, error)) (bool, error) {
	v, err := decode()
	if err != nil {
		return false, err
	}
	x, ok := v.(T)
	if ok {
		*p = x
	}
	return ok, nil
}
