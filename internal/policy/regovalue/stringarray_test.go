package regovalue

import (
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A StringArray answers as the ast array of its strings: membership, length,
// index lookups and every ast.Value method.
func TestStringArray(t *testing.T) {
	for _, elems := range [][]string{nil, {"a"}, {"u-1", "u-2", "é"}} {
		a := &StringArray{elems: elems}
		terms := make([]*ast.Term, len(elems))
		for i, s := range elems {
			terms[i] = ast.StringTerm(s)
		}
		want := ast.NewArray(terms...)
		t.Run(want.String(), func(t *testing.T) {
			if a.Len() != want.Len() {
				t.Errorf("Len = %d, want %d", a.Len(), want.Len())
			}
			for _, x := range []*ast.Term{ast.StringTerm("a"), ast.StringTerm("u-2"), ast.StringTerm("é"), ast.StringTerm("b"),
				ast.IntNumberTerm(1), ast.BooleanTerm(true), ast.NullTerm(), ast.ArrayTerm(ast.StringTerm("a"))} {
				if got, exp := a.Contains(x), want.Until(x.Equal); got != exp {
					t.Errorf("Contains(%v) = %v, want %v", x, got, exp)
				}
			}
			for _, k := range []*ast.Term{ast.IntNumberTerm(0), ast.IntNumberTerm(2), ast.IntNumberTerm(-1), ast.IntNumberTerm(3),
				ast.FloatNumberTerm(0.5), ast.StringTerm("0")} {
				got := a.Lookup(k)
				var exp *ast.Term
				if n, ok := k.Value.(ast.Number); ok {
					if i, ok := n.Int(); ok && i >= 0 && i < want.Len() {
						exp = want.Elem(i)
					}
				}
				if (got == nil) != (exp == nil) || (got != nil && !got.Equal(exp)) {
					t.Errorf("Lookup(%v) = %v, want %v", k, got, exp)
				}
			}
			if a.Compare(want) != 0 || a.Hash() != want.Hash() || a.String() != want.String() ||
				a.StringLength() != want.StringLength() || !a.IsGround() {
				t.Errorf("value methods differ from %v", want)
			}
			first, second := a.Materialize(), a.Materialize()
			if first != second {
				t.Error("Materialize builds the array twice")
			}
			if got := a.Materialize().Value; got.Compare(want) != 0 {
				t.Errorf("Materialize = %v, want %v", got, want)
			}
		})
	}
}
