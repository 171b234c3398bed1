package policy

import (
	"cmp"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// nativeBuiltin returns the interpreter's own implementation of a built-in,
// nil when it calls topdown's. Besides crm.user and crm.record, these are
// line-for-line copies of topdown's implementations (v1/topdown:
// comparison.go, aggregates.go, object.go) of the built-ins on every
// decision's path, without the call's setup (BuiltinContext, iterator).
func nativeBuiltin(name string) func(*vmState, []*ast.Term) (*ast.Term, error) {
	switch name {
	case BuiltinUser:
		return vmUser
	case BuiltinRecord:
		return vmRecord
	case ast.Member.Name: // internal.member_2: x in xs
		return func(_ *vmState, a []*ast.Term) (*ast.Term, error) {
			switch c := a[1].Value.(type) {
			case ast.Set:
				return ast.InternedTerm(c.Contains(a[0])), nil
			case *ast.Array:
				return ast.InternedTerm(c.Until(a[0].Equal)), nil
			case ast.Object:
				return ast.InternedTerm(c.Until(func(_, v *ast.Term) bool { return a[0].Equal(v) })), nil
			}
			return ast.InternedTerm(false), nil
		}
	case ast.Equal.Name:
		return func(_ *vmState, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Equal(a[1])), nil
		}
	case ast.NotEqual.Name:
		return func(_ *vmState, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(!a[0].Equal(a[1])), nil
		}
	case ast.GreaterThan.Name:
		return func(_ *vmState, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Value.Compare(a[1].Value) > 0), nil
		}
	case ast.GreaterThanEq.Name:
		return func(_ *vmState, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Value.Compare(a[1].Value) >= 0), nil
		}
	case ast.LessThan.Name:
		return func(_ *vmState, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Value.Compare(a[1].Value) < 0), nil
		}
	case ast.LessThanEq.Name:
		return func(_ *vmState, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Value.Compare(a[1].Value) <= 0), nil
		}
	case ast.Count.Name:
		return func(_ *vmState, a []*ast.Term) (*ast.Term, error) {
			switch v := a[0].Value.(type) {
			case *ast.Array:
				return ast.InternedTerm(v.Len()), nil
			case ast.Object:
				return ast.InternedTerm(v.Len()), nil
			case ast.Set:
				return ast.InternedTerm(v.Len()), nil
			case ast.String:
				return ast.InternedTerm(len([]rune(v))), nil
			}
			return nil, builtins.NewOperandTypeErr(1, a[0].Value, "array", "object", "set", "string")
		}
	case ast.ObjectGet.Name:
		return func(_ *vmState, a []*ast.Term) (*ast.Term, error) {
			defaultValue, path, curr := a[2], a[1], a[0]
			object, err := builtins.ObjectOperand(curr.Value, 1)
			if err != nil {
				return nil, err
			}
			arr, ok := path.Value.(*ast.Array)
			if !ok {
				return cmp.Or(object.Get(path), defaultValue), nil
			}
			for i := range arr.Len() {
				if curr = curr.Get(arr.Elem(i)); curr == nil {
					break
				}
			}
			return cmp.Or(curr, defaultValue), nil
		}
	}
	return nil
}

// vmUser is crm.user(id) (see builtinImpl.user).
func vmUser(st *vmState, a []*ast.Term) (*ast.Term, error) {
	s, ok := a[0].Value.(ast.String)
	if !ok {
		return nil, nil // not a string: no such user
	}
	if st.facts == nil {
		return nil, ErrNoFacts
	}
	js, err := st.facts.UserJSON(string(s))
	if err != nil {
		return nil, fmt.Errorf("reading user %q: %w", string(s), err)
	}
	return vmFact(js, st.intern, "user", string(s))
}

// vmRecord is crm.record(type, id) (see builtinImpl.record).
func vmRecord(st *vmState, a []*ast.Term) (*ast.Term, error) {
	t, ok := a[0].Value.(ast.String)
	if !ok {
		return nil, nil
	}
	s, ok := a[1].Value.(ast.String)
	if !ok {
		return nil, nil
	}
	if st.facts == nil {
		return nil, ErrNoFacts
	}
	js, err := st.facts.RecordJSON(string(t), string(s))
	if err != nil {
		return nil, fmt.Errorf("reading record %s/%s: %w", string(t), string(s), err)
	}
	return vmFact(js, st.intern, "record", string(s))
}

// vmFact converts the JSON of a fact for the interpreter (convertFact with a
// *factObject at the top); nil for absent.
func vmFact(js []byte, intern internTable, what, id string) (*ast.Term, error) {
	if js == nil {
		return nil, nil
	}
	v, err := jsonToFact(js, intern)
	if err != nil {
		return nil, fmt.Errorf("decoding %s %q: %w", what, id, err)
	}
	if _, ok := v.(*factObject); !ok {
		return nil, fmt.Errorf("decoding %s %q: not a JSON object", what, id)
	}
	return ast.NewTerm(v), nil
}

// factObject is a fact's top-level object as the interpreter holds it: its
// pairs, in a slice. A lookup (record.owner) reads them directly; any other
// use goes through vmState.materialize, which builds the ast object once
// (ast.NewObject: the same value convertFact makes) and uses that.
type factObject struct {
	pairs [][2]*ast.Term
	obj   *ast.Term
}

func newFactObject(pairs [][2]*ast.Term) *factObject {
	return &factObject{pairs: append([][2]*ast.Term(nil), pairs...)}
}

// get is obj[key] (keys are strings, each once).
func (f *factObject) get(key *ast.Term) *ast.Term {
	k, ok := key.Value.(ast.String)
	if !ok {
		return nil
	}
	for i := range f.pairs {
		if f.pairs[i][0].Value.(ast.String) == k {
			return f.pairs[i][1]
		}
	}
	return nil
}

func (f *factObject) object() *ast.Term {
	if f.obj == nil {
		f.obj = ast.NewTerm(ast.NewObject(f.pairs...))
	}
	return f.obj
}

// The Value methods: the interpreter never hands a factObject to OPA's code
// (it materializes it first); should one escape, it behaves as its object.
func (f *factObject) Compare(other ast.Value) int          { return f.object().Value.Compare(other) }
func (f *factObject) Find(path ast.Ref) (ast.Value, error) { return f.object().Value.Find(path) }
func (f *factObject) Hash() int                            { return f.object().Value.Hash() }
func (f *factObject) IsGround() bool                       { return true }
func (f *factObject) String() string                       { return f.object().Value.String() }
func (f *factObject) StringLength() int                    { return f.object().Value.StringLength() }
