package regovalue

import (
	"encoding/json"
	"fmt"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The facts arrive as JSON bytes that are only valid inside the index's read
// transaction. They are converted straight to ast.Value by a small JSON parser
// instead of json.Unmarshal into a map followed by ast.InterfaceToValue, which
// would build every value twice:
//
//   - the input is copied once into a string, and every string of the result
//     that has no escape sequence is a substring of that copy (no allocation);
//   - the terms of one document come from one slice (one allocation per 16
//     terms instead of one per term);
//   - object keys and frequent values (field names, roles, record types,
//     booleans) are shared, immutable terms (see InternTable);
//   - objects are built with one ast.NewObject call from a stack buffer.
//
// The parser accepts exactly JSON (RFC 8259); duplicate object keys keep the
// last value, as encoding/json does.

// FactBuf is the storage ParseFact builds a fact in, owned by the caller (the
// IR interpreter's fact object holds both arrays, so that a fact costs one
// allocation, not one for its object, one for its pairs and one per 16
// terms).
type FactBuf struct {
	// Terms are handed out first; more are allocated when they run out.
	Terms []ast.Term
	// Pairs: the top-level object's pairs are appended to Pairs[:0] (a new
	// slice when they do not fit).
	Pairs [][2]*ast.Term
	// A field of the top-level object that is an array of strings is a
	// *StringArray: Arrays[:0] and Strings[:0] hold them while they last.
	Arrays  []StringArray
	Strings []string
	// Boxes hold the strings of the string terms (see StringValue) while
	// they last; more are boxed as Go boxes them.
	Boxes []ast.String
	// Used is set by ParseFact: how much of each array it used (so that
	// the caller clears only that much before reusing the storage).
	Used FactUse
	// InPlace: the strings of the result are cut from b itself, not from a
	// copy of it (no allocation). b must then stay valid and unchanged as
	// long as any of them is in use (see internal/policy's vmInput).
	InPlace bool
}

// FactUse counts the elements of a FactBuf's arrays ParseFact used, from
// the start of each.
type FactUse struct{ Terms, Arrays, Strings, Boxes int }

// ParseFact is Parse for the IR interpreter: it returns the key/value pairs
// of a top-level object, built in buf (the interpreter's lazy fact object
// reads its fields without building the ast object); a field that is an
// array of strings is a *StringArray, not an *ast.Array. isObject is false,
// with no pairs, for a document that is valid JSON but not an object.
// buf.Used tells what it used of buf, also on an error.
func ParseFact(b []byte, intern *InternTable, buf *FactBuf) (pairs [][2]*ast.Term, isObject bool, err error) {
	var str string
	if buf.InPlace {
		str = unsafe.String(unsafe.SliceData(b), len(b))
	} else {
		str = string(b)
	}
	p := jsonParser{s: str, intern: intern, pool: buf.Terms, fact: true, factPairs: buf.Pairs[:0],
		factArrs: buf.Arrays[:0], factStrs: buf.Strings[:0], boxes: buf.Boxes}
	_, err = p.document()
	buf.Used = FactUse{Terms: len(buf.Terms) - len(p.pool), Arrays: len(p.factArrs),
		Strings: min(p.strsHigh, cap(buf.Strings)), Boxes: len(buf.Boxes) - len(p.boxes)}
	if p.spilled { // buf.Terms ran out: p.pool is a chunk of the parser's own
		buf.Used.Terms = len(buf.Terms)
	}
	if err != nil {
		return nil, false, err
	}
	if !p.factDone {
		return nil, false, nil
	}
	return p.factPairs, true, nil
}

// maxJSONDepth bounds the nesting of the documents the parser accepts.
const maxJSONDepth = 64

// termChunk is how many terms the parser allocates at once.
const termChunk = 16

type jsonParser struct {
	s      string
	i      int
	intern *InternTable
	pool   []ast.Term
	// fact is set by ParseFact: the top-level object's pairs are appended to
	// factPairs (FactBuf.Pairs), not built into an ast object.
	fact      bool
	factPairs [][2]*ast.Term
	factDone  bool
	factArrs  []StringArray // storage of the StringArrays (FactBuf.Arrays)
	factStrs  []string      // storage of their strings (FactBuf.Strings)
	body      bool          // a request body: keys folded, ambiguous keys refused (see ParseBody)
	boxes     []ast.String  // where string terms keep their strings (FactBuf.Boxes)
	spilled   bool          // pool is no longer the caller's (FactBuf.Terms)
	strsHigh  int           // the most factStrs held at once
}

// checkDepth fails when a value nests deeper than the parser accepts.
func (p *jsonParser) checkDepth(depth int) error {
	switch {
	case p.body && depth > MaxBodyDepth:
		return &BodyError{Msg: fmt.Sprintf("the body is nested deeper than %d levels", MaxBodyDepth)}
	case depth > maxJSONDepth:
		return p.errorf("nested too deeply")
	}
	return nil
}

// Parse converts one JSON document to an ast.Value, with the shared terms of
// intern (nil: none). The result does not refer to b, so b may be reused or
// become invalid afterwards.
func Parse(b []byte, intern *InternTable) (ast.Value, error) {
	p := jsonParser{s: string(b), intern: intern}
	return p.document()
}

// document parses the one JSON value of p.s, with nothing after it.
func (p *jsonParser) document() (ast.Value, error) {
	p.skipSpace()
	t, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.i != len(p.s) {
		return nil, p.errorf("unexpected data after the JSON value")
	}
	return t.Value, nil
}

func (p *jsonParser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *jsonParser) term(v ast.Value) *ast.Term {
	if len(p.pool) == 0 {
		p.pool = make([]ast.Term, termChunk)
		p.spilled = true
	}
	t := &p.pool[0]
	p.pool = p.pool[1:]
	t.Value = v
	return t
}

// stringValue is s as a Value, its string in the next of p.boxes while
// they last.
func (p *jsonParser) stringValue(s string) ast.Value {
	if len(p.boxes) == 0 {
		return ast.String(s)
	}
	v := StringValue(&p.boxes[0], s)
	p.boxes = p.boxes[1:]
	return v
}

func (p *jsonParser) skipSpace() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value(depth int) (*ast.Term, error) {
	if p.i >= len(p.s) {
		return nil, p.errorf("unexpected end of input")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		s, err := p.string()
		if err != nil {
			return nil, err
		}
		if t := p.intern.Get(s); t != nil {
			return t, nil
		}
		return p.term(p.stringValue(s)), nil
	case c == 't':
		if err := p.literal("true"); err != nil {
			return nil, err
		}
		return ast.InternedTerm(true), nil
	case c == 'f':
		if err := p.literal("false"); err != nil {
			return nil, err
		}
		return ast.InternedTerm(false), nil
	case c == 'n':
		if err := p.literal("null"); err != nil {
			return nil, err
		}
		return ast.InternedNullTerm, nil
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		return nil, p.errorf("unexpected character %q", c)
	}
}

func (p *jsonParser) literal(lit string) error {
	if len(p.s)-p.i < len(lit) || p.s[p.i:p.i+len(lit)] != lit {
		return p.errorf("invalid literal")
	}
	p.i += len(lit)
	return nil
}

func (p *jsonParser) object(depth int) (*ast.Term, error) {
	if err := p.checkDepth(depth); err != nil {
		return nil, err
	}
	if p.body {
		return p.bodyObject(depth)
	}
	p.i++ // {
	var buf [12][2]*ast.Term
	pairs := buf[:0]
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		if p.fact && depth == 1 {
			return p.factTop(nil), nil
		}
		return p.term(ast.NewObject()), nil
	}
	for {
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return nil, p.errorf("expected an object key")
		}
		k, err := p.string()
		if err != nil {
			return nil, err
		}
		key := p.intern.Get(k)
		if key == nil {
			key = p.term(p.stringValue(k))
		}
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, p.errorf("expected ':'")
		}
		p.i++
		p.skipSpace()
		val, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		dup := false
		for j := range pairs {
			if pairs[j][0].Value.(ast.String) == ast.String(k) {
				pairs[j][1] = val // the last value wins, as in encoding/json
				dup = true
				break
			}
		}
		if !dup {
			pairs = append(pairs, [2]*ast.Term{key, val})
		}
		p.skipSpace()
		if p.i >= len(p.s) {
			return nil, p.errorf("unexpected end of input in an object")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			if p.fact && depth == 1 {
				return p.factTop(pairs), nil
			}
			return p.term(ast.NewObject(pairs...)), nil
		default:
			return nil, p.errorf("expected ',' or '}'")
		}
	}
}

