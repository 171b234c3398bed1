package server

import (
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/crmauthz/crmauthz/internal/jsonstr"
	"github.com/crmauthz/crmauthz/internal/strictjson"
)

// The decision endpoints read and write their JSON by hand on the common path
// and fall back to encoding/json for everything else, so that every body gets
// exactly the answer it got from the strict decoder alone.
//
// Reading: the body is read whole (through http.MaxBytesReader, as before) and
// parsed by a small parser that accepts only the plain shape of a request:
// the known keys spelt exactly, each at most once; strings without escape
// sequences or control characters (valid UTF-8); min_seq a plain unsigned
// integer; nothing but whitespace after the object. For such a body
// encoding/json would produce the very same struct. Anything else — a null, an
// escape sequence, a key in another case, an unknown or duplicate key, a wrong
// type, malformed JSON, trailing data, a body over the limit — is handed to
// internal/strictjson (the strict decoder of every body), whose result and
// error stand. The parser never decides that a body is invalid, and it
// accepts no body the strict decoder refuses (FuzzDecisionRequest).
//
// Writing: the reply is appended to one buffer with strconv; a string that
// encoding/json would escape (quotes, backslashes, control characters, <, >,
// &, non-ASCII) is written by encoding/json itself, so the bytes are those
// json.Marshal of the reply struct would produce.

