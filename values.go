package dbsync

import (
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
)

// Value decoding: every column value of a change (pgoutput tuple kinds 't' and 'b') or of
// a SELECT read through ScanRow is turned into a typed Go value by pgx's pgtype codecs,
// chosen by the column's type OID. docs/VALUES.md has the full PostgreSQL -> Go table.
//
// The codecs are pgx's defaults with four deliberate differences, all for fidelity:
//   - json and jsonb decode to json.RawMessage (the exact text PostgreSQL holds; pgx
//     would unmarshal into map[string]any and round numbers through float64);
//   - numeric values have Exp = -scale (0.00 is 0e-2, 100 is 100e0, 1.50 is 150e-2) in
//     both formats, also as array elements and range bounds, and so in every pgtype
//     destination a Scan fills (pgtype.Numeric, []pgtype.Numeric,
//     pgtype.Range[pgtype.Numeric], ...; in binary format *string gets the text);
//   - timestamptz decodes to a time.Time in UTC (the instant; the session's TimeZone
//     is presentation only);
//   - arrays decode to nested []any, one level per dimension, NULL elements as nil
//     (pgx would flatten multi-dimensional arrays). An array whose lower bound is not 1
//     decodes to pgtype.Array[any], which keeps the bounds.
//
// Domains decode as their base type, enums as string. Types without a codec (composite
// types, user-defined base types, and the few built-ins pgx has no codec for, such as
// money or tsvector) decode to UnknownValue: the type's name and its text (or binary)
// form, never a guess.

// UnknownValue is a value of a type dbsync has no codec for: composite types,
// user-defined base types and ranges, and built-in types pgtype does not know (money,
// tsvector, pg_lsn, ...). Exactly one of Text (text format: the type's output function,
// e.g. `(1,"a b")` for a composite) and Binary (binary format: the type's send function)
// is set: Text in text format, Binary (non-nil, also when empty) in binary format.
type UnknownValue struct {
	// Type is the type's name as format_type gives it (e.g. "address", "money"), or
	// "oid N" when the type is no longer in the catalog.
	Type   string
	Text   string
	Binary []byte
}

// String returns the text form (or a hex dump of the binary form).
func (u UnknownValue) String() string {
	if u.Binary != nil {
		return fmt.Sprintf("%s:\\x%x", u.Type, u.Binary)
	}
	return u.Text
}

// decodeKind says how a column's values are decoded.
type decodeKind uint8

const (
	kindCodec   decodeKind = iota // pgtype codec registered for oid
	kindEnum                      // enum label: string in both formats
	kindArray                     // array: elements decoded with elem
	kindUnknown                   // no codec: UnknownValue
)

// decodeInfo is the resolved decoding of one type OID (domains resolved to their base).
type decodeInfo struct {
	kind decodeKind
	// oid is the OID decoded as: the type itself, or a domain's base type.
	oid uint32
	// name is the column type's name (format_type), for UnknownValue and errors.
	name string
	// elem describes array elements (kindArray).
	elem *decodeInfo
	// elemOID is the array's element type OID as PostgreSQL declares it (kindArray).
	elemOID uint32
	// rawArray reads the array's elements undecoded, split at the element type's
	// typdelim (kindArray).
	rawArray *pgtype.ArrayCodec
	// scanOID is the array type pgtype scans a value with into a destination that is
	// not a MessageToMap type (kindArray; 0: none): the array itself when pgtype knows
	// it (also for a domain over it), or the built-in array of the element's base type
	// for an array of a domain. pgtype does not know the column's own OID there and
	// would guess a type from the destination with pgx's defaults (timestamptz in
	// time.Local, numeric without its scale) or fail.
	scanOID uint32
	// codec is pgtype's codec for oid (kindCodec), looked up once: codecs hold no
	// per-Map state, the Map passed to DecodeValue does.
	codec pgtype.Codec
	// tstzPlans are timestamptz's scan plans into *pgtype.Timestamptz for the text and
	// binary formats, made once: pgx's DecodeValue makes a new plan for every value.
	tstzPlans [2]pgtype.ScanPlan
	// fast is the type's fast path (values_fast.go), tried before the codec.
	fast fastKind
}

// refTypes answers "does pgtype have a codec for this OID" without decoding; it is
// never written after init, so concurrent reads are safe.
var refTypes = newTypeMap()

// typeMaps holds pgtype.Maps for decoding: a Map memoizes scan plans and is not safe for
// concurrent use, so each decode borrows one.
var typeMaps = sync.Pool{New: func() any { return newTypeMap() }}

