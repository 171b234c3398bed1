package irvm

import (
	"context"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// withModule uses `with input as` (a WithStmt of the whole input) where its
// memo frame matters: a rule of input memoized before, inside and after a
// with, a with in an iteration, nested withs, a with whose body is
// undefined or fails, and an evaluation without input.
const withModule = `package t

p := input.a

f(x) := x + input.a

# p before, inside and after a with: each sees its own input
around := [p, r, p] if r := p with input as {"a": 2}

# the rest of the body after a with sees the outer input (and runs without one)
after := [x, y] if {
	x := p with input as {"a": 5}
	y := object.get({"p": p}, "p", "none")
}

alone := x if x := p with input as {"a": 3}

each := [q | some i in [1, 2, 3]; q := p with input as {"a": i}]

inner := [p, y] if y := p with input as {"a": 8}

nested := x if x := inner with input as {"a": 7}

fn := x if x := f(1) with input as {"a": 10}

undefined_inside := 1 if not p with input as {}

fails_inside := x if x := (1 / p) with input as {"a": 0}

# a body whose with is undefined leaves the input as it was for the next
multi contains x if x := p with input as {"b": 2}

multi contains p

twice := [x, y, p] if {
	x := p with input as {"a": 11}
	y := p with input as {"a": 12}
}
`

func TestWithWholeInput(t *testing.T) {
	rules := []string{"around", "after", "alone", "each", "inner", "nested", "fn", "undefined_inside", "fails_inside", "multi", "twice"}
	inputs := []*ast.Term{nil, ast.MustParseTerm(`{"a": 1}`), ast.MustParseTerm(`{"a": "s"}`), ast.MustParseTerm(`{"b": 1}`)}
	for _, rule := range rules {
		for _, input := range inputs {
			name := rule + "/no input"
			if input != nil {
				name = rule + "/" + input.String()
			}
			t.Run(name, func(t *testing.T) {
				query := "x = data.t." + rule
				pol, err := planQuery(query, []string{withModule}, nil, false)
				if err != nil {
					t.Fatal(err)
				}
				prog, err := New(pol, DefaultConfig())
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if prog.ops()[opWith] == 0 {
					t.Fatal("no with statement compiled")
				}
				got, gotErr := prog.EvalQuery(context.Background(), EvalOpts{Input: input})
				want, wantErr := topdownQuery(t, query, withModule, input)
				if (gotErr != nil) != (wantErr != nil) {
					t.Fatalf("IR %v (err %v), topdown %v (err %v)", got, gotErr, want, wantErr)
				}
				if wantErr != nil {
					if !strings.Contains(gotErr.Error(), "divide by zero") {
						t.Fatalf("IR error %v, topdown error %v", gotErr, wantErr)
					}
					return
				}
				g := jsonSet(t, got)
				if g.Compare(want) != 0 {
					t.Fatalf("IR %v, topdown %v", g, want)
				}
			})
		}
	}
	// the memo frames: p is memoized outside; inside the with it is
	// computed again, and after it the outer value is back
	got, err := vmQuery(t, withModule, "x = data.t.around", nil, ast.MustParseTerm(`{"a": 1}`), false)
	if want := ast.MustParseTerm(`{{"x": [1, 2, 1]}}`).Value; err != nil || got.Compare(want) != 0 {
		t.Fatalf("around = %v, %v; want %v", got, err, want)
	}
}

// TestWithPathUnsupported: a with of a part of a document is left to
// topdown (ErrUnsupported).
func TestWithPathUnsupported(t *testing.T) {
	pol, err := planQuery("x = data.t.q", []string{"package t\n\np := input.a.b\n\nq := x if x := p with input.a as {\"b\": 1}\n"}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(pol, DefaultConfig()); err == nil || !strings.Contains(err.Error(), "with of a path") {
		t.Fatalf("New = %v, want ErrUnsupported for a with of a path", err)
	}
}

// jsonSet is the interpreter's result set as topdown's bindings are: as
// JSON (a set is an array).
func jsonSet(tb testing.TB, rs []*ast.Term) ast.Set {
	tb.Helper()
	g := ast.NewSet()
	for _, r := range rs {
		js, err := ast.JSON(r.Value)
		if err != nil {
			tb.Fatal(err)
		}
		g.Add(ast.NewTerm(ast.MustInterfaceToValue(js)))
	}
	return g
}

// topdownQuery is topdown's result set of query, as binding objects (strict
// built-in errors, as the engine evaluates).
func topdownQuery(tb testing.TB, query, module string, input *ast.Term) (ast.Set, error) {
	tb.Helper()
	opts := []func(*rego.Rego){rego.Query(query), rego.Module("t.rego", module), rego.StrictBuiltinErrors(true),
		rego.SetRegoVersion(ast.RegoV1)}
	if input != nil {
		opts = append(opts, rego.ParsedInput(input.Value))
	}
	rs, err := rego.New(opts...).Eval(context.Background())
	if err != nil {
		return nil, err
	}
	set := ast.NewSet()
	for _, r := range rs {
		v, err := ast.InterfaceToValue(map[string]any(r.Bindings))
		if err != nil {
			tb.Fatal(err)
		}
		set.Add(ast.NewTerm(v))
	}
	return set, nil
}
