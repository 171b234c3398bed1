package regovalue

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The parameters of a request a gateway asks about (policy.HTTPInput.Body), as the
// policy sees them (docs/policies.md, "The request's parameters"):
//
//   - every object key is folded (FoldKey): "assignedTo", "ASSIGNEDTO" and
//     "aſſignedTo" (U+017F) are all "assignedto", because Go's encoding/json
//     (and other case-insensitive decoders) fill the same struct field from
//     each of them; the policy compares folded keys with plain equality;
//   - a body that names one field twice (a duplicate key, or two keys that
//     fold to the same name) is refused as ambiguous: decoders keep the first
//     or the last, and the policy must not decide on another reading than the
//     upstream's;
//   - the query's parameters are merged in, as Rails and Laravel merge them
//     into the body's: "?assignedTo=u-9" sets assignedto like a body key.

// MaxBodyDepth is the deepest nesting of a body ParseBody accepts.
const MaxBodyDepth = 32

// BodyError is a request body the policy must not see: not JSON, not UTF-8,
// nested too deep (invalid_body), or a field given twice (Ambiguous:
// ambiguous_body).
type BodyError struct {
	Ambiguous bool
	Msg       string
}

func (e *BodyError) Error() string { return e.Msg }

// ParseBody converts a JSON request body for policy.HTTPInput.Body, with every
// object key folded (FoldKey). It refuses what two JSON decoders could read
// differently, so that the policy never decides on another reading of the
// body than the upstream's: invalid UTF-8, anything that is not exactly one
// JSON value, and (as ambiguous) two keys of one object that are equal once
// folded.
func ParseBody(b []byte) (ast.Value, error) {
	if !utf8.Valid(b) {
		return nil, &BodyError{Msg: "the body is not UTF-8"}
	}
	p := jsonParser{s: string(b), body: true}
	p.skipSpace()
	t, err := p.value(0)
	if err == nil {
		p.skipSpace()
		if p.i != len(p.s) {
			err = p.errorf("unexpected data after the JSON value")
		}
	}
	if err != nil {
		var be *BodyError
		if errors.As(err, &be) {
			return nil, be
		}
		return nil, &BodyError{Msg: "the body is not JSON: " + err.Error()}
	}
	return t.Value, nil
}

// bodyObject is jsonParser.object for a request body: keys are folded, and
// two keys that fold to the same name are an ambiguous body.
func (p *jsonParser) bodyObject(depth int) (*ast.Term, error) {
	p.i++ // {
	var (
		pairs [][2]*ast.Term
		orig  []string          // the keys as sent, for messages
		index map[string]string // folded key → as sent, once the object is large
	)
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
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
		fk := FoldKey(k)
		first, dup := "", false
		if index != nil {
			first, dup = index[fk]
		} else {
			for j := range pairs {
				if string(pairs[j][0].Value.(ast.String)) == fk {
					first, dup = orig[j], true
					break
				}
			}
		}
		if dup {
			return nil, ambiguousKeys(first, k, fk)
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
		pairs = append(pairs, [2]*ast.Term{ast.StringTerm(fk), val})
		orig = append(orig, k)
		if index != nil {
			index[fk] = k
		} else if len(pairs) > 16 { // a linear search would be quadratic
			index = make(map[string]string, 2*len(pairs))
			for j := range pairs {
				index[string(pairs[j][0].Value.(ast.String))] = orig[j]
			}
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
			return p.term(ast.NewObject(pairs...)), nil
		default:
			return nil, p.errorf("expected ',' or '}'")
		}
	}
}

func ambiguousKeys(first, second, folded string) *BodyError {
	if first == second {
		return &BodyError{Ambiguous: true, Msg: fmt.Sprintf("the body gives the key %q twice in one object", first)}
	}
	return &BodyError{Ambiguous: true, Msg: fmt.Sprintf(
		"the body gives the keys %q and %q in one object, which a case-insensitive decoder reads as one field (%q)",
		first, second, folded)}
}

