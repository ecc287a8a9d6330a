package dbsync

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// JSONValue converts a value decoded for this column (DecodeText, DecodeBytes,
// MessageToMap) into one encoding/json encodes without loss or error:
//
//   - string, bool, integers, finite floats, nil: unchanged;
//   - timestamptz: RFC 3339 in UTC ("2020-01-01T00:00:00Z"); timestamp: the same without
//     zone; date: "2006-01-02" (strings: encoding/json rejects years past 9999);
//   - float NaN/±Infinity: the strings "NaN", "Infinity", "-Infinity" (json.Marshal
//     rejects them);
//   - numeric: json.Number with every digit and the scale ("1.50"), or "NaN",
//     "Infinity", "-Infinity";
//   - json/jsonb: the document itself (json.RawMessage); a document nested deeper
//     than encoding/json allows (10,000 levels; PostgreSQL accepts more) as its text,
//     a JSON string;
//   - bytea: PostgreSQL's hex text ("\\x00ff");
//   - uuid: "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"; macaddr: "08:00:2b:01:02:03";
//   - infinite date/timestamp: "infinity" / "-infinity";
//   - arrays: JSON arrays (nested per dimension) of converted elements;
//   - everything else (interval, time, inet, ranges, bit strings, arrays with lower
//     bounds other than 1, ...): PostgreSQL's text form of the value, as pgx encodes it;
//   - UnknownValue: its text (binary: "\\x" hex of the send format).
//
// Errors wrap ErrDecodeValue when a value cannot be rendered.
func (c *PGColumnInfo) JSONValue(v any) (any, error) {
	return jsonValue(c.decoder(), v)
}

// JSONRow applies JSONValue to every column of a row decoded for this table.
func (t *PGTableInfo) JSONRow(values StringMap) (map[string]any, error) {
	if values == nil {
		return nil, nil
	}
	out := make(map[string]any, len(values))
	for k, v := range values {
		col := t.ColInfo[k]
		var d *decodeInfo
		if col != nil {
			d = col.decoder()
		}
		j, err := jsonValue(d, v)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", t.QualifiedName(), k, err)
		}
		out[k] = j
	}
	return out, nil
}

func jsonValue(d *decodeInfo, v any) (any, error) {
	switch x := v.(type) {
	case json.RawMessage:
		if stdlibTooDeep(x) {
			return string(x), nil
		}
		return v, nil
	case nil, string, bool, int16, int32, int64, uint32:
		return v, nil
	case time.Time:
		return timeText(d, x), nil
	case float32:
		return jsonFloat(float64(x), v), nil
	case float64:
		return jsonFloat(x, v), nil
	case pgtype.Numeric:
		return numericJSON(x), nil
	case []byte:
		return `\x` + hex.EncodeToString(x), nil
	case [16]byte:
		s, _ := keyText(x)
		return s, nil
	case net.HardwareAddr:
		return x.String(), nil
	case pgtype.InfinityModifier:
		return x.String(), nil
	case UnknownValue:
		if x.Binary != nil {
			return `\x` + hex.EncodeToString(x.Binary), nil
		}
		return x.Text, nil
	case []any:
		var elem *decodeInfo
		if d != nil {
			elem = d.elem
		}
		out := make([]any, len(x))
		for i, e := range x {
			j, err := jsonValue(elem, e)
			if err != nil {
				return nil, err
			}
			out[i] = j
		}
		return out, nil
	}
	if d == nil {
		return nil, fmt.Errorf("%w: no column type to render %T as JSON", ErrDecodeValue, v)
	}
	switch x := v.(type) {
	case pgtype.Range[any]:
		return rangeText(d.oid, x)
	case pgtype.Multirange[pgtype.Range[any]]:
		parts := make([]string, len(x))
		for i, r := range x {
			s, err := rangeText(multirangeRange(d.oid), r)
			if err != nil {
				return nil, err
			}
			parts[i] = s
		}
		return "{" + strings.Join(parts, ",") + "}", nil
	case pgtype.Array[any]:
		if s, err := encodeText(d.oid, d.name, v); err == nil {
			return s, nil
		}
		// pgx cannot encode some element values (ranges, UnknownValue): the
		// elements' own renderings, in an array of text.
		return arrayText(d, x)
	}
	return encodeText(d.oid, d.name, v)
}

// arrayText renders an array (with its bounds) as PostgreSQL's text of it, each
// element as JSONValue renders it alone, quoted as array_out quotes.
func arrayText(d *decodeInfo, arr pgtype.Array[any]) (string, error) {
	texts := pgtype.Array[any]{Dims: arr.Dims, Valid: arr.Valid, Elements: make([]any, len(arr.Elements))}
	for i, e := range arr.Elements {
		if e == nil {
			continue
		}
		j, err := jsonValue(d.elem, e)
		if err != nil {
			return "", err
		}
		switch x := j.(type) {
		case string:
			texts.Elements[i] = x
		case json.RawMessage:
			texts.Elements[i] = string(x)
		default:
			texts.Elements[i] = fmt.Sprint(x)
		}
	}
	m := typeMaps.Get().(*pgtype.Map)
	defer typeMaps.Put(m)
	plan := d.rawArray.PlanEncode(m, d.oid, pgtype.TextFormatCode, texts)
	if plan == nil {
		return "", fmt.Errorf("%w: render %s text: no encode plan", ErrDecodeValue, d.name)
	}
	b, err := plan.Encode(texts, nil)
	if err != nil {
		return "", fmt.Errorf("%w: render %s text: %v", ErrDecodeValue, d.name, err)
	}
	return string(b), nil
}

