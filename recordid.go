package dbsync

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
)

// GetRecordID returns the record ID of a row: a string made from its key values
// (PrimaryKey, in key order) that is the same for the row decoded from a change
// (MessageToMap) and read by a SELECT (ScanRow), and different for different keys.
//
// Shape: a JSON array of the key columns' canonical texts, in key order: `["42"]` for a
// one-column key, `["42","abc"]` for a composite one. The canonical text is a function
// of the decoded value (integers in decimal, numeric in plain decimal with its scale,
// uuid in its usual form, bytea as \x hex, instants in RFC 3339 UTC — a time.Time in
// any location, also as an array element or range bound —, ...). JSON string
// escaping makes the ID unambiguous whatever the values contain (commas, quotes,
// brackets).
// Two keys PostgreSQL considers equal but that print differently (numeric 1.5 and
// 1.50) give different IDs.
//
// Errors wrap ErrNoKey: the table has no primary key or replica identity index, or
// its key holds a generated column (which pgoutput never sends), or values lacks a
// key column or holds NULL for it.
func (t *PGTableInfo) GetRecordID(values StringMap) (string, error) {
	if len(t.PrimaryKey) == 0 {
		return "", t.errNoKeyTable()
	}
	// The ID is built directly into one buffer; it is byte for byte what json.Marshal
	// gives for the []string of the key texts (TestRecordIDMatchesJSONMarshal).
	var stack [64]byte
	b := append(stack[:0], '[')
	for i, k := range t.PrimaryKey {
		v, ok := values[k]
		if !ok {
			return "", fmt.Errorf("%w: key column %q of %s missing from the row", ErrNoKey, k, t.QualifiedName())
		}
		var err error
		if b, err = t.appendKeyPart(b, i, v); err != nil {
			return "", err
		}
	}
	b = append(b, ']')
	return string(b), nil
}

// errNoKeyTable is ErrNoKey for a table dbsync gives no key (PrimaryKey empty),
// saying why and what to do.
func (t *PGTableInfo) errNoKeyTable() error {
	if t.generatedKey != "" {
		return fmt.Errorf("%w: table %s: %s; %s", ErrNoKey, t.QualifiedName(), t.noKeyReason(), t.noKeyFix())
	}
	return fmt.Errorf("%w: table %s has no primary key or replica identity index; add a primary key", ErrNoKey, t.QualifiedName())
}

// recordIDOfKeys is GetRecordID of a row given by its key values alone: keyVals[i] is
// the value of PrimaryKey[i], decoded as MessageToMap decodes it.
func (t *PGTableInfo) recordIDOfKeys(keyVals []any) (string, error) {
	if len(t.PrimaryKey) == 0 || len(keyVals) != len(t.PrimaryKey) {
		return "", t.errNoKeyTable()
	}
	var stack [64]byte
	b := append(stack[:0], '[')
	for i, v := range keyVals {
		var err error
		if b, err = t.appendKeyPart(b, i, v); err != nil {
			return "", err
		}
	}
	b = append(b, ']')
	return string(b), nil
}

// tupleKeyTexts returns the key columns (PrimaryKey order) of a change's tuple, laid
// out as reln says, in the text form PostgreSQL prints them (each type's output
// function): what a selection reads as a row's key texts and what a follow-up query
// binds, cast to the columns' types (keyParams), to read the row again. Bound as
// text, they work for every key type and with any driver (a decoded value does not:
// lib/pq takes no [16]byte for a uuid). A value pgoutput sent as text is that text
// already; a binary one (WithBinary) is printed from its decoded value in values
// (MessageToMap's) by inputText, which fails for types without a codec (Refresh and
// Snapshot refuse such keys in binary mode).
//
// A key column the tuple holds as an unchanged TOASTed value ('u': an UPDATE of a row
// whose key is stored out of line) is taken from old, the update's old tuple (nil:
// none), which PostgreSQL sends for such an update with the key flattened; values
// then holds it too (DecodeChange fills it in, Change.Filled).
func (t *PGTableInfo) tupleKeyTexts(reln *pglogrepl.RelationMessage, tuple, old *pglogrepl.TupleData, values StringMap) ([]string, error) {
	if len(t.PrimaryKey) == 0 || tuple == nil || len(tuple.Columns) != len(reln.Columns) {
		return nil, fmt.Errorf("%w: no key columns in the tuple of %s", ErrNoKey, t.QualifiedName())
	}
	var cols []*PGColumnInfo
	var m *pgtype.Map
	defer func() {
		if m != nil {
			typeMaps.Put(m)
		}
	}()
	out := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		j := -1
		for c, rc := range reln.Columns {
			if rc.Name == k {
				j = c
				break
			}
		}
		if j < 0 {
			return nil, fmt.Errorf("%w: key column %q of %s missing from the row", ErrNoKey, k, t.QualifiedName())
		}
		tc := tuple.Columns[j]
		if tc.DataType == pglogrepl.TupleDataTypeToast && old != nil && len(old.Columns) == len(reln.Columns) {
			tc = old.Columns[j] // unchanged: the old key's value is the new one
		}
		switch tc.DataType {
		case pglogrepl.TupleDataTypeText:
			out[i] = string(tc.Data)
		case pglogrepl.TupleDataTypeBinary:
			if cols == nil {
				cols = t.columnsFor(reln)
			}
			dec := cols[j].decoder()
			v := values[k]
			if v == nil {
				return nil, fmt.Errorf("%w: key column %q of %s is NULL", ErrNoKey, k, t.QualifiedName())
			}
			if m == nil {
				m = typeMaps.Get().(*pgtype.Map)
			}
			s, err := inputText(m, dec, v)
			if err != nil {
				return nil, fmt.Errorf("%w: key column %q of %s (%s) sent in binary cannot be printed as text: %v", ErrNoKey, k, t.QualifiedName(), dec.name, err)
			}
			out[i] = s
		default:
			return nil, fmt.Errorf("%w: key column %q of %s not sent (tuple kind %q)", ErrNoKey, k, t.QualifiedName(), tc.DataType)
		}
	}
	return out, nil
}

