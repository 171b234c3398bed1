package irvm

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Object literals as records (record.go): each use of an object literal
// (a lookup, object.get, a comparison with a collection and with a scalar,
// membership, count, is_object, iteration, a set or an array holding it,
// nesting, a built-in's argument, a conflict of two values, `with input
// as`, the result) answers as topdown does and as the statements the
// record replaces do.

const recordModule = `package r

o := {"a": input.a, "b": input.b}

lookup := o.a

got := [object.get(o, "a", "none"), object.get(o, "z", "none"), object.get(o, 1, "none"), object.get(o, ["a"], "none")]

eq_obj if o == {"a": 1, "b": 2}

eq_scalar if o == input.c1

member if {"a": input.a, "b": input.b} in [{"a": 1, "b": 2}, {"a": "x", "b": "y"}]

value_in if 1 in o

n := count(o)

obj if is_object(o)

pairs contains [k, v] if some k, v in o

in_set := {o, {"a": input.a, "b": input.b}}

in_array := [o, {"c": o}]

nested := {"r": {"x": input.a}, "s": 1}.r.x

union := object.union(o, {"c": 3})

# object.union of records (union.go): overlapping keys, objects on both
# sides of a key (merged recursively), on one side, a key that is no string,
# more keys than a record holds, the input (not a record), a non-object
unions := [
	object.union({"a": input.a, "b": 1}, {"b": input.b, "c": 2}),
	object.union({"r": {"x": input.a, "y": 1}}, {"r": {"y": input.b}}),
	object.union({"r": {"x": input.a}}, {"r": input.b}),
	object.union({"r": input.b}, {"r": {"x": input.a}}),
	object.union({1: input.a}, {"b": input.b}),
	object.union({"k1": input.a, "k2": 2, "k3": 3, "k4": 4, "k5": 5}, {"k6": input.b, "k7": 7, "k8": 8, "k9": 9}),
	object.union(input, {"a": "over"}),
	object.union({"a": input.a}, input),
	object.union({}, {"a": input.a}),
	object.union({"a": input.a}, {}),
	object.union({"a": input.a}, {"a": input.a}),
	object.union(o, o),
]

union_error := object.union({"a": input.a}, input.b)

marshal := json.marshal(o)

whole := {"in": input, "k": "v"}

whole_a := whole["in"].a

conflict := {"a": input.a} if input.c1

conflict := {"a": input.b} if input.c2

p := input.a

with_record := x if x := p with input as {"a": input.b, "b": 0}

with_nested := x if x := o with input as {"a": {"q": input.a}, "b": [input.b]}

default lookup := "undefined"
default eq_obj := "undefined"
default eq_scalar := "undefined"
default member := "undefined"
default value_in := "undefined"
default n := "undefined"
default obj := "undefined"
default nested := "undefined"
default whole_a := "undefined"
default conflict := "undefined"
default with_record := "undefined"
default with_nested := "undefined"

decision := {"lookup": lookup, "got": got, "eq_obj": eq_obj, "eq_scalar": eq_scalar, "member": member,
	"value_in": value_in, "n": n, "obj": obj, "pairs": pairs, "in_set": in_set, "in_array": in_array,
	"nested": nested, "union": union, "marshal": marshal, "whole": whole, "whole_a": whole_a,
	"conflict": conflict, "with_record": with_record, "with_nested": with_nested, "o": o, "unions": unions}

with_error := {"u": union_error}
`

// recordInputs are inputs over the values that reach each rule's outcomes.
func recordInputs(n int) []*ast.Term {
	vals := []*ast.Term{nil, ast.NullTerm(), ast.BooleanTerm(true), ast.StringTerm("x"), ast.StringTerm("y"),
		ast.IntNumberTerm(1), ast.IntNumberTerm(2), ast.NumberTerm("1.0"), ast.ArrayTerm(ast.IntNumberTerm(1)),
		ast.ObjectTerm(ast.Item(ast.StringTerm("q"), ast.IntNumberTerm(1)))}
	rng := rand.New(rand.NewPCG(9, 9))
	out := []*ast.Term{nil, ast.MustParseTerm(`{"a": 1, "b": 2}`), ast.MustParseTerm(`{"a": "x", "b": "y", "c1": true}`),
		ast.MustParseTerm(`{"a": 1, "b": 1, "c1": true, "c2": true}`), ast.MustParseTerm(`{"a": 1, "b": 2, "c1": true, "c2": true}`)}
	for len(out) < n {
		var items [][2]*ast.Term
		for _, k := range []string{"a", "b", "c1", "c2"} {
			if v := vals[rng.IntN(len(vals))]; v != nil {
				items = append(items, [2]*ast.Term{ast.StringTerm(k), v})
			}
		}
		out = append(out, ast.ObjectTerm(items...))
	}
	return out
}