// newTypeMap returns pgx's default map with json/jsonb (and their arrays) decoding to
// json.RawMessage.
func newTypeMap() *pgtype.Map {
	m := pgtype.NewMap()
	jsonT := &pgtype.Type{Name: "json", OID: pgtype.JSONOID, Codec: rawJSONCodec{Codec: &pgtype.JSONCodec{Marshal: json.Marshal, Unmarshal: json.Unmarshal}}}
	jsonbT := &pgtype.Type{Name: "jsonb", OID: pgtype.JSONBOID, Codec: rawJSONCodec{Codec: &pgtype.JSONBCodec{Marshal: json.Marshal, Unmarshal: json.Unmarshal}, jsonb: true}}
	m.RegisterType(jsonT)
	m.RegisterType(jsonbT)
	m.RegisterType(&pgtype.Type{Name: "_json", OID: pgtype.JSONArrayOID, Codec: &pgtype.ArrayCodec{ElementType: jsonT}})
	m.RegisterType(&pgtype.Type{Name: "_jsonb", OID: pgtype.JSONBArrayOID, Codec: &pgtype.ArrayCodec{ElementType: jsonbT}})
	// Range bounds are scanned through the Map, so numrange picks this up by OID.
	numT := &pgtype.Type{Name: "numeric", OID: pgtype.NumericOID, Codec: scaledNumericCodec{}}
	m.RegisterType(numT)
	m.RegisterType(&pgtype.Type{Name: "_numeric", OID: pgtype.NumericArrayOID, Codec: &pgtype.ArrayCodec{ElementType: numT}})
	// The array, range and multirange types hold their element type: registered again
	// with numT so scans into []pgtype.Numeric, pgtype.Range[pgtype.Numeric], ... keep
	// the scale as MessageToMap's values do.
	numRangeT := &pgtype.Type{Name: "numrange", OID: pgtype.NumrangeOID, Codec: &pgtype.RangeCodec{ElementType: numT}}
	numMultiT := &pgtype.Type{Name: "nummultirange", OID: pgtype.NummultirangeOID, Codec: &pgtype.MultirangeCodec{ElementType: numRangeT}}
	m.RegisterType(numRangeT)
	m.RegisterType(numMultiT)
	m.RegisterType(&pgtype.Type{Name: "_numrange", OID: pgtype.NumrangeArrayOID, Codec: &pgtype.ArrayCodec{ElementType: numRangeT}})
	// timestamptz scans in UTC into every destination pgtype fills — time.Time,
	// pgtype.Timestamptz, sql.NullTime, and as the elements of arrays and the bounds
	// of ranges and multiranges ([]time.Time, pgtype.Range[time.Time], ...) — as
	// MessageToMap gives it: pgx's codec gives time.Local. The array, range and
	// multirange types hold their element type, so they are registered again with it.
	tstzT := &pgtype.Type{Name: "timestamptz", OID: pgtype.TimestamptzOID, Codec: &pgtype.TimestamptzCodec{ScanLocation: time.UTC}}
	tstzRangeT := &pgtype.Type{Name: "tstzrange", OID: pgtype.TstzrangeOID, Codec: &pgtype.RangeCodec{ElementType: tstzT}}
	tstzMultiT := &pgtype.Type{Name: "tstzmultirange", OID: pgtype.TstzmultirangeOID, Codec: &pgtype.MultirangeCodec{ElementType: tstzRangeT}}
	m.RegisterType(tstzT)
	m.RegisterType(tstzRangeT)
	m.RegisterType(tstzMultiT)
	m.RegisterType(&pgtype.Type{Name: "_timestamptz", OID: pgtype.TimestamptzArrayOID, Codec: &pgtype.ArrayCodec{ElementType: tstzT}})
	m.RegisterType(&pgtype.Type{Name: "_tstzrange", OID: pgtype.TstzrangeArrayOID, Codec: &pgtype.ArrayCodec{ElementType: tstzRangeT}})
	return m
}

// scaledNumericCodec is pgx's numeric codec except that every finite value has
// Exp = -scale, PostgreSQL's display scale (the digits after the point): pgx decodes
// binary 0.00 as 0e0 (text: 0e-2) and 100 as 1e2 in both formats.
type scaledNumericCodec struct{ pgtype.NumericCodec }

