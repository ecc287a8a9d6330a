package dbsync

import (
	"database/sql"
	"fmt"
	"strings"
	"unsafe"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/lib/pq"
)

// SelectList returns a SELECT list that reads the given columns (all of t.Columns when
// none are given) in PostgreSQL's text output format, for ScanRow:
//
//	CASE WHEN pg_catalog.num_nulls("c") OPERATOR(pg_catalog.=) 1 THEN NULL ELSE pg_catalog.format('%s', "c") END AS "c", ...
//
// (the functions and the operator qualified with pg_catalog, so that a schema before it on the
// session's search_path cannot replace them). format('%s', …) calls the type's output function — the same text pgoutput sends —
// whereas a cast to text does not always (bool::text gives "true", inet::text always
// adds the netmask). num_nulls, not IS NULL, tells NULL apart: a composite value whose
// fields are all NULL IS NULL but is not a NULL datum. Identifiers are quoted; the result goes between SELECT and FROM
// of a query on the table, e.g.
//
//	"SELECT " + t.SelectList() + " FROM " + t.QuotedName() + " WHERE ..."
func (t *PGTableInfo) SelectList(columns ...string) string {
	if len(columns) == 0 {
		for _, c := range t.Columns {
			columns = append(columns, c.ColumnName)
		}
	}
	return selectList("", columns)
}

// selectList gives each column (of alias, when not "") in its type's text output form:
// format('%s', x) calls the type's output function, as pgoutput does (a ::text cast
// does not for every type: true::text is 'true', pgoutput sends 't'). NULL stays NULL;
// num_nulls, not IS NULL, detects it, as a composite whose fields are all NULL IS NULL
// but is a value.
func selectList(alias string, cols []string) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		ref := pq.QuoteIdentifier(c)
		if alias != "" {
			ref = pq.QuoteIdentifier(alias) + "." + ref
		}
		parts[i] = "CASE WHEN pg_catalog.num_nulls(" + ref + ") OPERATOR(pg_catalog.=) 1 THEN NULL ELSE pg_catalog.format('%s', " + ref + ") END AS " + pq.QuoteIdentifier(c)
	}
	return strings.Join(parts, ", ")
}

// textCastOIDs are built-in types whose cast to text is their output function (an
// I/O conversion cast, or binary-coercible to text), so "x::text" gives what
// format('%s', x) gives — and what pgoutput sends — at a fraction of the server's cost
// (about 1.4 instead of 1.9-2.6 µs per 6-column row in a 10,000-row chunk on the
// development machine). Not here: bool and inet/cidr (casts that format differently),
// char(n) (its cast strips trailing blanks), domains and every other type.
// TestTextCastMatchesOutput checks each on the server.
var textCastOIDs = map[uint32]bool{
	20: true, 21: true, 23: true, // int8, int2, int4
	25: true, 1043: true, // text, varchar
	26:   true, // oid
	700:  true, // float4
	701:  true, // float8
	1700: true, // numeric
	1082: true, // date
	1083: true, // time
	1114: true, // timestamp
	1184: true, // timestamptz
	1186: true, // interval
	2950: true, // uuid
	114:  true, // json
	3802: true, // jsonb
	17:   true, // bytea
}

// pqPlainOIDs are built-in types whose text results lib/pq hands to database/sql
// unchanged ([]byte or string of the text; lib/pq's textDecode) or as an int64 the
// reader prints back exactly (int2, int4, int8). Columns of the types it converts
// otherwise (bool, bytea, float4/8, date, time, timetz, timestamp, timestamptz) and of
// every type not listed (domains among them) are selected as text expressions.
var pqPlainOIDs = map[uint32]bool{
	20: true, 21: true, 23: true, // int8, int2, int4: int64
	25: true, 1043: true, 1042: true, 19: true, // text, varchar, bpchar, name
	26:   true, // oid
	1700: true, // numeric
	1186: true, // interval
	2950: true, // uuid
	114:  true, // json
	3802: true, // jsonb
	869:  true, // inet
	650:  true, // cidr
}

// columnList is the select list of columns of info's table (nil: types unknown) read
// through alias, each named as the column, in the given form:
//   - formPlain: every column as it is;
//   - formPQ: columns of the types in pqPlainOIDs as they are, the others as in
//     formText;
//   - formText: columns of the types in textCastOIDs cast to text directly (NULL stays
//     NULL for these scalar types), the others through selectList's format('%s', …).
func columnList(info *PGTableInfo, alias string, cols []string, form selectForm) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		var oid uint32 // 0: unknown (no info, or not one of its columns)
		if info != nil {
			if col := info.ColInfo[c]; col != nil {
				oid = col.TypeOID
			}
		}
		ref := pq.QuoteIdentifier(alias) + "." + pq.QuoteIdentifier(c)
		switch {
		case form == formPlain || (form == formPQ && pqPlainOIDs[oid]):
			parts[i] = ref + " AS " + pq.QuoteIdentifier(c)
		case textCastOIDs[oid]:
			parts[i] = ref + "::pg_catalog.text AS " + pq.QuoteIdentifier(c)
		default:
			parts[i] = selectList(alias, []string{c})
		}
	}
	return strings.Join(parts, ", ")
}