// FoldKey returns the form of an object key the policy sees: each character
// replaced by one representative of its Unicode simple case folding orbit
// (the lower-case letter where the orbit has one: "K", "k" and U+212A KELVIN
// SIGN are all "k"; "S", "s" and U+017F LONG S are all "s"). Two keys are
// equal once folded exactly when strings.EqualFold says they are, which is
// how Go's encoding/json matches keys to struct fields.
func FoldKey(k string) string {
	for i := 0; i < len(k); i++ {
		if c := k[i]; c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') {
			return foldSlow(k, i)
		}
	}
	return k
}

func foldSlow(k string, i int) string {
	var b strings.Builder
	b.Grow(len(k))
	b.WriteString(k[:i])
	for _, r := range k[i:] {
		switch {
		case r < utf8.RuneSelf:
			if 'A' <= r && r <= 'Z' {
				r += 'a' - 'A'
			}
			b.WriteByte(byte(r))
		default:
			b.WriteRune(foldRune(r))
		}
	}
	return b.String()
}

// foldRune is the representative of r's simple folding orbit: the orbit's
// smallest rune, or its lower-case mapping when that is in the orbit too.
func foldRune(r rune) rune {
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	l := unicode.ToLower(m)
	if l == m {
		return m
	}
	for f := unicode.SimpleFold(m); f != m; f = unicode.SimpleFold(f) {
		if f == l {
			return l
		}
	}
	return m // e.g. U+0130, whose lower case "i" folds with "I", not with it
}

// ParseParams returns policy.HTTPInput.Body of a request: its JSON body (ParseBody;
// none when body is empty) merged with the parameters of its query (the raw
// query, without '?'), the way Rails and Laravel merge them into the
// parameters an action reads. Nil when there are neither.
//
// Query parameters are split at '&' and ';', decoded (+ is a space), and
// their names folded like body keys. "name=v" gives the string "v";
// "name[]=a&name[]=b" the list ["a", "b"]; other brackets ("name[k]=v") an
// object {"k": "v"} under name. A name given twice (but as name[]), in two
// forms, or both in the query and in the body is ambiguous. A body that is
// not an object is returned as it is (the policy refuses it where it matters).
func ParseParams(body []byte, query string) (ast.Value, error) {
	var v ast.Value
	if len(body) > 0 {
		var err error
		if v, err = ParseBody(body); err != nil {
			return nil, err
		}
	}
	var buf [4]queryParam // most queries have a parameter or two
	params, err := parseQuery(buf[:0], query)
	if err != nil || len(params) == 0 {
		return v, err
	}
	obj, ok := v.(ast.Object)
	switch {
	case v == nil:
		obj = ast.NewObject()
	case !ok:
		return v, nil
	}
	// the terms of the parameters' names and string values in one
	// allocation, the strings' headers in another (StringValue)
	n := 0
	for i := range params {
		n += 1 + params[i].strings()
	}
	ts := termSlab{terms: make([]ast.Term, n), boxes: make([]ast.String, n)}
	for i := range params {
		p := &params[i]
		k := ts.str(p.key)
		if obj.Get(k) != nil {
			return nil, &BodyError{Ambiguous: true, Msg: fmt.Sprintf(
				"the query parameter %q and a key of the body are one field (%q) to frameworks that merge them", p.name, p.key)}
		}
		obj.Insert(k, p.value(&ts))
	}
	return obj, nil
}

// termSlab hands out string terms from preallocated storage.
type termSlab struct {
	terms []ast.Term
	boxes []ast.String
}

// str is the term of the string s, the next of the slab.
func (ts *termSlab) str(s string) *ast.Term {
	t := &ts.terms[0]
	t.Value = StringValue(&ts.boxes[0], s)
	ts.terms, ts.boxes = ts.terms[1:], ts.boxes[1:]
	return t
}

// queryParam is one parameter of the query, all its occurrences together.
type queryParam struct {
	name string // as first given, decoded
	key  string // its folded name, without brackets
	kind byte   // 's' string, 'l' list (name[]), 'o' object (name[k])
	str  string
	list []string    // the values of name[]
	obj  [][2]string // the folded keys and values of name[k]
}