func (c scaledNumericCodec) DecodeValue(m *pgtype.Map, oid uint32, format int16, src []byte) (any, error) {
	if format == pgtype.TextFormatCode {
		if n, ok := parsePlainNumeric(src); ok {
			return n, nil
		}
	}
	return c.decodeValuePgx(m, oid, format, src)
}

// decodeValuePgx decodes with pgx's NumericCodec and rescales; parsePlainNumeric is
// a shortcut for the common text case that must give identical values
// (TestNumericFastPathMatchesPgx).
func (c scaledNumericCodec) decodeValuePgx(m *pgtype.Map, oid uint32, format int16, src []byte) (any, error) {
	v, err := c.NumericCodec.DecodeValue(m, oid, format, src)
	if err != nil || v == nil {
		return v, err
	}
	n, ok := v.(pgtype.Numeric)
	if !ok || !n.Valid || n.NaN || n.InfinityModifier != pgtype.Finite || n.Int == nil {
		return v, nil
	}
	if format == pgtype.BinaryFormatCode {
		n = numericScale(n, src)
	}
	if n.Exp > 0 {
		// pgx parses text "100" as 1e2; PostgreSQL's scale is 0.
		n.Int = new(big.Int).Mul(n.Int, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n.Exp)), nil))
		n.Exp = 0
	}
	return n, nil
}

// parsePlainNumeric parses numeric text of the form -?digits(.digits)? with at most 18
// digits in all (what PostgreSQL's numeric output gives for most values) into Int x
// 10^Exp with Exp = -(digits after the point), as pgx's parser followed by the rescaling
// in DecodeValue would. ok is false for anything else (NaN, Infinity, longer values,
// malformed text), which then goes through pgx.
func parsePlainNumeric(src []byte) (n pgtype.Numeric, ok bool) {
	i := 0
	neg := len(src) > 0 && src[0] == '-'
	if neg {
		i = 1
	}
	var x int64
	digits, point := 0, -1
	for ; i < len(src); i++ {
		c := src[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			if digits > 18 {
				return n, false
			}
			x = x*10 + int64(c-'0')
		case c == '.' && point < 0 && digits > 0:
			point = digits
		default:
			return n, false
		}
	}
	if digits == 0 || point == digits {
		return n, false
	}
	exp := int32(0)
	if point >= 0 {
		exp = -int32(digits - point)
	}
	if neg {
		x = -x
	}
	return pgtype.Numeric{Int: newSmallInt(x), Exp: exp, Valid: true}, true
}

// PlanScan makes scans into *any (array elements, range bounds) use DecodeValue, and
// scans into a pgtype.NumericScanner (*pgtype.Numeric, also as an array element or a
// range bound, or behind pointers) and, in binary format, into a pgtype.TextScanner
// (*string, *pgtype.Text) take DecodeValue's value, so they keep the scale too: pgx's
// plans give 100 as 1e2 and binary 0.00 as 0e0 (text "0").
func (c scaledNumericCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	switch target.(type) {
	case *any:
		return decodeValueScanPlan{codec: c, m: m, oid: oid, format: format}
	case pgtype.NumericScanner:
		return scaledNumericScanPlan{codec: c, m: m, oid: oid, format: format}
	case pgtype.TextScanner:
		if format == pgtype.BinaryFormatCode {
			return scaledNumericScanPlan{codec: c, m: m, oid: oid, format: format, text: true}
		}
	}
	return c.NumericCodec.PlanScan(m, oid, format, target)
}

// DecodeDatabaseSQLValue gives the value a sql.Scanner destination (sql.NullString,
// sql.Null[string], ...) receives: PostgreSQL's text, also in binary format, where
// pgx's would print the value it decoded without the scale (0.00 as "0").
func (c scaledNumericCodec) DecodeDatabaseSQLValue(m *pgtype.Map, oid uint32, format int16, src []byte) (driver.Value, error) {
	if src == nil || format == pgtype.TextFormatCode {
		return c.NumericCodec.DecodeDatabaseSQLValue(m, oid, format, src)
	}
	var t pgtype.Text
	if err := (scaledNumericScanPlan{codec: c, m: m, oid: oid, format: format, text: true}).Scan(src, &t); err != nil {
		return nil, err
	}
	return t.String, nil
}

// scaledNumericScanPlan scans a numeric into a pgtype.NumericScanner, or (text) as its
// text into a pgtype.TextScanner, with the scale DecodeValue keeps.
type scaledNumericScanPlan struct {
	codec  scaledNumericCodec
	m      *pgtype.Map
	oid    uint32
	format int16
	text   bool
}