// inputText prints a value decoded from a binary column (MessageToMap's) of the type
// dec describes as text the type's input function reads back to the same value, as
// its output function would print it. pgtype's text encoders are not that for every
// key type: they print no []any array or pgtype.Range[any] with an infinite bound, and
// write "char" as its raw byte (invalid UTF-8 from 0x80 on, which the server refuses
// as a parameter). Arrays and ranges are printed here from their elements' texts,
// each element quoted, so any element text is read back as it is (multiranges as
// their ranges); "char" as charout
// prints it (\ooo from 0x80 on); infinite dates and instants as "infinity".
func inputText(m *pgtype.Map, dec *decodeInfo, v any) (string, error) {
	switch dec.kind {
	case kindEnum:
		if s, ok := v.(string); ok {
			return s, nil
		}
	case kindArray:
		return arrayInputText(m, dec, v)
	case kindCodec:
		if rc, ok := dec.codec.(*pgtype.RangeCodec); ok {
			if r, ok := v.(pgtype.Range[any]); ok {
				return rangeInputText(m, resolveDecodeDepth(rc.ElementType.OID, nil, 1), r)
			}
		}
		if mc, ok := dec.codec.(*pgtype.MultirangeCodec); ok {
			if mr, ok := v.(pgtype.Multirange[pgtype.Range[any]]); ok {
				return multirangeInputText(m, resolveDecodeDepth(mc.ElementType.OID, nil, 1), mr)
			}
		}
		switch x := v.(type) {
		case pgtype.InfinityModifier:
			return x.String(), nil
		case string:
			return x, nil // text, varchar, bpchar, name: their own text
		case rune:
			if dec.oid == pgtype.QCharOID {
				return qcharText(byte(x)), nil
			}
		}
		b, err := m.Encode(dec.oid, pgtype.TextFormatCode, v, nil)
		if err != nil {
			return "", err
		}
		if b == nil {
			return "", fmt.Errorf("%T printed as NULL", v)
		}
		return string(b), nil
	}
	return "", fmt.Errorf("no text form for %T", v)
}

// qcharText is "char"'s text as its output function prints it (charout, PostgreSQL
// 15): a byte from 0x80 on as \ooo, 0 as the empty string, others as themselves.
func qcharText(c byte) string {
	switch {
	case c == 0:
		return ""
	case c >= 0x80:
		return string([]byte{'\\', '0' + c>>6, '0' + c>>3&7, '0' + c&7})
	}
	return string([]byte{c})
}

