// Package jsonstr writes a Go string as a JSON string exactly as
// encoding/json's json.Marshal does (HTML escaping on), by appending to a
// byte slice: no reflection and no allocation beyond the slice's growth.
// The decision log's lines (internal/decisionlog), the decision API's reply
// (internal/server) and the gateways' error bodies (internal/server/gateway)
// are written with it; FuzzAppend compares it with json.Marshal. The
// package imports no package of this module.
package jsonstr

import "unicode/utf8"

const hexDigits = "0123456789abcdef"

// Append appends s as a JSON string, quotes included, as json.Marshal
// writes it.
func Append(b []byte, s string) []byte {
	return append(AppendChars(append(b, '"'), s), '"')
}

// AppendChars appends the characters of s as they stand inside a JSON
// string that json.Marshal writes: '"', '\\', control characters, '<', '>'
// and '&' escaped, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped. The
// pieces of one string may be appended one after the other between the
// quotes, since the escaping of a string is that of its runes.
func AppendChars(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
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
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}