func TestRecordsAsTopdown(t *testing.T) {
	for query, records := range map[string]int{"x = data.r.decision": 20, "x = data.r.with_error": 2} {
		t.Run(query, func(t *testing.T) { recordsAsTopdown(t, query, records) })
	}
}

// recordsAsTopdown evaluates query on recordModule with the interpreter,
// whose plan must have at least records records, and with topdown.
func recordsAsTopdown(t testing.TB, query string, records int) {
	prog := recordProgram(t, query)
	if prog.ops()[opRecord] < records {
		t.Fatalf("%d object literals compiled as records, want at least %d", prog.ops()[opRecord], records)
	}
	var errs, defined int
	for _, input := range recordInputs(80) {
		got, gotErr := prog.EvalQuery(context.Background(), EvalOpts{Input: input})
		want, wantErr := topdownQuery(t, query, recordModule, input)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("input %v: IR %v (err %v), topdown %v (err %v)", input, got, gotErr, want, wantErr)
		}
		if wantErr != nil {
			var ta, tb *topdown.Error
			if !errors.As(gotErr, &ta) || !errors.As(wantErr, &tb) || ta.Code != tb.Code ||
				!strings.Contains(tb.Message, ta.Message) {
				t.Fatalf("input %v: IR error %v, topdown error %v", input, gotErr, wantErr)
			}
			errs++
			continue
		}
		g := jsonSet(t, got)
		if g.Compare(want) != 0 {
			t.Fatalf("input %v: IR %v, topdown %v", input, g, want)
		}
		if want.Len() > 0 {
			defined++
		}
	}
	if errs == 0 || defined == 0 {
		t.Fatalf("%d errors (conflicts, operands), %d defined: the inputs do not reach both", errs, defined)
	}
}