func (p scaledNumericScanPlan) Scan(src []byte, dst any) error {
	var n pgtype.Numeric
	if src != nil {
		// DecodeValue's value, without boxing it for the common text case.
		ok := false
		if p.format == pgtype.TextFormatCode {
			n, ok = parsePlainNumeric(src)
		}
		if !ok {
			v, err := p.codec.decodeValuePgx(p.m, p.oid, p.format, src)
			if err != nil {
				return err
			}
			n = v.(pgtype.Numeric)
		}
	}
	if !p.text {
		return dst.(pgtype.NumericScanner).ScanNumeric(n)
	}
	if !n.Valid {
		return dst.(pgtype.TextScanner).ScanText(pgtype.Text{})
	}
	s, err := n.Value()
	if err != nil {
		return err
	}
	return dst.(pgtype.TextScanner).ScanText(pgtype.Text{String: s.(string), Valid: true})
}

// decodeValueScanPlan scans into *any with a codec's DecodeValue.
type decodeValueScanPlan struct {
	codec  pgtype.Codec
	m      *pgtype.Map
	oid    uint32
	format int16
}

func (p decodeValueScanPlan) Scan(src []byte, dst any) error {
	v, err := p.codec.DecodeValue(p.m, p.oid, p.format, src)
	if err != nil {
		return err
	}
	*(dst.(*any)) = v
	return nil
}

// rawJSONCodec is pgx's json/jsonb codec except that DecodeValue returns the document's
// exact bytes as json.RawMessage.
type rawJSONCodec struct {
	pgtype.Codec
	jsonb bool
}

// PlanScan makes scans into *any (array elements) go through DecodeValue too.
func (c rawJSONCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	if _, ok := target.(*any); ok {
		return decodeValueScanPlan{codec: c, m: m, oid: oid, format: format}
	}
	return c.Codec.PlanScan(m, oid, format, target)
}

func (c rawJSONCodec) DecodeValue(_ *pgtype.Map, _ uint32, format int16, src []byte) (any, error) {
	if src == nil {
		return nil, nil
	}
	return decodeRawJSON(c.jsonb, format, src, nil)
}

