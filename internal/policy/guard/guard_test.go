package guard

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestCheckRange: the element count of numbers.range and range_step, at
// and over the limit, and operands left to the built-in's own errors.
func TestCheckRange(t *testing.T) {
	n := func(s string) *ast.Term { return ast.NumberTerm(json.Number(s)) }
	cases := []struct {
		name string
		args []*ast.Term
		ok   bool
	}{
		{"at the limit", []*ast.Term{n("1"), n("100000")}, true},
		{"one over", []*ast.Term{n("0"), n("100000")}, false},
		{"descending over", []*ast.Term{n("100000"), n("-1")}, false},
		{"step within", []*ast.Term{n("0"), n("999999"), n("10")}, true},
		{"step over", []*ast.Term{n("0"), n("1000000"), n("9")}, false},
		{"a float: the built-in's error", []*ast.Term{n("0.5"), n("1e12")}, true},
		{"a step of 0: the built-in's error", []*ast.Term{n("0"), n("1e12"), n("0")}, true},
		{"not a number", []*ast.Term{ast.StringTerm("a"), n("1e12")}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRange("numbers.range", tc.args)
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrBuiltinLimit) {
				t.Fatalf("checkRange: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestCheckCIDRExpand(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		ok   bool
	}{
		{"10.0.0.0/16", true},
		{"10.0.0.0/15", false},
		{"::/64", false},
		{"not a network: the built-in's error", true},
	} {
		t.Run(tc.cidr, func(t *testing.T) {
			err := checkCIDRExpand("net.cidr_expand", []*ast.Term{ast.StringTerm(tc.cidr)})
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrBuiltinLimit) {
				t.Fatalf("checkCIDRExpand: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestModule: the calls of the guarded built-ins are renamed, and each new
// name is declared, implemented and registered.
func TestModule(t *testing.T) {
	m := ast.MustParseModuleWithOpts("package x\n\na := numbers.range(1, 2)\n\nb := net.cidr_expand(\"10.0.0.0/30\")\n\nc := count([1])\n",
		ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err := Module(m); err != nil {
		t.Fatal(err)
	}
	got := m.String()
	for _, want := range []string{"crmauthz.numbers_range(1, 2)", `crmauthz.net_cidr_expand("10.0.0.0/30")`, "count([1])"} {
		if !strings.Contains(got, want) {
			t.Errorf("module %s: no %s", got, want)
		}
	}
	fns := Funcs()
	if len(Decls()) != 3 || len(fns) != 3 || len(RegoFuncs()) != 3 || len(TesterBuiltins()) != 3 {
		t.Fatalf("%d declarations, %d functions", len(Decls()), len(fns))
	}
	for _, d := range Decls() {
		if fns[d.Name] == nil {
			t.Errorf("%s is declared, not implemented", d.Name)
		}
	}
}
