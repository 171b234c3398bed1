package gateway

import (
	"sync"
	"unicode/utf8"

	"github.com/crmauthz/crmauthz/internal/server/errcode"
)

// The error body of a deny (docs/reference.md §2.6) is
//
//	{"error":{"code":…,"decision_id":…,"message":…,"reason":…}}
//
// written by appending, byte for byte what encoding/json wrote for the map
// of those four keys (sorted keys, its escaping): no map and no reflection
// per request. TestErrorBodyMatchesMarshal compares the two.

// Fixed parts of the error body.
const (
	errorBodyHead        = `{"error":{"code":`
	errorBodyDeniedHead  = `{"error":{"code":"denied","decision_id":` // a.code == errcode.Denied
	errorBodyDecisionID  = `,"decision_id":`
	errorBodyMessage     = `,"message":`
	errorBodyReason      = `,"reason":`
	errorBodyTail        = `}}`
	policyDenyMessageTop = "denied: " // the message of the policy's deny: "denied: <reason>[: <message>]"
)

// appendErrorBody appends a's error body to b.
func (a *gatewayAnswer) appendErrorBody(b []byte) []byte {
	if a.code == errcode.Denied {
		b = append(b, errorBodyDeniedHead...)
	} else {
		b = append(b, errorBodyHead...)
		b = appendJSONString(b, a.code)
		b = append(b, errorBodyDecisionID...)
	}
	b = appendJSONString(b, a.id)
	b = append(b, errorBodyMessage...)
	if a.policyDeny {
		// "denied: " + reason [+ ": " + detail], escaped piece by piece:
		// ASCII joins the pieces, so that is the whole string's escaping
		b = append(b, '"')
		b = appendJSONChars(append(b, policyDenyMessageTop...), a.reason)
		if a.detail != "" {
			b = appendJSONChars(append(b, ':', ' '), a.detail)
		}
		b = append(b, '"')
	} else {
		b = appendJSONString(b, a.message)
	}
	b = append(b, errorBodyReason...)
	b = appendJSONString(b, a.reason)
	return append(b, errorBodyTail...)
}

// errorBody returns a's error body in a new slice.
func (a *gatewayAnswer) errorBody() []byte { return a.appendErrorBody(make([]byte, 0, 128)) }

// appendJSONString appends s as a JSON string, as encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	return append(appendJSONChars(append(b, '"'), s), '"')
}

// appendJSONChars appends the characters of s inside a JSON string exactly
// as encoding/json escapes them (its appendString with HTML escaping): '"',
// '\\', control characters, '<', '>' and '&' escaped, invalid UTF-8 as
// \ufffd, U+2028 and U+2029 escaped.
func appendJSONChars(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
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
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
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
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// bodyBufs holds the buffers the error bodies are written into.
type bodyBufs struct{ pool sync.Pool }

// errorBody returns a buffer holding a's error body; put gives it back.
func (p *bodyBufs) errorBody(a *gatewayAnswer) *[]byte {
	bp, _ := p.pool.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = a.appendErrorBody((*bp)[:0])
	return bp
}

// put keeps bp for the next error body, unless it grew large.
func (p *bodyBufs) put(bp *[]byte) {
	if cap(*bp) <= maxPooledBody {
		p.pool.Put(bp)
	}
}

// maxPooledBody is the largest buffer kept for the next error body.
const maxPooledBody = 16 << 10