// decodeRawJSON returns a copy of a json or jsonb document (taken from rb when there is
// room) as json.RawMessage, after checking it is valid JSON.
func decodeRawJSON(jsonb bool, format int16, src []byte, rb *rowBuf) (any, error) {
	v, err := rawJSON(jsonb, format, src, rb)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// rawJSON is decodeRawJSON without the interface.
func rawJSON(jsonb bool, format int16, src []byte, rb *rowBuf) (json.RawMessage, error) {
	if jsonb && format == pgtype.BinaryFormatCode {
		if len(src) == 0 || src[0] != 1 {
			return nil, errors.New("jsonb binary value without version 1 header")
		}
		src = src[1:]
	}
	if !validJSON(src) {
		return nil, errors.New("invalid JSON document")
	}
	return json.RawMessage(rb.bytes(src)), nil
}

// baseArrayOID is the OID of pgtype's array type whose elements are elem's type (a
// domain's base type, as resolved) with delimiter delim (0: ','), or 0 when there is
// none: the type an array of a domain scans as.
func baseArrayOID(elem *decodeInfo, delim byte) uint32 {
	if elem.kind != kindCodec {
		return 0
	}
	if delim == 0 {
		delim = ','
	}
	t, ok := refTypes.TypeForName("_" + elem.name)
	if !ok {
		return 0
	}
	ac, ok := t.Codec.(*pgtype.ArrayCodec)
	if !ok || ac.ElementType.OID != elem.oid {
		return 0
	}
	if d := ac.Delimiter; d == delim || (d == 0 && delim == ',') {
		return t.OID
	}
	return 0
}

// resolveDecode resolves how values of type oid decode. types gives catalog rows for
// OIDs pgtype does not know (domains, enums, arrays of those, composites); it may be nil.
func resolveDecode(oid uint32, types map[uint32]pgType) *decodeInfo {
	return resolveDecodeDepth(oid, types, 0)
}

// decodedAsUnknown are built-in types pgx's default map has codecs for whose Go values
// would not be what docs/VALUES.md promises: xml decodes to []byte (bytea's Go type,
// which JSONValue renders as hex), tsvector to pgtype.TSVector (which pgx prints
// escaping a quote with a backslash where PostgreSQL doubles it). They decode to
// UnknownValue, as the built-ins pgx has no codec for do
// (TestXMLAndTSVectorAreUnknownValues).
var decodedAsUnknown = map[uint32]bool{pgtype.XMLOID: true, pgtype.TSVectorOID: true}

func resolveDecodeDepth(oid uint32, types map[uint32]pgType, depth int) *decodeInfo {
	if decodedAsUnknown[oid] {
		t, _ := refTypes.TypeForOID(oid)
		return &decodeInfo{kind: kindUnknown, oid: oid, name: t.Name}
	}
	if t, ok := refTypes.TypeForOID(oid); ok {
		if ac, ok := t.Codec.(*pgtype.ArrayCodec); ok {
			return &decodeInfo{kind: kindArray, oid: oid, name: t.Name, elemOID: ac.ElementType.OID,
				elem: resolveDecodeDepth(ac.ElementType.OID, types, depth+1), rawArray: rawArrayCodec(ac.Delimiter), scanOID: oid}
		}
		d := &decodeInfo{kind: kindCodec, oid: oid, name: t.Name, codec: t.Codec, fast: fastKindFor(oid, t.Codec)}
		if c, ok := t.Codec.(*pgtype.TimestamptzCodec); ok && oid == pgtype.TimestamptzOID {
			for f := range d.tstzPlans {
				d.tstzPlans[f] = c.PlanScan(refTypes, oid, int16(f), &pgtype.Timestamptz{})
			}
		}
		return d
	}
	row, ok := types[oid]
	if !ok || depth > 16 {
		return &decodeInfo{kind: kindUnknown, oid: oid, name: "oid " + strconv.FormatUint(uint64(oid), 10)}
	}
	switch {
	case row.typtype == 'd':
		base := resolveDecodeDepth(row.baseType, types, depth+1)
		if base.kind == kindUnknown {
			return &decodeInfo{kind: kindUnknown, oid: oid, name: row.name}
		}
		return base
	case row.typtype == 'e':
		return &decodeInfo{kind: kindEnum, oid: oid, name: row.name}
	case row.category == 'A' && row.elemType != 0 && row.arrayIn:
		// The element type's typdelim: a domain has its base type's (box: ';'), a
		// user-defined base type its own. (Arrays of built-in types are known to
		// pgtype, above.)
		delim := types[row.elemType].delim
		elem := resolveDecodeDepth(row.elemType, types, depth+1)
		return &decodeInfo{kind: kindArray, oid: oid, name: row.name, elemOID: row.elemType,
			elem: elem, rawArray: rawArrayCodec(delim), scanOID: baseArrayOID(elem, delim)}
	}
	return &decodeInfo{kind: kindUnknown, oid: oid, name: row.name}
}

// decode turns one non-NULL value into its Go value. m must not be shared. Copies of
// text and json values are taken from rb when it has room (rb may be nil).
func (d *decodeInfo) decode(m *pgtype.Map, format int16, src []byte, rb *rowBuf) (any, error) {
	if src == nil {
		src = []byte{}
	}
	switch d.kind {
	case kindEnum:
		return rb.string(src), nil
	case kindUnknown:
		if format == pgtype.BinaryFormatCode {
			b := rb.bytes(src)
			if b == nil {
				// An empty send format is still the binary form: Binary is set
				// (non-nil), as for an empty bytea.
				b = []byte{}
			}
			return UnknownValue{Type: d.name, Binary: b}, nil
		}
		return UnknownValue{Type: d.name, Text: rb.string(src)}, nil
	case kindArray:
		return d.decodeArray(m, format, src)
	}
	if d.oid == pgtype.QCharOID && format == pgtype.TextFormatCode && len(src) == 4 && src[0] == '\\' {
		// "char"'s output function prints a byte >= 0x80 as \ooo (octal: charout in
		// PostgreSQL's char.c); pgtype's text decoder takes one byte. Decode the byte
		// as its binary form, which gives the same Go value as in binary mode.
		if b, ok := octalByte(src[1:]); ok {
			src, format = []byte{b}, pgtype.BinaryFormatCode
		}
	}
	if d.oid == pgtype.JSONPathOID && format == pgtype.BinaryFormatCode {
		// jsonpath's send function writes a version byte (1) before the text, which
		// pgtype's text-only codec would keep in the string.
		if len(src) == 0 || src[0] != 1 {
			return nil, errors.New("jsonpath binary value without version 1 header")
		}
		src, format = src[1:], pgtype.TextFormatCode
	}
	if d.fast != fastNone {
		if v, ok, err := d.decodeFast(format, src, rb); ok {
			return v, err
		}
	}
	if d.oid == pgtype.TimestamptzOID && (format == pgtype.TextFormatCode || format == pgtype.BinaryFormatCode) && d.tstzPlans[format] != nil {
		// What TimestamptzCodec.DecodeValue does, with the plan made once.
		var ts pgtype.Timestamptz
		if err := d.tstzPlans[format].Scan(src, &ts); err != nil {
			return nil, err
		}
		if ts.InfinityModifier != pgtype.Finite {
			return ts.InfinityModifier, nil
		}
		return ts.Time.UTC(), nil
	}
	codec := d.codec
	if codec == nil {
		t, ok := m.TypeForOID(d.oid)
		if !ok {
			return nil, fmt.Errorf("no codec for OID %d", d.oid)
		}
		codec = t.Codec
	}
	v, err := codec.DecodeValue(m, d.oid, format, src)
	if err != nil {
		return nil, err
	}
	return normalize(d.oid, v), nil
}

// numericScale gives a numeric decoded from binary the exponent its display scale
// implies (-dscale), as the text form has it: 0.00 stays Int 0, Exp -2 and 1.50 stays
// Int 150, Exp -2, whatever the base-10000 digit layout pgx decoded.
func numericScale(n pgtype.Numeric, src []byte) pgtype.Numeric {
	if !n.Valid || n.NaN || n.InfinityModifier != pgtype.Finite || n.Int == nil || len(src) < 8 {
		return n
	}
	want := -int32(int16(uint16(src[6])<<8 | uint16(src[7])))
	switch {
	case n.Exp > want:
		f := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n.Exp-want)), nil)
		n.Int = new(big.Int).Mul(n.Int, f)
		n.Exp = want
	case n.Exp < want:
		f := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(want-n.Exp)), nil)
		q, r := new(big.Int).QuoRem(n.Int, f, new(big.Int))
		if r.Sign() == 0 {
			n.Int, n.Exp = q, want
		}
	}
	return n
}