// QuotedName returns the table's quoted "schema"."table" for building queries.
func (t *PGTableInfo) QuotedName() string {
	return pq.QuoteIdentifier(t.Namespace) + "." + pq.QuoteIdentifier(t.TableName)
}

// ScanRow scans the current row of rows — a query whose columns are selected with
// SelectList (text output of the column's type, NULL as NULL) and named like t's
// columns — into the same typed values MessageToMap gives for that row in a change,
// so GetRecordID of the result matches the record ID of the row's changes. Call it
// after rows.Next() returned true. Works with any database/sql driver (lib/pq, pgx
// stdlib).
//
// The session must use PostgreSQL's default output settings (DateStyle ISO,
// IntervalStyle postgres, bytea_output hex, extra_float_digits 1 or more). Any
// TimeZone gives the same timestamptz values (instants, also in arrays and built-in
// ranges), but a value kept as its text (UnknownValue: a composite, a user-defined
// range) prints a timestamptz it holds in the session's TimeZone, where changes print
// it in UTC: for such columns, and keys, use TimeZone UTC (dbsync's own selections
// do). Errors: a column of rows that t does not describe (ErrConfig), ErrDecodeValue,
// or the driver's scan error.
func (t *PGTableInfo) ScanRow(rows *sql.Rows) (StringMap, error) {
	names, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	raw := make([]sql.RawBytes, len(names))
	if err := rows.Scan(textScanDest(raw)...); err != nil {
		return nil, err
	}
	return t.decodeTextRowRaw(names, raw, false)
}

// textCell is a Rows.Scan destination for one column selected in text form: it sets
// *dst to the value's bytes, nil for SQL NULL and a non-nil empty slice for an empty
// value. Scanning into *sql.RawBytes directly cannot tell the two apart: database/sql
// copies a driver's string value (lib/pq returns text as string) into its reused
// buffer with append, which gives nil for "" while that buffer is still empty (the
// first values of the first row).
type textCell struct{ dst *sql.RawBytes }

// Scan implements sql.Scanner. A []byte value is the driver's memory, valid until the
// next Next or Scan, like sql.RawBytes; a string value is referenced, not copied.
func (c textCell) Scan(src any) error {
	switch x := src.(type) {
	case nil:
		*c.dst = nil
	case []byte:
		if x == nil {
			x = []byte{}
		}
		*c.dst = x
	case string:
		if len(x) == 0 {
			*c.dst = sql.RawBytes{}
		} else {
			// Read only: decoders never write to their input, and every value
			// kept is copied (decodeTextRowRaw).
			*c.dst = unsafe.Slice(unsafe.StringData(x), len(x))
		}
	default:
		return fmt.Errorf("%w: a text-form column scanned as %T, want string or []byte: select it with SelectList", ErrConfig, src)
	}
	return nil
}

// textScanDest returns Rows.Scan destinations that fill raw[i] with column i's text
// form: nil for SQL NULL, non-nil (possibly empty) otherwise. raw then holds driver
// memory valid until the next Next or Scan; decode it before (decodeTextRowRaw copies
// what it keeps).
func textScanDest(raw []sql.RawBytes) []any {
	dest := make([]any, len(raw))
	for i := range raw {
		dest[i] = textCell{dst: &raw[i]}
	}
	return dest
}

// decodeTextRow decodes a row of columns selected in text form (selectList) and scanned
// into sql.NullString, exactly as decodeTextRowRaw does.
func (t *PGTableInfo) decodeTextRow(names []string, raw []sql.NullString, unknownAsText bool) (StringMap, error) {
	n := 0
	for _, r := range raw {
		n += len(r.String)
	}
	buf := make([]byte, 0, n)
	bs := make([]sql.RawBytes, len(raw))
	for i, r := range raw {
		if r.Valid {
			start := len(buf)
			buf = append(buf, r.String...)
			bs[i] = buf[start:len(buf):len(buf)]
		}
	}
	return t.decodeTextRowRaw(names, bs, unknownAsText)
}

// decodeTextRowRaw decodes a row of columns selected in text form (selectList) with the
// columns' decoders, exactly as MessageToMap decodes a change's text values: one
// pgtype.Map for the row, the text and json copies in one buffer (rowBuf). raw[i] is
// column names[i]'s text, nil for SQL NULL; its memory may be the driver's (reused at
// the next Rows.Next): every value kept is copied. Scan with textScanDest, not into
// *sql.RawBytes directly: that gives nil for some empty values. A column that is not
// the table's is an ErrConfig error, or kept as its text (a string) when unknownAsText
// (a refresh query may select expressions).
func (t *PGTableInfo) decodeTextRowRaw(names []string, raw []sql.RawBytes, unknownAsText bool) (StringMap, error) {
	if len(raw) != len(names) {
		return nil, fmt.Errorf("%w: %d values for %d columns", ErrConfig, len(raw), len(names))
	}
	var colsBuf [32]*PGColumnInfo
	cols := colsBuf[:0]
	for _, n := range names {
		cols = append(cols, t.ColInfo[n])
	}
	return t.decodeTextCols(names, cols, raw, unknownAsText)
}

