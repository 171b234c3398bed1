package irvm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Regression tests for the disagreements OPA's compliance suite found
// (vmcompliance_test.go), each on the smallest policy showing it.

// vmQuery plans query over module and data and runs it with input (nil: no
// input); it returns the result set as a set of binding objects.
func vmQuery(tb testing.TB, module, query string, data map[string]any, input *ast.Term, lenient bool) (ast.Set, error) {
	tb.Helper()
	pol, err := planQuery(query, []string{module}, data, false)
	if err != nil {
		tb.Fatalf("planning %s: %v", query, err)
	}
	prog, err := New(pol, DefaultConfig())
	if err != nil {
		tb.Fatalf("compiling the plan of %s: %v", query, err)
	}
	if data != nil {
		prog.data = ast.NewTerm(ast.MustInterfaceToValue(data))
	}
	prog.lenient = lenient
	rs, err := prog.EvalQuery(context.Background(), EvalOpts{Input: input})
	if err != nil {
		return nil, err
	}
	return ast.NewSet(rs...), nil
}

func TestVMQueryRegressions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		module  string
		query   string
		data    map[string]any
		input   *ast.Term
		lenient bool
		want    string // the result set, or
		wantErr string // a substring of the error (a topdown error when set)
	}{
		// callFunc gave up on an undefined argument: every rule was
		// undefined when there was no input.
		{name: "rule without input", module: "package t\n\np := 1\n", query: "data.t.p = x", want: `{{"x": 1}}`},
		{name: "rule reading absent input", module: "package t\n\np := input.a\n", query: "data.t.p = x", want: `set()`},
		{name: "function without input", module: "package t\n\nf(a) := a + 1\n", query: "data.t.f(1) = x", want: `{{"x": 2}}`},
		{name: "rule with input", module: "package t\n\np := input.a\n", query: "data.t.p = x", input: ast.MustParseTerm(`{"a": 3}`), want: `{{"x": 3}}`},
		// a number key into data is its string, as in a storage path;
		// a copy of the document is an ordinary object
		{name: "integer key into data", module: "package t\n\np := data.nested[2]\n", query: "data.t.p = x",
			data: map[string]any{"nested": map[string]any{"2": "bar"}}, want: `{{"x": "bar"}}`},
		{name: "integer key at the top of data", module: "package t\n\np := data[2]\n", query: "data.t.p = x",
			data: map[string]any{"2": "bar"}, want: `{{"x": "bar"}}`},
		{name: "integer key into a copy of data", module: "package t\n\np := obj[2] if {\n\tobj := data.nested\n}\n", query: "data.t.p = x",
			data: map[string]any{"nested": map[string]any{"2": "bar"}}, want: `set()`},
		{name: "array index into data", module: "package t\n\np := data.arr[1]\n", query: "data.t.p = x",
			data: map[string]any{"arr": []any{"a", "b"}}, want: `{{"x": "b"}}`},
		// conflicts are worded as topdown words them
		{name: "rule conflict", module: "package t\n\np := 1 if true\n\np := 2 if true\n", query: "data.t.p = x",
			wantErr: "rule data.t.p produced conflicting values"},
		{name: "function conflict", module: "package t\n\nf(_) := 1\n\nf(_) := 2\n", query: "data.t.f(0) = x",
			wantErr: "function data.t.f produced conflicting values for the same inputs"},
		// a built-in's error aborts (strict, as every decision), or is
		// undefined when the program is lenient (topdown's default)
		{name: "builtin error strict", module: "package t\n\np := x if x := 1 / 0\n", query: "data.t.p = x", input: ast.MustParseTerm(`{}`), wantErr: "divide by zero"},
		{name: "builtin error lenient", module: "package t\n\np := x if x := 1 / 0\n", query: "data.t.p = x", input: ast.MustParseTerm(`{}`), lenient: true, want: `set()`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := vmQuery(t, tc.module, tc.query, tc.data, tc.input, tc.lenient)
			if tc.wantErr != "" {
				var te *topdown.Error
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &te) {
					t.Fatalf("got %v, %v; want the topdown error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := ast.MustParseTerm(tc.want).Value; got.Compare(want) != 0 {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}

// TestRuleEpilogue checks that the rules' functions are compiled without
// their epilogue blocks and entry reset (epilogue.go), and answer as
// before: defined, undefined, a function of its arguments, a default.
func TestRuleEpilogue(t *testing.T) {
	module := "package t\n\np := input.a if input.a > 1\n\nf(v) := v * 2 if v > 0\n\ndefault d := 7\n\nd := 8 if input.a == 8\n"
	pol, err := planQuery("[data.t.p, data.t.f(input.a), data.t.d] = x", []string{module}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := New(pol, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := range prog.funcs {
		if prog.funcs[i].epilogue {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no function compiled with its epilogue as Go code")
	}
	for _, tc := range []struct{ input, want string }{
		{`{"a": 3}`, `{{"x": [3, 6, 7]}}`},
		{`{"a": 8}`, `{{"x": [8, 16, 8]}}`},
		{`{"a": 1}`, `set()`}, // p undefined
		{`{"a": -1}`, `set()`},
	} {
		t.Run(tc.input, func(t *testing.T) {
			got, err := vmQuery(t, module, "[data.t.p, data.t.f(input.a), data.t.d] = x", nil, ast.MustParseTerm(tc.input), false)
			if err != nil {
				t.Fatal(err)
			}
			if want := ast.MustParseTerm(tc.want).Value; got.Compare(want) != 0 {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}
