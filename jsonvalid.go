package dbsync

// validJSON reports whether b is one valid JSON value (RFC 8259) with optional
// surrounding whitespace: what encoding/json.Valid reports (the same grammar, bytes
// >= 0x80 in strings accepted without UTF-8 checks, as encoding/json does), in one
// pass without json.Valid's per-byte state function calls: several times faster on
// the short documents rows hold. Unlike json.Valid it has no nesting limit (encoding/json
// stops at 10,000 levels): PostgreSQL accepts deeper json and jsonb values, and one of
// them must not be taken for a malformed message. The stack of open containers takes a
// byte per level, so its size is bounded by the document's.
// TestValidJSONMatchesStdlib and FuzzValidJSONMatchesStdlib compare the two.
func validJSON(b []byte) bool {
	var buf [64]byte
	stack := buf[:0] // open containers: '{' or '['
	i := 0
	var ok bool
	for {
		// A value starts at i.
		i = skipJSONSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch c := b[i]; {
		case c == '{' || c == '[':
			stack = append(stack, c)
			i = skipJSONSpace(b, i+1)
			if i < len(b) && b[i] == c+2 { // '}' is '{'+2, ']' is '['+2
				stack = stack[:len(stack)-1]
				i++
				break
			}
			if c == '{' {
				if i, ok = jsonObjectKey(b, i); !ok {
					return false
				}
			}
			continue
		case c == '"':
			if i, ok = scanJSONString(b, i); !ok {
				return false
			}
		case c == '-' || (c >= '0' && c <= '9'):
			if i, ok = scanJSONNumber(b, i); !ok {
				return false
			}
		case c == 't':
			if !hasJSONLiteral(b, i, "true") {
				return false
			}
			i += 4
		case c == 'f':
			if !hasJSONLiteral(b, i, "false") {
				return false
			}
			i += 5
		case c == 'n':
			if !hasJSONLiteral(b, i, "null") {
				return false
			}
			i += 4
		default:
			return false
		}
		// After a value: close containers, or go on to the next element.
		for {
			i = skipJSONSpace(b, i)
			if len(stack) == 0 {
				return i == len(b)
			}
			if i >= len(b) {
				return false
			}
			top := stack[len(stack)-1]
			if b[i] == top+2 {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			if b[i] != ',' {
				return false
			}
			i++
			if top == '{' {
				if i, ok = jsonObjectKey(b, skipJSONSpace(b, i)); !ok {
					return false
				}
			}
			break
		}
	}
}

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

func hasJSONLiteral(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

// jsonObjectKey checks `"key" :` at i (no whitespace before the key) and returns the
// offset after the colon.
func jsonObjectKey(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, ok := scanJSONString(b, i)
	if !ok {
		return i, false
	}
	i = skipJSONSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return i + 1, true
}

// scanJSONString checks the string starting with the quote at b[i] and returns the
// offset after its closing quote.
func scanJSONString(b []byte, i int) (int, bool) {
	for i++; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, true
		case c == '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		case c < 0x20:
			return i, false
		default:
			i++
		}
	}
	return i, false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// scanJSONNumber checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at i and returns
// the offset after it.
func scanJSONNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return i, false
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}