// quoteElement quotes an array element's or a range bound's text for array_in and
// range_in: in double quotes, '"' and '\\' escaped with a backslash.
func quoteElement(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// arrayInputText prints an array decoded as []any (nested per dimension) or, with
// lower bounds other than 1, pgtype.Array[any]: "{...}" or "[l:u]...={...}", elements
// quoted and separated by the element type's delimiter.
func arrayInputText(m *pgtype.Map, dec *decodeInfo, v any) (string, error) {
	delim := byte(',')
	if dec.rawArray != nil {
		delim = dec.rawArray.Delimiter
	}
	var b []byte
	var elem func(e any) error
	elem = func(e any) error {
		switch x := e.(type) {
		case nil:
			b = append(b, "NULL"...)
			return nil
		case []any:
			b = append(b, '{')
			for i, y := range x {
				if i > 0 {
					b = append(b, delim)
				}
				if err := elem(y); err != nil {
					return err
				}
			}
			b = append(b, '}')
			return nil
		}
		s, err := inputText(m, dec.elem, e)
		if err != nil {
			return err
		}
		b = quoteElement(b, s)
		return nil
	}
	switch x := v.(type) {
	case []any:
		if err := elem(x); err != nil {
			return "", err
		}
		return string(b), nil
	case pgtype.Array[any]:
		if len(x.Dims) == 0 {
			return "{}", nil
		}
		for _, d := range x.Dims {
			b = fmt.Appendf(b, "[%d:%d]", d.LowerBound, int64(d.LowerBound)+int64(d.Length)-1)
		}
		b = append(b, '=')
		// Nest the flat elements by the dimensions.
		var nest func(dim int, elems []any) any
		nest = func(dim int, elems []any) any {
			if dim == len(x.Dims)-1 {
				return elems
			}
			n := int(x.Dims[dim].Length)
			size := len(elems) / max(n, 1)
			out := make([]any, n)
			for i := range out {
				out[i] = nest(dim+1, elems[i*size:(i+1)*size])
			}
			return out
		}
		if err := elem(nest(0, x.Elements)); err != nil {
			return "", err
		}
		return string(b), nil
	}
	return "", fmt.Errorf("no text form for array %T", v)
}

// rangeInputText prints a range as range_in reads it: "empty", or its bounds quoted
// between its brackets, an unbounded side left empty.
func rangeInputText(m *pgtype.Map, elem *decodeInfo, r pgtype.Range[any]) (string, error) {
	if r.LowerType == pgtype.Empty {
		return "empty", nil
	}
	b := []byte{'('}
	if r.LowerType == pgtype.Inclusive {
		b[0] = '['
	}
	for i, side := range []struct {
		typ pgtype.BoundType
		v   any
	}{{r.LowerType, r.Lower}, {r.UpperType, r.Upper}} {
		if i > 0 {
			b = append(b, ',')
		}
		if side.typ == pgtype.Unbounded {
			continue
		}
		s, err := inputText(m, elem, side.v)
		if err != nil {
			return "", err
		}
		b = quoteElement(b, s)
	}
	if r.UpperType == pgtype.Inclusive {
		return string(append(b, ']')), nil
	}
	return string(append(b, ')')), nil
}

// multirangeInputText prints a multirange as multirange_in reads it: its ranges
// (rangeInputText of the range type rng) between braces.
func multirangeInputText(m *pgtype.Map, rng *decodeInfo, mr pgtype.Multirange[pgtype.Range[any]]) (string, error) {
	rc, ok := rng.codec.(*pgtype.RangeCodec)
	if !ok {
		return "", fmt.Errorf("multirange of %s", rng.name)
	}
	elem := resolveDecodeDepth(rc.ElementType.OID, nil, 1)
	b := []byte{'{'}
	for i, r := range mr {
		if i > 0 {
			b = append(b, ',')
		}
		s, err := rangeInputText(m, elem, r)
		if err != nil {
			return "", err
		}
		b = append(b, s...)
	}
	return string(append(b, '}')), nil
}

// appendKeyPart appends key column i's value v (its JSON string, after a comma unless
// it is the first) to a record ID being built.
func (t *PGTableInfo) appendKeyPart(b []byte, i int, v any) ([]byte, error) {
	if v == nil {
		return b, fmt.Errorf("%w: key column %q of %s is NULL", ErrNoKey, t.PrimaryKey[i], t.QualifiedName())
	}
	if i > 0 {
		b = append(b, ',')
	}
	b, err := appendKeyJSON(b, v)
	if err != nil {
		return b, fmt.Errorf("%w: key column %q of %s: %v", ErrNoKey, t.PrimaryKey[i], t.QualifiedName(), err)
	}
	return b, nil
}

// appendKeyJSON appends keyText(v) as a JSON string to b. The common key types are
// formatted in place; the others go through keyText.
func appendKeyJSON(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		return appendJSONString(b, x), nil
	case int16:
		return append(strconv.AppendInt(append(b, '"'), int64(x), 10), '"'), nil
	case int32:
		return append(strconv.AppendInt(append(b, '"'), int64(x), 10), '"'), nil
	case int64:
		return append(strconv.AppendInt(append(b, '"'), x, 10), '"'), nil
	case uint32:
		return append(strconv.AppendUint(append(b, '"'), uint64(x), 10), '"'), nil
	}
	s, err := keyText(v)
	if err != nil {
		return b, err
	}
	return appendJSONString(b, s), nil
}