// readBody reads the whole body through http.MaxBytesReader. On an error the
// bytes read so far come back with it. A body Limit has read whole already
// (wholeBody) is taken as it is, not copied again.
func readBody(req *http.Request, limit int64) ([]byte, error) {
	if wb, ok := req.Body.(*wholeBody); ok {
		if b, ok := wb.take(limit); ok {
			return b, nil
		}
	}
	// No ResponseWriter: as under Gin (whose writer hides it), a body over
	// the limit does not mark the connection to be closed.
	r := http.MaxBytesReader(nil, req.Body, limit)
	// Sized by Content-Length (+1: the read that sees EOF needs room), but
	// never more than 64 KiB up front: a client announcing a large body
	// without sending it gets no large buffer; a real one grows as it comes.
	size := 512
	if n := req.ContentLength; n > 0 && n < limit {
		size = int(min(n, 64<<10)) + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// decodeStrict decodes v from the bytes read and the read's error with
// strictjson.UnmarshalRead: a syntax error before the point where the read
// failed wins over the read error (a body over the limit is 413 only when it
// is well-formed up to the limit).
func decodeStrict(body []byte, readErr error, v any) error {
	return strictjson.UnmarshalRead(body, readErr, v)
}

// decisionBody is a /v1/decision body as the handler reads it.
type decisionBody struct {
	subject string
	check   checkFields
	minSeq  uint64
}

// batchBody is a /v1/decisions body; checks is nil when the body has none
// (the key missing or null).
type batchBody struct {
	subject string
	checks  []checkFields
	minSeq  uint64
}

// decodeDecisionBody decodes a /v1/decision body: the parser's result, or
// the strict decoder's (decisionRequest) with its error. The strings of a
// body the parser takes share body's bytes, which the caller never changes
// (readBody gives each request a buffer of its own).
func decodeDecisionBody(body []byte, readErr error) (decisionBody, error) {
	if readErr == nil {
		var d decisionBody
		if p := newScanner(body); p.decision(&d) {
			return d, nil
		}
	}
	var strict decisionRequest
	err := decodeStrict(body, readErr, &strict)
	return decisionBody{subject: strict.Subject, check: fieldsOf(strict.Action, strict.Resource, strict.Target), minSeq: strict.MinSeq}, err
}

// decodeBatchBody decodes a /v1/decisions body, like decodeDecisionBody.
func decodeBatchBody(body []byte, readErr error) (batchBody, error) {
	if readErr == nil {
		var b batchBody
		if p := newScanner(body); p.batch(&b) {
			return b, nil
		}
	}
	var strict batchRequest
	err := decodeStrict(body, readErr, &strict)
	b := batchBody{subject: strict.Subject, minSeq: strict.MinSeq}
	if strict.Checks != nil {
		b.checks = make([]checkFields, len(strict.Checks))
		for i, ch := range strict.Checks {
			b.checks[i] = fieldsOf(ch.Action, ch.Resource, ch.Target)
		}
	}
	return b, err
}

// jsonScanner parses the plain shape of the decision requests; every method
// returns false for anything else (see above).
type jsonScanner struct {
	s string
	i int
}

// newScanner scans body in place: the strings it returns share body's bytes.
func newScanner(body []byte) jsonScanner {
	return jsonScanner{s: unsafe.String(unsafe.SliceData(body), len(body))}
}

func (p *jsonScanner) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// next skips whitespace and consumes c.
func (p *jsonScanner) next(c byte) bool {
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end: only whitespace is left.
func (p *jsonScanner) end() bool {
	p.ws()
	return p.i == len(p.s)
}

// str reads a string without escape sequences or control characters.
func (p *jsonScanner) str() (string, bool) {
	if !p.next('"') {
		return "", false
	}
	start := p.i
	ascii := true
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			s := p.s[start:p.i]
			p.i++
			if !ascii && !utf8.ValidString(s) {
				return "", false // encoding/json would replace the bad bytes
			}
			return s, true
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		p.i++
	}
	return "", false
}

// uint reads an unsigned integer without sign, fraction, exponent or leading
// zeros, small enough for a uint64.
func (p *jsonScanner) uint() (uint64, bool) {
	p.ws()
	start := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	digits := p.s[start:p.i]
	if len(digits) == 0 || len(digits) > 19 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	if p.i < len(p.s) && (p.s[p.i] == '.' || p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

// key reads the next key of an object whose '{' is consumed, and the ':'
// after it; first is true for the object's first key. more is false at the
// object's end ('}' consumed); ok is false for anything but a key or the end.
func (p *jsonScanner) key(first bool) (k string, more, ok bool) {
	if p.next('}') {
		return "", false, true
	}
	if !first && !p.next(',') {
		return "", false, false
	}
	k, ok = p.str()
	return k, true, ok && p.next(':')
}

// once marks bit in *seen and refuses a key seen before.
func once(seen *uint8, bit uint8) bool {
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	return true
}

// resource parses the resource object into c.
func (p *jsonScanner) resource(c *checkFields) bool {
	if !p.next('{') {
		return false
	}
	c.hasResource = true
	var seen uint8
	for first := true; ; first = false {
		k, more, ok := p.key(first)
		if !ok || !more {
			return ok
		}
		switch k {
		case "type":
			c.typ, ok = p.str()
			ok = ok && once(&seen, 1)
		case "id":
			c.id, ok = p.str()
			ok = ok && once(&seen, 2)
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

// check parses the value of k, a key a decision and a batch check share,
// into c; known is false for another key.
func (p *jsonScanner) check(k string, seen *uint8, c *checkFields) (ok, known bool) {
	switch k {
	case "action":
		c.action, ok = p.str()
		return ok && once(seen, 1), true
	case "resource":
		return p.resource(c) && once(seen, 2), true
	case "target":
		c.target, ok = p.str()
		c.hasTarget = true
		return ok && once(seen, 4), true
	}
	return false, false
}

func (p *jsonScanner) decision(d *decisionBody) bool {
	if !p.next('{') {
		return false
	}
	var seen uint8
	for first := true; ; first = false {
		k, more, ok := p.key(first)
		if !ok || !more {
			return ok && p.end()
		}
		if ok, known := p.check(k, &seen, &d.check); known {
			if !ok {
				return false
			}
			continue
		}
		switch k {
		case "subject":
			d.subject, ok = p.str()
			ok = ok && once(&seen, 8)
		case "min_seq":
			d.minSeq, ok = p.uint()
			ok = ok && once(&seen, 16)
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

func (p *jsonScanner) batch(b *batchBody) bool {
	if !p.next('{') {
		return false
	}
	var seen uint8
	for first := true; ; first = false {
		k, more, ok := p.key(first)
		if !ok || !more {
			return ok && p.end()
		}
		switch k {
		case "subject":
			b.subject, ok = p.str()
			ok = ok && once(&seen, 1)
		case "min_seq":
			b.minSeq, ok = p.uint()
			ok = ok && once(&seen, 2)
		case "checks":
			ok = p.checks(b) && once(&seen, 4)
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

func (p *jsonScanner) checks(b *batchBody) bool {
	if !p.next('[') {
		return false
	}
	b.checks = make([]checkFields, 0, 16)
	if p.next(']') {
		return true
	}
	for {
		var c checkFields
		var seen uint8
		if !p.next('{') {
			return false
		}
		for first := true; ; first = false {
			k, more, ok := p.key(first)
			if !ok {
				return false
			}
			if !more {
				break
			}
			if ok, _ := p.check(k, &seen, &c); !ok {
				return false
			}
		}
		b.checks = append(b.checks, c)
		if p.next(',') {
			continue
		}
		return p.next(']')
	}
}

// appendReplyHead appends decisionResponse's JSON up to its decision id:
// {"allow":…,"reason":…,"decision_id":
func appendReplyHead(b []byte, allow bool, reason string) []byte {
	b = append(b, `{"allow":`...)
	b = strconv.AppendBool(b, allow)
	b = append(b, `,"reason":`...)
	b = jsonstr.Append(b, reason)
	return append(b, `,"decision_id":`...)
}

// appendReplyTail appends the rest after the decision id:
// ,"policy_revision":…,"applied_seq":…}
func appendReplyTail(b []byte, revision string, seq uint64) []byte {
	b = append(b, `,"policy_revision":`...)
	b = jsonstr.Append(b, revision)
	b = append(b, `,"applied_seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}')
}

// appendNext appends the next decision id (see next).
func (g *idGen) appendNext(b []byte) []byte {
	b = append(b, g.prefix...)
	return strconv.AppendUint(b, g.n.Add(1), 16)
}