// factTop keeps the pairs of a fact's top-level object in p.factPairs
// (they are in object's stack buffer); its term is a placeholder ParseFact
// does not return.
func (p *jsonParser) factTop(pairs [][2]*ast.Term) *ast.Term {
	p.factPairs = append(p.factPairs, pairs...)
	p.factDone = true
	return ast.InternedNullTerm
}

func (p *jsonParser) array(depth int) (*ast.Term, error) {
	if err := p.checkDepth(depth); err != nil {
		return nil, err
	}
	if p.fact && depth == 2 { // a field of a fact: strings are a StringArray
		if t, ok, err := p.stringArray(); ok || err != nil {
			return t, err
		}
	}
	p.i++ // [
	var buf [16]*ast.Term
	elems := buf[:0]
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return p.term(ast.NewArray()), nil
	}
	for {
		p.skipSpace()
		val, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		elems = append(elems, val)
		p.skipSpace()
		if p.i >= len(p.s) {
			return nil, p.errorf("unexpected end of input in an array")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			// ast.NewArray keeps the slice it is given: hand it its own.
			own := make([]*ast.Term, len(elems))
			copy(own, elems)
			return p.term(ast.NewArray(own...)), nil
		default:
			return nil, p.errorf("expected ',' or ']'")
		}
	}
}