// appendJSONString appends s as a JSON string exactly as encoding/json encodes a Go
// string (HTML escaping on): '"' and '\\' escaped with a backslash; \b \f \n \r \t by
// their short escapes; other control bytes, '<', '>' and '&' as \u00XX; U+2028 and
// U+2029 as \u2028 and \u2029; each byte of invalid UTF-8 as \ufffd.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// keyText is the canonical text of a decoded value: a function of the value alone, so
// equal values give equal texts and (per Go type) different values different texts.
func keyText(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int16:
		return strconv.FormatInt(int64(x), 10), nil
	case int32:
		return strconv.FormatInt(int64(x), 10), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint32:
		return strconv.FormatUint(uint64(x), 10), nil
	case bool:
		if x {
			return "t", nil
		}
		return "f", nil
	case float32:
		return floatText(float64(x), 32), nil
	case float64:
		return floatText(x, 64), nil
	case []byte:
		return `\x` + hex.EncodeToString(x), nil
	case [16]byte:
		return fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:16]), nil
	case time.Time:
		// An instant in UTC, whatever its location (decoded values are in UTC
		// already; a time.Time the application made may not be).
		return x.UTC().Format("2006-01-02T15:04:05.999999999Z07:00"), nil
	case json.RawMessage:
		return string(x), nil
	case pgtype.InfinityModifier:
		return x.String(), nil
	case pgtype.Numeric:
		return fmt.Sprint(numericJSON(x)), nil
	case UnknownValue:
		return x.String(), nil
	case fmt.Stringer:
		return x.String(), nil
	case []any, pgtype.Array[any]:
		return jsonKey(x)
	}
	return jsonKey(v)
}

func floatText(f float64, bits int) string {
	if name, ok := floatSpecial(f); ok {
		return name
	}
	return strconv.FormatFloat(f, 'g', -1, bits)
}

// floatSpecial names NaN and the infinities as PostgreSQL prints them.
func floatSpecial(f float64) (string, bool) {
	switch {
	case math.IsNaN(f):
		return "NaN", true
	case math.IsInf(f, 1):
		return "Infinity", true
	case math.IsInf(f, -1):
		return "-Infinity", true
	}
	return "", false
}

// jsonKey renders composite values (arrays, pgtype structs) as JSON, with the elements'
// key texts for arrays.
func jsonKey(v any) (string, error) {
	if arr, ok := v.([]any); ok {
		parts := make([]any, len(arr))
		for i, e := range arr {
			if e == nil {
				continue
			}
			s, err := keyText(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		v = parts
	}
	switch v.(type) {
	case pgtype.Range[any], pgtype.Multirange[pgtype.Range[any]]:
		v = normalize(0, v) // instant bounds in UTC, as decoded ones are
	}
	b, err := json.Marshal(v)
	if err == nil {
		return string(b), nil
	}
	// encoding/json refuses some values these hold (a range bound's time outside years
	// 0-9999, NaN in an array with a lower bound other than 1). Such keys had no
	// record ID; render their parts with keyText instead. Only values json.Marshal
	// refuses take this form, so the IDs of every other key are what they were.
	c, cerr := canonicalKey(v)
	if cerr != nil {
		return "", fmt.Errorf("no canonical text for %T: %v", v, err)
	}
	if b, err = json.Marshal(c); err != nil {
		return "", fmt.Errorf("no canonical text for %T: %v", v, err)
	}
	return string(b), nil
}

// canonicalKey turns a composite key value into one encoding/json always encodes:
// its scalar parts as their key texts, arrays (with their dimensions) and ranges (with
// their bound types) as JSON arrays and objects.
func canonicalKey(v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := canonicalKey(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case pgtype.Array[any]:
		elems, err := canonicalKey(x.Elements)
		if err != nil {
			return nil, err
		}
		return map[string]any{"dims": x.Dims, "elements": elems, "valid": x.Valid}, nil
	case pgtype.Range[any]:
		lower, err := canonicalKey(x.Lower)
		if err != nil {
			return nil, err
		}
		upper, err := canonicalKey(x.Upper)
		if err != nil {
			return nil, err
		}
		return map[string]any{"lower": lower, "upper": upper, "lowerType": string(x.LowerType),
			"upperType": string(x.UpperType), "valid": x.Valid}, nil
	}
	return keyText(v)
}