// strings is the number of string terms of the parameter's value.
func (q *queryParam) strings() int {
	switch q.kind {
	case 'l':
		return len(q.list)
	case 'o':
		return 2 * len(q.obj)
	}
	return 1
}

// value is the parameter's value, its strings' terms from ts.
func (q *queryParam) value(ts *termSlab) *ast.Term {
	switch q.kind {
	case 'l':
		elems := make([]*ast.Term, len(q.list))
		for i, s := range q.list {
			elems[i] = ts.str(s)
		}
		return ast.NewTerm(ast.NewArray(elems...))
	case 'o':
		pairs := make([][2]*ast.Term, len(q.obj))
		for i, kv := range q.obj {
			pairs[i] = [2]*ast.Term{ts.str(kv[0]), ts.str(kv[1])}
		}
		return ast.NewTerm(ast.NewObject(pairs...))
	}
	return ts.str(q.str)
}

// manyParams is how many parameters parseQuery looks up by a linear search;
// beyond, by a map.
const manyParams = 8

// parseQuery appends the parameters of query to out.
func parseQuery(out []queryParam, query string) ([]queryParam, error) {
	var at map[string]int // key → index in out, once there are many
	for query != "" {
		part := query
		if i := strings.IndexAny(query, "&;"); i >= 0 {
			part, query = query[:i], query[i+1:]
		} else {
			query = ""
		}
		rawName, rawVal, _ := strings.Cut(part, "=")
		name, val := queryUnescape(rawName), queryUnescape(rawVal)
		if name == "" {
			continue
		}
		if !utf8.ValidString(name) || !utf8.ValidString(val) {
			return nil, &BodyError{Msg: fmt.Sprintf("the query parameter %q is not UTF-8 once decoded", truncateName(rawName))}
		}
		base, sub, kind := name, "", byte('s')
		if i := strings.IndexByte(name, '['); i > 0 {
			base, sub = name[:i], name[i:]
			kind = 'o'
			if sub == "[]" {
				kind = 'l'
			}
		}
		key := FoldKey(base)
		j, seen := -1, false
		if at != nil {
			j, seen = at[key]
		} else {
			for i := range out {
				if out[i].key == key {
					j, seen = i, true
					break
				}
			}
		}
		if !seen {
			out = append(out, queryParam{name: name, key: key, kind: kind})
			j = len(out) - 1
			if at != nil {
				at[key] = j
			} else if len(out) > manyParams {
				at = make(map[string]int, 2*len(out))
				for i := range out {
					at[out[i].key] = i
				}
			}
		}
		p := &out[j]
		if seen && (p.kind != kind || kind == 's') {
			return nil, ambiguousParam(p.name, name, key)
		}
		switch kind {
		case 's':
			p.str = val
		case 'l':
			p.list = append(p.list, val)
		case 'o':
			sk := FoldKey(strings.TrimSuffix(strings.TrimPrefix(sub, "["), "]"))
			for _, kv := range p.obj {
				if kv[0] == sk {
					return nil, ambiguousParam(p.name, name, key)
				}
			}
			p.obj = append(p.obj, [2]string{sk, val})
		}
	}
	return out, nil
}

func ambiguousParam(first, second, key string) *BodyError {
	if first == second {
		return &BodyError{Ambiguous: true, Msg: fmt.Sprintf("the query gives the parameter %q twice", first)}
	}
	return &BodyError{Ambiguous: true, Msg: fmt.Sprintf(
		"the query gives the parameters %q and %q, which are one field (%q) to frameworks that merge them", first, second, key)}
}

// queryUnescape decodes a query component as HTML forms encode it; one that
// is not valid percent-encoding is taken as it is (as PHP and Rack do).
func queryUnescape(s string) string {
	if d, err := url.QueryUnescape(s); err == nil {
		return d
	}
	return s
}

func truncateName(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
