package irvm

import (
	"cmp"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// nativeBuiltin returns the interpreter's own implementation of a built-in,
// nil when it calls topdown's. These are line-for-line copies of topdown's implementations (v1/topdown:
// comparison.go, aggregates.go, object.go) of the built-ins on every
// decision's path, without the call's setup (BuiltinContext, iterator).
// lazyArgs: `x in xs`, count(xs), object.get(obj, key, default) and
// object.union(a, b) (union.go) take
// their arguments unbuilt: they ask a Members xs, or a Lazy object's field
// (Lookup), without building it.
func nativeBuiltin(name string) (fn Native, lazyArgs bool) {
	switch name {
	case ast.Member.Name: // internal.member_2: x in xs
		return func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			x := materialize(a[0])
			if m, ok := a[1].Value.(Members); ok {
				return ast.InternedTerm(m.Contains(x)), nil
			}
			switch c := materialize(a[1]).Value.(type) {
			case ast.Set:
				return ast.InternedTerm(c.Contains(x)), nil
			case *ast.Array:
				return ast.InternedTerm(c.Until(x.Equal)), nil
			case ast.Object:
				return ast.InternedTerm(c.Until(func(_, v *ast.Term) bool { return x.Equal(v) })), nil
			}
			return ast.InternedTerm(false), nil
		}, true
	case ast.Equal.Name:
		return func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Equal(a[1])), nil
		}, false
	case ast.NotEqual.Name:
		return func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(!a[0].Equal(a[1])), nil
		}, false
	case ast.GreaterThan.Name:
		return func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Value.Compare(a[1].Value) > 0), nil
		}, false
	case ast.GreaterThanEq.Name:
		return func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Value.Compare(a[1].Value) >= 0), nil
		}, false
	case ast.LessThan.Name:
		return func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Value.Compare(a[1].Value) < 0), nil
		}, false
	case ast.LessThanEq.Name:
		return func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			return ast.InternedTerm(a[0].Value.Compare(a[1].Value) <= 0), nil
		}, false
	case ast.Count.Name:
		return func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			if m, ok := a[0].Value.(Members); ok {
				return ast.InternedTerm(m.Len()), nil
			}
			switch v := materialize(a[0]).Value.(type) {
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
		}, true
	case ast.ObjectUnion.Name: // union.go
		return objectUnion, true
	case ast.ObjectGet.Name:
		return func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			defaultValue, path := materialize(a[2]), materialize(a[1])
			if l, ok := a[0].Value.(Lazy); ok {
				_, array := l.(Members)
				if _, keys := path.Value.(*ast.Array); !array && !keys {
					// a Lazy object's field: asked, not built (the
					// value may be Lazy too)
					return cmp.Or(l.Lookup(path), defaultValue), nil
				}
			}
			curr := materialize(a[0])
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
		}, true
	}
	return nil, false
}

// vmBuiltinFor resolves a built-in the plan calls: the caller's natives
// (crm.user, crm.record, guarded built-ins), a copy of topdown's for the few
// on every decision's path, else topdown's own implementation. Built-ins whose result is not a function of their
// arguments, that need the evaluator (print, trace) or yield several values
// (relations) are not supported.
func vmBuiltinFor(name string, natives map[string]Native) (*vmBuiltin, error) {
	if n := natives[name]; n != nil {
		return &vmBuiltin{name: name, native: n}, nil
	}
	if native, lazyArgs := nativeBuiltin(name); native != nil {
		return &vmBuiltin{name: name, native: native, lazyArgs: lazyArgs}, nil
	}
	decl, ok := ast.BuiltinMap[name]
	if !ok {
		return nil, fmt.Errorf("%w: built-in %s", ErrUnsupported, name)
	}
	switch {
	case decl.Nondeterministic, decl.Relation:
		return nil, fmt.Errorf("%w: built-in %s", ErrUnsupported, name)
	}
	switch name {
	case "print", "internal.print", "trace", "opa.runtime", "rego.metadata.chain", "rego.metadata.rule", "internal.test_case":
		return nil, fmt.Errorf("%w: built-in %s", ErrUnsupported, name)
	}
	fn := topdown.GetBuiltin(name)
	if fn == nil {
		return nil, fmt.Errorf("%w: built-in %s has no implementation", ErrUnsupported, name)
	}
	return &vmBuiltin{name: name, fn: fn}, nil
}