// encodeText renders v as PostgreSQL text with pgx's encoder for oid.
func encodeText(oid uint32, name string, v any) (string, error) {
	m := typeMaps.Get().(*pgtype.Map)
	defer typeMaps.Put(m)
	b, err := m.Encode(oid, pgtype.TextFormatCode, v, nil)
	if err != nil {
		return "", fmt.Errorf("%w: render %T as %s text: %v", ErrDecodeValue, v, name, err)
	}
	return string(b), nil
}

// multirangeRange is the range type of a built-in multirange type.
func multirangeRange(oid uint32) uint32 {
	if t, ok := refTypes.TypeForOID(oid); ok {
		if c, ok := t.Codec.(*pgtype.MultirangeCodec); ok {
			return c.ElementType.OID
		}
	}
	return 0
}

// rangeText renders a range as PostgreSQL's range_out does: "empty", or bounds with
// brackets, bound texts double-quoted when they contain special characters.
func rangeText(oid uint32, r pgtype.Range[any]) (string, error) {
	if r.LowerType == pgtype.Empty {
		return "empty", nil
	}
	var elemOID uint32
	if t, ok := refTypes.TypeForOID(oid); ok {
		if c, ok := t.Codec.(*pgtype.RangeCodec); ok {
			elemOID = c.ElementType.OID
		}
	}
	bound := func(v any, typ pgtype.BoundType) (string, error) {
		if typ == pgtype.Unbounded || v == nil {
			return "", nil
		}
		var s string
		switch x := v.(type) {
		case pgtype.InfinityModifier:
			s = x.String()
		case pgtype.Numeric:
			s = fmt.Sprint(numericJSON(x))
		case time.Time:
			switch elemOID {
			case pgtype.DateOID:
				s = x.Format("2006-01-02")
			case pgtype.TimestampOID:
				s = x.Format("2006-01-02 15:04:05.999999")
			default:
				s = x.UTC().Format("2006-01-02 15:04:05.999999-07")
			}
		case int16, int32, int64:
			s = fmt.Sprint(x)
		default:
			var err error
			if s, err = encodeText(elemOID, "range bound", v); err != nil {
				return "", err
			}
		}
		if s == "" || strings.ContainsAny(s, `,()[]" \`) {
			s = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
		}
		return s, nil
	}
	lo, err := bound(r.Lower, r.LowerType)
	if err != nil {
		return "", err
	}
	hi, err := bound(r.Upper, r.UpperType)
	if err != nil {
		return "", err
	}
	open, close := "(", ")"
	if r.LowerType == pgtype.Inclusive {
		open = "["
	}
	if r.UpperType == pgtype.Inclusive {
		close = "]"
	}
	return open + lo + "," + hi + close, nil
}

// timeText renders an instant, a timestamp without time zone or a date.
func timeText(d *decodeInfo, t time.Time) string {
	var oid uint32
	if d != nil {
		oid = d.oid
	}
	switch oid {
	case pgtype.DateOID:
		return t.Format("2006-01-02")
	case pgtype.TimestampOID:
		return t.Format("2006-01-02T15:04:05.999999999")
	}
	return t.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")
}

func jsonFloat(f float64, orig any) any {
	if name, ok := floatSpecial(f); ok {
		return name
	}
	return orig
}

// numericJSON renders a numeric exactly: json.Number with its scale, or a string for
// NaN and infinities.
func numericJSON(n pgtype.Numeric) any {
	switch {
	case n.NaN:
		return "NaN"
	case n.InfinityModifier == pgtype.Infinity:
		return "Infinity"
	case n.InfinityModifier == pgtype.NegativeInfinity:
		return "-Infinity"
	}
	return json.Number(numericText(n))
}

// numericText is a finite numeric in plain decimal notation with -Exp fraction digits
// (PostgreSQL's numeric output for a value of that scale).
func numericText(n pgtype.Numeric) string {
	i := n.Int
	if i == nil {
		i = new(big.Int)
	}
	if n.Exp >= 0 {
		return new(big.Int).Mul(i, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n.Exp)), nil)).String()
	}
	neg := i.Sign() < 0
	digits := new(big.Int).Abs(i).String()
	scale := int(-n.Exp)
	if len(digits) <= scale {
		digits = strings.Repeat("0", scale-len(digits)+1) + digits
	}
	s := digits[:len(digits)-scale] + "." + digits[len(digits)-scale:]
	if neg {
		s = "-" + s
	}
	return s
}

// stdlibMaxDepth is encoding/json's nesting limit: it refuses to encode (or decode) a
// json.RawMessage nested deeper.
const stdlibMaxDepth = 10000

// stdlibTooDeep tells whether a valid JSON document is nested deeper than
// stdlibMaxDepth. A document that deep has at least two bytes a level, so shorter ones
// are not scanned.
func stdlibTooDeep(doc []byte) bool {
	if len(doc) <= 2*stdlibMaxDepth {
		return false
	}
	depth := 0
	for i := 0; i < len(doc); i++ {
		switch doc[i] {
		case '"':
			for i++; i < len(doc) && doc[i] != '"'; i++ {
				if doc[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			if depth++; depth > stdlibMaxDepth {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}