// string parses a JSON string at p.i (which is '"'). Without escape sequences
// the result is a substring of the input copy.
func (p *jsonParser) string() (string, error) {
	start := p.i
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return p.s[start+1 : p.i-1], nil
		case c == '\\':
			return p.escapedString(start)
		case c < 0x20:
			return "", p.errorf("control character in a string")
		}
		p.i++
	}
	return "", p.errorf("unterminated string")
}

// escapedString finishes a string with escape sequences (rare in ids) with
// encoding/json, which knows every escape and surrogate pair.
func (p *jsonParser) escapedString(start int) (string, error) {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case '\\':
			p.i += 2
			continue
		case '"':
			p.i++
			var s string
			if err := json.Unmarshal([]byte(p.s[start:p.i]), &s); err != nil {
				p.i = start
				return "", p.errorf("bad string: %v", err)
			}
			return s, nil
		}
		p.i++
	}
	return "", p.errorf("unterminated string")
}

// number parses a JSON number and keeps its text, as ast.Number does.
func (p *jsonParser) number() (*ast.Term, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.s) && p.s[p.i] == '0':
		p.i++ // no leading zeros: 0, 0.5, but not 01
	case !p.digits():
		return nil, p.errorf("bad number")
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if !p.digits() {
			return nil, p.errorf("bad number")
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if !p.digits() {
			return nil, p.errorf("bad number")
		}
	}
	text := p.s[start:p.i]
	if t := ast.InternedIntNumberTermFromString(text); t != nil {
		return t, nil
	}
	return p.term(ast.Number(text)), nil
}

func (p *jsonParser) digits() bool {
	start := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	return p.i > start
}
