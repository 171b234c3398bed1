package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/crmauthz/crmauthz/internal/policy/irvm"
	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
)

// The gateway's input as the interpreter sees it (decideHTTPVM), as
// vminput.go hands in a plain decision's: routes.rego reads input.subject,
// input.method, input.segments, input.body by lookups, which httpLazy
// answers from the HTTPInput without building the input object (an ast
// object: its keys hashed, an allocation per string); `count(rest)`,
// rest[0] and rest[2] == "followers" read the segments the same way
// (segArray). Any other use builds the value once, as the topdown path
// builds it (prepared.httpInput), and uses that. The storage is the pooled
// vmInput's: nothing of it outlives the decision (the HTTPDecision's
// strings are the caller's or the facts' copies).

// httpLazy is the input {"subject", "method", "path", "segments", "body"?}
// of data.crmauthz.http_decision (an irvm.Lazy).
type httpLazy struct {
	in    HTTPInput
	p     *prepared
	terms [4]ast.Term // subject, method, path, body
	boxes [3]ast.String
	segs  segArray
	segT  ast.Term  // Value: &segs
	top   ast.Term  // the input's term (Value: this httpLazy)
	obj   *ast.Term // built, once asked for
}

// set readies h for the request in (its strings' headers in h's boxes) and
// returns the input's term.
func (h *httpLazy) set(p *prepared, in HTTPInput) *ast.Term {
	h.in, h.p = in, p
	for i, s := range [3]string{in.Subject, in.Method, in.Path} {
		h.terms[i].Value = regovalue.StringValue(&h.boxes[i], s)
	}
	h.terms[3].Value = in.Body
	h.segs.set(in.Segments)
	h.segT.Value = &h.segs
	h.top.Value = h
	return &h.top
}

// reset drops what h holds of its request.
func (h *httpLazy) reset() {
	h.segs.reset()
	*h = httpLazy{segs: h.segs}
}

// Lookup is input[key].
func (h *httpLazy) Lookup(key *ast.Term) *ast.Term {
	k, ok := key.Value.(ast.String)
	if !ok {
		return nil
	}
	switch k {
	case "subject":
		return &h.terms[0]
	case "method":
		return &h.terms[1]
	case "path":
		return &h.terms[2]
	case "segments":
		return &h.segT
	case "body":
		if h.in.Body != nil {
			return &h.terms[3]
		}
	}
	return nil
}

// Materialize is the input's ast object.
func (h *httpLazy) Materialize() *ast.Term {
	if h.obj == nil {
		h.obj = ast.NewTerm(h.p.httpInput(h.in))
	}
	return h.obj
}

// The Value methods: the interpreter never hands the input to OPA's code
// (it materializes it first); should it escape, it behaves as its object.
func (h *httpLazy) Compare(other ast.Value) int          { return h.Materialize().Value.Compare(other) }
func (h *httpLazy) Find(path ast.Ref) (ast.Value, error) { return h.Materialize().Value.Find(path) }
func (h *httpLazy) Hash() int                            { return h.Materialize().Value.Hash() }
func (h *httpLazy) IsGround() bool                       { return true }
func (h *httpLazy) String() string                       { return h.Materialize().Value.String() }
func (h *httpLazy) StringLength() int                    { return h.Materialize().Value.StringLength() }

// segArray is input.segments: an array of strings (irvm.Members) whose
// elements are read without building it.
type segArray struct {
	elems []ast.Term
	boxes []ast.String
	arr   *ast.Term
}

func (a *segArray) set(segs []string) {
	if cap(a.elems) < len(segs) {
		a.elems, a.boxes = make([]ast.Term, len(segs)), make([]ast.String, len(segs))
	}
	a.elems, a.boxes = a.elems[:len(segs)], a.boxes[:len(segs)]
	for i, s := range segs {
		a.elems[i].Value = regovalue.StringValue(&a.boxes[i], s)
	}
}

func (a *segArray) reset() {
	clear(a.elems)
	clear(a.boxes)
	a.elems, a.boxes, a.arr = a.elems[:0], a.boxes[:0], nil
}

// Len is the number of segments.
func (a *segArray) Len() int { return len(a.elems) }

// Contains tells whether a segment equals x: only a string equals one.
func (a *segArray) Contains(x *ast.Term) bool {
	s, ok := x.Value.(ast.String)
	if !ok {
		return false
	}
	for _, b := range a.boxes {
		if b == s {
			return true
		}
	}
	return false
}

// Lookup is a[key]: the segment at an integer index (as an ast array
// answers it); nil otherwise.
func (a *segArray) Lookup(key *ast.Term) *ast.Term {
	n, ok := key.Value.(ast.Number)
	if !ok {
		return nil
	}
	i, ok := n.Int()
	if !ok || i < 0 || i >= len(a.elems) {
		return nil
	}
	return &a.elems[i]
}

// Materialize is the segments' ast array.
func (a *segArray) Materialize() *ast.Term {
	if a.arr == nil {
		ts := make([]*ast.Term, len(a.elems))
		for i := range a.elems {
			ts[i] = &a.elems[i]
		}
		a.arr = ast.NewTerm(ast.NewArray(ts...))
	}
	return a.arr
}

func (a *segArray) Compare(other ast.Value) int          { return a.Materialize().Value.Compare(other) }
func (a *segArray) Find(path ast.Ref) (ast.Value, error) { return a.Materialize().Value.Find(path) }
func (a *segArray) Hash() int                            { return a.Materialize().Value.Hash() }
func (a *segArray) IsGround() bool                       { return true }
func (a *segArray) String() string                       { return a.Materialize().Value.String() }
func (a *segArray) StringLength() int                    { return a.Materialize().Value.StringLength() }

var (
	_ irvm.Lazy    = (*httpLazy)(nil)
	_ irvm.Members = (*segArray)(nil)
)

// fields reads the fields of an object: an ast.Object's (Get) or a Lazy
// object's (Lookup: the interpreter's result unbuilt, an object literal,
// irvm's record). A struct of the two, not a method value (which would be
// an allocation per read object).
type fields struct {
	obj  ast.Object
	lazy irvm.Lazy
}

// lookupOf is the fields of *v; ok is false when v is no object. A Lazy
// array is materialized (into *v) so that errors name it as before.
func lookupOf(v *ast.Value) (f fields, ok bool) {
	switch o := (*v).(type) {
	case ast.Object:
		return fields{obj: o}, true
	case irvm.Members:
		*v = o.Materialize().Value
	case irvm.Lazy:
		return fields{lazy: o}, true
	}
	return fields{}, false
}

// get is the field k; nil when there is none.
func (f fields) get(k *ast.Term) *ast.Term {
	if f.lazy != nil {
		return f.lazy.Lookup(k)
	}
	return f.obj.Get(k)
}

// materializeValue is v, built when it is a Lazy.
func materializeValue(v ast.Value) ast.Value {
	if l, ok := v.(irvm.Lazy); ok {
		return l.Materialize().Value
	}
	return v
}
