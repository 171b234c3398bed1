package gateway

import (
	"sync"

	"github.com/crmauthz/crmauthz/internal/jsonstr"
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
		b = jsonstr.Append(b, a.code)
		b = append(b, errorBodyDecisionID...)
	}
	b = jsonstr.Append(b, a.id)
	b = append(b, errorBodyMessage...)
	if a.policyDeny {
		// "denied: " + reason [+ ": " + detail], escaped piece by piece:
		// ASCII joins the pieces, so that is the whole string's escaping
		b = append(b, '"')
		b = jsonstr.AppendChars(append(b, policyDenyMessageTop...), a.reason)
		if a.detail != "" {
			b = jsonstr.AppendChars(append(b, ':', ' '), a.detail)
		}
		b = append(b, '"')
	} else {
		b = jsonstr.Append(b, a.message)
	}
	b = append(b, errorBodyReason...)
	b = jsonstr.Append(b, a.reason)
	return append(b, errorBodyTail...)
}

// errorBody returns a's error body in a new slice.
func (a *gatewayAnswer) errorBody() []byte { return a.appendErrorBody(make([]byte, 0, 128)) }

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