// normalize applies dbsync's conventions to a pgx-decoded value: instants (timestamptz,
// also as range bounds) in UTC — pgx gives timestamp and date values in UTC already, and
// timestamptz values in the process's local zone when decoded from binary.
func normalize(oid uint32, v any) any {
	switch x := v.(type) {
	case time.Time:
		return x.UTC()
	case []byte:
		if x == nil {
			return []byte{}
		}
	case pgtype.Range[any]:
		x.Lower, x.Upper = normalize(0, x.Lower), normalize(0, x.Upper)
		return x
	case pgtype.Multirange[pgtype.Range[any]]:
		out := make(pgtype.Multirange[pgtype.Range[any]], len(x))
		for i, r := range x {
			out[i] = normalize(0, r).(pgtype.Range[any])
		}
		return out
	}
	return v
}

// rawElement is the element type of the array codecs that read elements undecoded:
// "unknown", which every Map decodes into *any with TextCodec, a string in both
// formats, whatever codec the Map has for the array's real element type.
var rawElement = &pgtype.Type{Name: "unknown", OID: pgtype.UnknownOID, Codec: pgtype.TextCodec{}}

// rawArrayCodecs are the codecs rawArrayCodec returns, by delimiter ("," at 0).
var rawArrayCodecs sync.Map // byte -> *pgtype.ArrayCodec

// rawArrayCodec returns an array codec that reads the elements of an array whose
// elements are separated by delim (0: ',') as they are (text, or the binary bytes),
// for decodeArray to decode each with the element type's decodeInfo.
func rawArrayCodec(delim byte) *pgtype.ArrayCodec {
	if delim == 0 {
		delim = ','
	}
	if c, ok := rawArrayCodecs.Load(delim); ok {
		return c.(*pgtype.ArrayCodec)
	}
	c, _ := rawArrayCodecs.LoadOrStore(delim, &pgtype.ArrayCodec{ElementType: rawElement, Delimiter: delim})
	return c.(*pgtype.ArrayCodec)
}

