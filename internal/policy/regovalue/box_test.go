package regovalue

import (
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// StringValue is the value ast.String(s) is, to every use OPA makes of a
// value (type switches, comparison, hashing, printing), without an
// allocation.
func TestStringValue(t *testing.T) {
	for _, s := range []string{"", "u-1", "location with spaces and é"} {
		t.Run(s, func(t *testing.T) {
			var box ast.String
			v := StringValue(&box, s)
			want := ast.String(s)
			got, ok := v.(ast.String)
			if !ok || got != want {
				t.Fatalf("StringValue(%q) = %#v", s, v)
			}
			if v.Compare(want) != 0 || v.Hash() != want.Hash() || v.String() != want.String() ||
				!ast.NewTerm(v).Equal(ast.StringTerm(s)) || ast.ValueName(v) != ast.ValueName(want) {
				t.Errorf("StringValue(%q) differs from ast.String", s)
			}
		})
	}
	var box ast.String
	var v ast.Value
	if n := testing.AllocsPerRun(100, func() { v = StringValue(&box, "u-1") }); n != 0 {
		t.Errorf("StringValue allocates %v times", n)
	}
	_ = v
}
