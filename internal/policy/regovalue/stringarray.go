package regovalue

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// StringArray is an array of strings that is a field of a fact (a user's
// location_ids, a record's followers) as ParseFact hands it to the IR
// interpreter: its strings, not yet ast terms. It is what internal/policy/irvm
// calls a lazy array (irvm.Lazy and irvm.Members, by their method sets):
// `x in a` (Contains) and count(a) (Len) read the strings; any other use
// builds the ast array once (Materialize), the value Parse makes, and uses
// that. Its ast.Value methods behave as that array's.
//
// A StringArray belongs to one evaluation: it is not safe for concurrent use.
type StringArray struct {
	elems []string
	arr   *ast.Term // the built array, once asked for
}

// Len is the number of strings.
func (a *StringArray) Len() int { return len(a.elems) }

// Contains tells whether x is one of the strings (x in a): only a string
// equals a string.
func (a *StringArray) Contains(x *ast.Term) bool {
	s, ok := x.Value.(ast.String)
	if !ok {
		return false
	}
	for _, e := range a.elems {
		if e == string(s) {
			return true
		}
	}
	return false
}

// Lookup is a[key]: the string at an integer index; nil otherwise.
func (a *StringArray) Lookup(key *ast.Term) *ast.Term { return a.Materialize().Get(key) }

// Materialize is the ast array of the strings (built once).
func (a *StringArray) Materialize() *ast.Term {
	if a.arr == nil {
		terms := make([]ast.Term, len(a.elems))
		ptrs := make([]*ast.Term, len(a.elems))
		for i, s := range a.elems {
			terms[i].Value = ast.String(s)
			ptrs[i] = &terms[i]
		}
		a.arr = ast.NewTerm(ast.NewArray(ptrs...))
	}
	return a.arr
}

func (a *StringArray) Compare(other ast.Value) int { return a.Materialize().Value.Compare(other) }
func (a *StringArray) Find(path ast.Ref) (ast.Value, error) {
	return a.Materialize().Value.Find(path)
}
func (a *StringArray) Hash() int         { return a.Materialize().Value.Hash() }
func (a *StringArray) IsGround() bool    { return true }
func (a *StringArray) String() string    { return a.Materialize().Value.String() }
func (a *StringArray) StringLength() int { return a.Materialize().Value.StringLength() }

// stringArray parses, at p.i (which is '['), an array whose elements are all
// strings into a StringArray, its strings and itself in the FactBuf while it
// lasts. ok is false, with p.i unchanged, when an element is not a string
// (the caller then parses the array as any other).
func (p *jsonParser) stringArray() (t *ast.Term, ok bool, err error) {
	start, first := p.i, len(p.factStrs)
	p.i++ // [
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return p.term(p.newStringArray(nil)), true, nil
	}
	for {
		p.skipSpace()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			p.i, p.factStrs = start, p.factStrs[:first]
			return nil, false, nil
		}
		s, err := p.string()
		if err != nil {
			return nil, false, err
		}
		p.factStrs = append(p.factStrs, s)
		p.strsHigh = max(p.strsHigh, len(p.factStrs))
		p.skipSpace()
		if p.i >= len(p.s) {
			return nil, false, p.errorf("unexpected end of input in an array")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			// A slice of its own length and capacity: later appends to
			// factStrs never write into it.
			elems := p.factStrs[first:len(p.factStrs):len(p.factStrs)]
			return p.term(p.newStringArray(elems)), true, nil
		default:
			return nil, false, p.errorf("expected ',' or ']'")
		}
	}
}

// newStringArray is a StringArray from the FactBuf's, or a new one.
func (p *jsonParser) newStringArray(elems []string) *StringArray {
	var a *StringArray
	if n := len(p.factArrs); n < cap(p.factArrs) {
		p.factArrs = p.factArrs[:n+1]
		a = &p.factArrs[n]
	} else {
		a = new(StringArray)
	}
	a.elems = elems
	return a
}