// decodeArray decodes an array; elements of types pgtype knows are decoded by the
// array codec directly, others are read raw and decoded with d.elem.
func (d *decodeInfo) decodeArray(m *pgtype.Map, format int16, src []byte) (any, error) {
	// Elements are read raw (text, or binary bytes) and decoded with d.elem unless
	// pgtype knows the array type and its element type is decoded as itself, by its
	// codec alone (decode reads jsonpath's binary form and "char"'s \ooo text itself).
	_, known := refTypes.TypeForOID(d.oid)
	raw := !known || d.elem.kind != kindCodec || d.elem.oid != d.elemOID || d.elem.oid == pgtype.JSONPathOID || d.elem.oid == pgtype.QCharOID
	var arr pgtype.Array[any]
	if raw {
		plan := d.rawArray.PlanScan(m, d.oid, format, &arr)
		if plan == nil {
			return nil, fmt.Errorf("no scan plan for %s", d.name)
		}
		if err := plan.Scan(src, &arr); err != nil {
			return nil, err
		}
	} else if err := m.Scan(d.oid, format, src, &arr); err != nil {
		return nil, err
	}
	for i, e := range arr.Elements {
		if e == nil {
			continue
		}
		if raw {
			var b []byte
			switch x := e.(type) {
			case string:
				b = []byte(x)
			case []byte:
				b = x
			default:
				return nil, fmt.Errorf("array element %d: unexpected %T", i, e)
			}
			v, err := d.elem.decode(m, format, b, nil)
			if err != nil {
				return nil, fmt.Errorf("array element %d: %w", i, err)
			}
			arr.Elements[i] = v
		} else {
			arr.Elements[i] = normalize(d.elemOID, e)
		}
	}
	for _, dim := range arr.Dims {
		if dim.LowerBound != 1 {
			return arr, nil
		}
	}
	if len(arr.Dims) == 0 {
		return []any{}, nil
	}
	nested, _ := nestArray(arr.Elements, arr.Dims)
	return nested, nil
}

// nestArray turns row-major flat elements into nested []any by dims.
func nestArray(elems []any, dims []pgtype.ArrayDimension) ([]any, []any) {
	n := int(dims[0].Length)
	out := make([]any, n)
	for i := 0; i < n; i++ {
		if len(dims) == 1 {
			out[i] = elems[0]
			elems = elems[1:]
		} else {
			out[i], elems = nestArray(elems, dims[1:])
		}
	}
	return out, elems
}

// decoder returns the column's resolved decoding (by its type OID alone when the
// column was not built by the catalog loader).
func (c *PGColumnInfo) decoder() *decodeInfo {
	if c.dec != nil {
		return c.dec
	}
	return resolveDecode(c.TypeOID, nil)
}

func (c *PGColumnInfo) decodeFormat(format int16, data []byte) (any, error) {
	m := typeMaps.Get().(*pgtype.Map)
	v, broken, err := c.decodeWith(m, format, data, nil)
	if !broken {
		typeMaps.Put(m)
	}
	return v, err
}

// decodeWith decodes one value with m, a Map borrowed from typeMaps, taking copies of
// text and json values from rb (nil: allocated per value). broken reports a
// panic in a pgtype decoder (returned as an ErrDecodeValue error): m must then be
// dropped, not returned to the pool.
func (c *PGColumnInfo) decodeWith(m *pgtype.Map, format int16, data []byte, rb *rowBuf) (v any, broken bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			// pgtype decoders index malformed input in a few places: a decode
			// failure must be an error, never a crash (the Map is dropped).
			v, broken, err = nil, true, fmt.Errorf("%w: column %q (%s): %v", ErrDecodeValue, c.ColumnName, c.decoder().name, r)
		}
	}()
	v, err = c.decoder().decode(m, format, data, rb)
	if err != nil {
		return nil, false, fmt.Errorf("%w: column %q (%s, %s format): %v", ErrDecodeValue, c.ColumnName, c.decoder().name, formatName(format), err)
	}
	return v, false, nil
}

func formatName(f int16) string {
	if f == pgtype.BinaryFormatCode {
		return "binary"
	}
	return "text"
}

// DecodeText decodes a value in PostgreSQL's text output format (pgoutput tuple kind
// 't', or a SELECT's format('%s', col)) for this column's type into a typed Go value
// (docs/VALUES.md: int32 for integer, pgtype.Numeric for numeric, time.Time in UTC for
// timestamptz, ...). Text output must use DateStyle ISO, IntervalStyle postgres and
// bytea_output hex (PostgreSQL's defaults; dbsync's peek sets them). Errors wrap
// ErrDecodeValue.
func (c *PGColumnInfo) DecodeText(data []byte) (any, error) {
	return c.decodeFormat(pgtype.TextFormatCode, data)
}

// DecodeBytes decodes a value in PostgreSQL's binary format (the type's send function:
// pgoutput tuple kind 'b' with WithBinary(true)) into the same Go value DecodeText gives
// for the same datum. Errors wrap ErrDecodeValue.
func (c *PGColumnInfo) DecodeBytes(data []byte) (any, error) {
	return c.decodeFormat(pgtype.BinaryFormatCode, data)
}