// recordProgram is the interpreter's program of query on recordModule.
func recordProgram(tb testing.TB, query string) *Program {
	tb.Helper()
	pol, err := planQuery(query, []string{recordModule}, nil, false)
	if err != nil {
		tb.Fatal(err)
	}
	prog, err := New(pol, DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	return prog
}

// TestRecordsAsStatements: the module's plan with records against the same
// plan without (every statement on its own), inputs built and unbuilt.
func TestRecordsAsStatements(t *testing.T) {
	fp := newFusedPair(t, planModules(t, map[string]string{"r.rego": recordModule}, "r/decision"), Config{Entrypoint: "r/decision"})
	if fp.fused.ops()[opRecord] == 0 || fp.plain.ops()[opRecord] != 0 {
		t.Fatalf("records: %d with fusion, %d without", fp.fused.ops()[opRecord], fp.plain.ops()[opRecord])
	}
	for i, input := range recordInputs(400) {
		if i%2 == 0 && input != nil {
			input = lazyTerm(input)
		}
		fp.same(t, input)
	}
}

// recordPlan is a plan of one block: stmts, then the object in local 2 is
// the result ({"result": local 2}, itself a record).
func recordPlan(strs []string, stmts ...ir.Stmt) *ir.Policy {
	static := &ir.Static{}
	for _, s := range append([]string{"result"}, strs...) {
		static.Strings = append(static.Strings, &ir.StringConst{Value: s})
	}
	stmts = append(stmts, &ir.MakeObjectStmt{Target: 9},
		&ir.ObjectInsertStmt{Key: ir.Operand{Value: ir.StringIndex(0)}, Value: ir.Operand{Value: ir.Local(2)}, Object: 9},
		&ir.ResultSetAddStmt{Value: 9})
	return &ir.Policy{Static: static, Plans: &ir.Plans{Plans: []*ir.Plan{{Name: "p", Blocks: []*ir.Block{{Stmts: stmts}}}}}}
}

// TestRecordRuns: what a record may replace, on plans made by hand (the
// planner makes none of these, so the compiler must check): a statement
// moved before the run must not change a value inserted before it, and a
// local inserted into outside the run is an ast object.
func TestRecordRuns(t *testing.T) {
	str := func(i int) ir.Operand { return ir.Operand{Value: ir.StringIndex(i)} }
	loc := func(l int) ir.Operand { return ir.Operand{Value: ir.Local(l)} }
	for _, c := range []struct {
		name    string
		pol     *ir.Policy
		want    string
		records int
	}{
		{"literal", recordPlan([]string{"a", "b"},
			&ir.AssignVarStmt{Source: str(1), Target: 5},
			&ir.MakeObjectStmt{Target: 2},
			&ir.ObjectInsertStmt{Key: str(1), Value: loc(5), Object: 2},
			&ir.MakeArrayStmt{Target: 6},
			&ir.ObjectInsertStmt{Key: str(2), Value: loc(6), Object: 2}),
			`{"a": "a", "b": []}`, 2},
		{"make over an inserted value", recordPlan([]string{"a", "b"},
			&ir.AssignVarStmt{Source: str(1), Target: 5},
			&ir.MakeObjectStmt{Target: 2},
			&ir.ObjectInsertStmt{Key: str(1), Value: loc(5), Object: 2},
			&ir.MakeArrayStmt{Target: 5},
			&ir.ObjectInsertStmt{Key: str(2), Value: loc(5), Object: 2}),
			`{"a": "a", "b": []}`, 1},
		{"insert outside the run", recordPlan([]string{"a", "b"},
			&ir.MakeObjectStmt{Target: 2},
			&ir.ObjectInsertStmt{Key: str(1), Value: str(1), Object: 2},
			&ir.BlockStmt{Blocks: []*ir.Block{{Stmts: []ir.Stmt{
				&ir.ObjectInsertStmt{Key: str(2), Value: str(2), Object: 2}}}}}),
			`{"a": "a", "b": "b"}`, 1},
		{"insert after the block", recordPlan([]string{"a", "b"},
			&ir.BlockStmt{Blocks: []*ir.Block{{Stmts: []ir.Stmt{
				&ir.MakeObjectStmt{Target: 2},
				&ir.ObjectInsertStmt{Key: str(1), Value: str(1), Object: 2}}}}},
			&ir.ObjectInsertStmt{Key: str(2), Value: str(2), Object: 2}),
			`{"a": "a", "b": "b"}`, 1},
		{"a key twice", recordPlan([]string{"a"},
			&ir.MakeObjectStmt{Target: 2},
			&ir.ObjectInsertStmt{Key: str(1), Value: ir.Operand{Value: ir.Bool(true)}, Object: 2},
			&ir.ObjectInsertStmt{Key: str(1), Value: str(1), Object: 2}),
			`{"a": "a"}`, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			prog, err := New(c.pol, Config{Entrypoint: "p"})
			if err != nil {
				t.Fatal(err)
			}
			if n := prog.ops()[opRecord]; n != c.records {
				t.Errorf("%d records compiled, want %d", n, c.records)
			}
			got, err := prog.Eval(context.Background(), EvalOpts{})
			if want := ast.MustParseTerm(c.want).Value; err != nil || got == nil || got.Compare(want) != 0 {
				t.Fatalf("got %v, %v; want %v", got, err, want)
			}
		})
	}
}

// TestRecordsInArena: the module's records taken from one Arena, reset
// after each evaluation and reused by the next (arena.go), answer as
// records of the heap, input after input; the arena holds them until Reset.
func TestRecordsInArena(t *testing.T) {
	for query, records := range map[string]int{"x = data.r.decision": 20, "x = data.r.with_error": 2} {
		t.Run(query, func(t *testing.T) {
			prog := recordProgram(t, query)
			var arena Arena
			most := 0 // the most records an evaluation took from the arena
			for i, input := range recordInputs(80) {
				want, wantErr := prog.EvalQuery(context.Background(), EvalOpts{Input: input})
				got, gotErr := prog.EvalQuery(context.Background(), EvalOpts{Input: input, Arena: &arena})
				if (gotErr != nil) != (wantErr != nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
					t.Fatalf("input %v: in the arena %v (err %v), on the heap %v (err %v)", input, got, gotErr, want, wantErr)
				}
				if g, w := ast.NewArray(got...), ast.NewArray(want...); g.Compare(w) != 0 {
					t.Fatalf("input %d %v: in the arena %v, on the heap %v", i, input, g, w)
				}
				most = max(most, arena.Len())
				arena.Reset()
				if arena.Len() != 0 {
					t.Fatalf("%d records in the arena after Reset", arena.Len())
				}
			}
			if most < min(records, maxArena) {
				t.Fatalf("at most %d records in the arena, want at least %d", most, min(records, maxArena))
			}
		})
	}
}