// decodeTextCols is decodeTextRowRaw with the columns looked up: cols[i] describes
// names[i] (nil: not a column of t).
func (t *PGTableInfo) decodeTextCols(names []string, cols []*PGColumnInfo, raw []sql.RawBytes, unknownAsText bool) (StringMap, error) {
	need := 0
	for i, col := range cols {
		if raw[i] != nil && (col == nil || (col.dec != nil && col.dec.copies())) {
			need += len(raw[i])
		}
	}
	rb := newRowBuf(need)
	values := make(StringMap, len(names))
	var m *pgtype.Map
	defer func() {
		if m != nil {
			typeMaps.Put(m)
		}
	}()
	for i, n := range names {
		if raw[i] == nil {
			values[n] = nil
			continue
		}
		col := cols[i]
		if col == nil {
			if !unknownAsText {
				return nil, fmt.Errorf("%w: ScanRow: column %q is not a column of %s", ErrConfig, n, t.QualifiedName())
			}
			values[n] = rb.string(raw[i])
			continue
		}
		if m == nil {
			m = typeMaps.Get().(*pgtype.Map)
		}
		v, broken, err := col.decodeWith(m, pgtype.TextFormatCode, raw[i], rb)
		if broken {
			m = nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", t.QualifiedName(), n, err)
		}
		values[n] = v
	}
	return values, nil
}

// textRowDecoder turns selected rows of fixed columns into DBItems,
// with the columns looked up once.
type textRowDecoder struct {
	t      *PGTableInfo
	names  []string
	cols   []*PGColumnInfo
	keyIdx []int // position in names of each primary key column (-1: not selected)
}

// textRowDecoder returns a decoder for rows whose columns are names.
func (t *PGTableInfo) textRowDecoder(names []string) *textRowDecoder {
	d := &textRowDecoder{t: t, names: names, cols: make([]*PGColumnInfo, len(names)), keyIdx: make([]int, len(t.PrimaryKey))}
	for i, n := range names {
		d.cols[i] = t.ColInfo[n]
	}
	for i, k := range t.PrimaryKey {
		d.keyIdx[i] = indexOf(names, k)
	}
	return d
}

// keyItem is item without the values: the row's record ID from its key columns alone
// (decoded as item decodes them), for a RefreshRowHandler.
func (d *textRowDecoder) keyItem(raw []sql.RawBytes) (DBItem, error) {
	if len(raw) != len(d.names) {
		return DBItem{}, fmt.Errorf("%w: %d values for %d columns", ErrConfig, len(raw), len(d.names))
	}
	var buf [4]any
	keyVals := buf[:0]
	var m *pgtype.Map
	defer func() {
		if m != nil {
			typeMaps.Put(m)
		}
	}()
	for i, j := range d.keyIdx {
		if j < 0 || d.cols[j] == nil {
			return DBItem{}, fmt.Errorf("%w: key column %q of %s missing from the row", ErrNoKey, d.t.PrimaryKey[i], d.t.QualifiedName())
		}
		if raw[j] == nil {
			keyVals = append(keyVals, nil) // recordIDOfKeys says which column is NULL
			continue
		}
		if m == nil {
			m = typeMaps.Get().(*pgtype.Map)
		}
		v, broken, err := d.cols[j].decodeWith(m, pgtype.TextFormatCode, raw[j], nil)
		if broken {
			m = nil
		}
		if err != nil {
			return DBItem{}, fmt.Errorf("%s.%s: %w", d.t.QualifiedName(), d.names[j], err)
		}
		keyVals = append(keyVals, v)
	}
	key, err := d.t.recordIDOfKeys(keyVals)
	if err != nil {
		return DBItem{}, fmt.Errorf("%s: %w", d.t.QualifiedName(), err)
	}
	return DBItem{Table: d.t, Key: key}, nil
}

// item decodes one row — every column in PostgreSQL's text output form, the form
// pgoutput sends in changes (nil: NULL) — into a DBItem, decoding values the way
// MessageToMap decodes a change's tuple (shared with ScanRow) so record IDs match
// between refresh rows and changes.
func (d *textRowDecoder) item(raw []sql.RawBytes) (DBItem, error) {
	if len(raw) != len(d.names) {
		return DBItem{}, fmt.Errorf("%w: %d values for %d columns", ErrConfig, len(raw), len(d.names))
	}
	values, err := d.t.decodeTextCols(d.names, d.cols, raw, true)
	if err != nil {
		return DBItem{}, err
	}
	key, err := d.t.GetRecordID(values)
	if err != nil {
		return DBItem{}, fmt.Errorf("%s: %w", d.t.QualifiedName(), err)
	}
	return DBItem{Table: d.t, Key: key, Values: values}, nil
}