// columnsFor returns column descriptions matching reln's columns by position: the
// table's own when it was built from this RELATION message's shape, otherwise built
// from reln (types decoded by OID; user types not described by the catalog become
// UnknownValue).
func (t *PGTableInfo) columnsFor(reln *pglogrepl.RelationMessage) []*PGColumnInfo {
	if t != nil && t.reln != nil && (t.reln == reln || sameRelation(t.reln, reln)) {
		return t.Columns
	}
	cols := make([]*PGColumnInfo, len(reln.Columns))
	for i, rc := range reln.Columns {
		if t != nil {
			if c := t.ColInfo[rc.Name]; c != nil && c.TypeOID == rc.DataType {
				cols[i] = c
				continue
			}
		}
		cols[i] = &PGColumnInfo{ColumnName: rc.Name, TypeOID: rc.DataType, TypeModifier: rc.TypeModifier, dec: resolveDecode(rc.DataType, nil)}
	}
	return cols
}

// MessageToMap decodes a tuple of a change into column values by the column layout of
// reln (the RELATION message in force for the change: historic types, correct for that
// change even if the table was altered since). NULL ('n') gives a nil value. Unchanged
// TOASTed columns ('u': not sent) are not in values; their names are returned in
// unchanged, in column order. A nil tuple gives nil values.
//
// Errors: ErrMalformedMessage when the tuple does not match reln, ErrDecodeValue when a
// value cannot be decoded.
func (t *PGTableInfo) MessageToMap(reln *pglogrepl.RelationMessage, tuple *pglogrepl.TupleData) (values StringMap, unchanged []string, err error) {
	if tuple == nil {
		return nil, nil, nil
	}
	if reln == nil {
		return nil, nil, fmt.Errorf("%w: no RELATION message for the tuple", ErrMalformedMessage)
	}
	if len(tuple.Columns) != len(reln.Columns) {
		return nil, nil, fmt.Errorf("%w: tuple has %d columns, relation %s.%s has %d", ErrMalformedMessage, len(tuple.Columns), reln.Namespace, reln.RelationName, len(reln.Columns))
	}
	cols := t.columnsFor(reln)
	values = make(StringMap, len(tuple.Columns))
	// One buffer holds the copies of the tuple's text and json values (rowBuf).
	need := 0
	for i, col := range tuple.Columns {
		if (col.DataType == pglogrepl.TupleDataTypeText || col.DataType == pglogrepl.TupleDataTypeBinary) && cols[i].dec != nil && cols[i].dec.copies() {
			need += len(col.Data)
		}
	}
	rb := newRowBuf(need)
	// One Map serves the whole tuple (dropped if a decoder panicked).
	var m *pgtype.Map
	defer func() {
		if m != nil {
			typeMaps.Put(m)
		}
	}()
	for i, col := range tuple.Columns {
		name := reln.Columns[i].Name
		var format int16
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			values[name] = nil
			continue
		case pglogrepl.TupleDataTypeToast:
			unchanged = append(unchanged, name)
			continue
		case pglogrepl.TupleDataTypeText:
			format = pgtype.TextFormatCode
		case pglogrepl.TupleDataTypeBinary:
			format = pgtype.BinaryFormatCode
		default:
			return nil, nil, fmt.Errorf("%w: column %q has tuple kind %q", ErrMalformedMessage, name, col.DataType)
		}
		if m == nil {
			m = typeMaps.Get().(*pgtype.Map)
		}
		v, broken, err := cols[i].decodeWith(m, format, col.Data, rb)
		if broken {
			m = nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s.%s: %w", reln.Namespace, reln.RelationName, err)
		}
		values[name] = v
	}
	return values, unchanged, nil
}

// octalByte parses three octal digits (000-377) into a byte.
func octalByte(o []byte) (byte, bool) {
	if len(o) != 3 || o[0] < '0' || o[0] > '3' {
		return 0, false
	}
	v := 0
	for _, c := range o {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	return byte(v), true
}

// noBinaryCodec tells whether values of d arrive in binary mode as send-format bytes
// (UnknownValue), which print differently from the text a selection reads: a type
// without a codec, or an array of one.
func noBinaryCodec(d *decodeInfo) bool {
	if d == nil {
		return false
	}
	if d.kind == kindArray {
		return noBinaryCodec(d.elem)
	}
	return d.kind == kindUnknown
}
