package irvm

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/crmauthz/crmauthz/policies"
)

// The fused statements (fuse.go) against the statements they replace: the
// same plan compiled with and without fusion must give the same value, or
// the same error, on every input — here the default policy on random
// inputs over the golden facts (known, unknown and failing users and
// records, actions and targets of every JSON type, the input and the facts
// unbuilt or built), and a module whose rules put each fused statement on
// its undefined, false, conflicting and failing paths.

var (
	crmUserDecl   = &ast.Builtin{Name: "crm.user", Decl: types.NewFunction(types.Args(types.A), types.A)}
	crmRecordDecl = &ast.Builtin{Name: "crm.record", Decl: types.NewFunction(types.Args(types.A, types.A), types.A)}
)

// planModules plans the files (name → Rego) for the entry point.
func planModules(tb testing.TB, files map[string]string, entry string) *ir.Policy {
	tb.Helper()
	decls := []*ast.Builtin{crmUserDecl, crmRecordDecl}
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, decls...)
	var mods []bundle.ModuleFile
	for name, src := range files {
		m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1, Capabilities: caps})
		if err != nil {
			tb.Fatal(err)
		}
		mods = append(mods, bundle.ModuleFile{URL: name, Path: name, Raw: []byte(src), Parsed: m})
	}
	pol, err := Plan(context.Background(), mods, entry, decls)
	if err != nil {
		tb.Fatal(err)
	}
	return pol
}

// defaultPolicyFiles are the default policy's Rego files, tests left out.
func defaultPolicyFiles(tb testing.TB) map[string]string {
	tb.Helper()
	files := map[string]string{}
	err := fs.WalkDir(policies.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".rego") || strings.HasSuffix(p, "_test.rego") {
			return err
		}
		src, err := fs.ReadFile(policies.FS, p)
		files[p] = string(src)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

// deepLazy is an object handed in unbuilt whose object fields are unbuilt
// too (as internal/policy's input and facts).
type deepLazy struct{ obj ast.Object }

func lazyTerm(t *ast.Term) *ast.Term {
	if obj, ok := t.Value.(ast.Object); ok {
		return ast.NewTerm(deepLazy{obj})
	}
	return t
}

func (l deepLazy) Lookup(key *ast.Term) *ast.Term {
	if v := l.obj.Get(key); v != nil {
		return lazyTerm(v)
	}
	return nil
}
func (l deepLazy) Materialize() *ast.Term               { return ast.NewTerm(l.obj) }
func (l deepLazy) Compare(o ast.Value) int              { return l.obj.Compare(o) }
func (l deepLazy) Find(path ast.Ref) (ast.Value, error) { return l.obj.Find(path) }
func (l deepLazy) Hash() int                            { return l.obj.Hash() }
func (l deepLazy) IsGround() bool                       { return true }
func (l deepLazy) String() string                       { return l.obj.String() }
func (l deepLazy) StringLength() int                    { return l.obj.StringLength() }

// factWorld is the golden facts (internal/policy/testdata/decisions.json)
// as natives: crm.user and crm.record; an id "boom" is a native's error.
type factWorld struct {
	users, records map[string]*ast.Term
	userIDs        []string
	recordKeys     [][2]string
	lazy           bool // hand the facts in unbuilt
}

func loadFactWorld(tb testing.TB) *factWorld {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "decisions.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var g struct{ Users, Records []json.RawMessage }
	if err := json.Unmarshal(b, &g); err != nil {
		tb.Fatal(err)
	}
	w := &factWorld{users: map[string]*ast.Term{}, records: map[string]*ast.Term{}}
	for _, u := range g.Users {
		t := ast.MustParseTerm(string(u))
		id := string(t.Get(ast.StringTerm("id")).Value.(ast.String))
		w.users[id] = t
		w.userIDs = append(w.userIDs, id)
	}
	for _, r := range g.Records {
		t := ast.MustParseTerm(string(r))
		k := [2]string{string(t.Get(ast.StringTerm("type")).Value.(ast.String)), string(t.Get(ast.StringTerm("id")).Value.(ast.String))}
		w.records[k[0]+"\x00"+k[1]] = t
		w.recordKeys = append(w.recordKeys, k)
	}
	return w
}

func (w *factWorld) natives() map[string]Native {
	fact := func(t *ast.Term) *ast.Term {
		if t != nil && w.lazy {
			return lazyTerm(t)
		}
		return t
	}
	str := func(t *ast.Term) (string, bool) {
		s, ok := materialize(t).Value.(ast.String)
		return string(s), ok
	}
	return map[string]Native{
		"crm.user": func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			id, ok := str(a[0])
			if id == "boom" {
				return nil, errors.New("the store failed")
			}
			if !ok {
				return nil, nil
			}
			return fact(w.users[id]), nil
		},
		"crm.record": func(_ *Call, a []*ast.Term) (*ast.Term, error) {
			typ, ok1 := str(a[0])
			id, ok2 := str(a[1])
			if id == "boom" {
				return nil, errors.New("the store failed")
			}
			if !ok1 || !ok2 {
				return nil, nil
			}
			return fact(w.records[typ+"\x00"+id]), nil
		},
	}
}

// randomValue is a value of any JSON type, or a string from strs.
func randomValue(rng *rand.Rand, strs []string) *ast.Term {
	switch rng.IntN(12) {
	case 0:
		return ast.NullTerm()
	case 1:
		return ast.BooleanTerm(rng.IntN(2) == 0)
	case 2:
		return ast.IntNumberTerm(rng.IntN(3))
	case 3:
		return ast.ArrayTerm(ast.StringTerm(strs[rng.IntN(len(strs))]))
	case 4:
		return ast.ObjectTerm(ast.Item(ast.StringTerm("id"), ast.StringTerm(strs[rng.IntN(len(strs))])))
	}
	return ast.StringTerm(strs[rng.IntN(len(strs))])
}

// randomDecisionInput is an input of the default policy: usually strings
// the facts know, sometimes anything, sometimes a field missing.
func (w *factWorld) randomDecisionInput(rng *rand.Rand) *ast.Term {
	users := append([]string{"ghost", "", "boom"}, w.userIDs...)
	actions := []string{"view", "edit", "delete", "change_owner", "add_follower", "remove_follower", "share", "", "VIEW"}
	field := func(strs []string) *ast.Term {
		if rng.IntN(8) == 0 {
			return randomValue(rng, strs)
		}
		return ast.StringTerm(strs[rng.IntN(len(strs))])
	}
	var items [][2]*ast.Term
	add := func(k string, v *ast.Term) {
		if rng.IntN(20) != 0 { // now and then missing
			items = append(items, [2]*ast.Term{ast.StringTerm(k), v})
		}
	}
	add("subject", field(users))
	add("action", field(actions))
	rk := w.recordKeys[rng.IntN(len(w.recordKeys))]
	typ, id := ast.StringTerm(rk[0]), ast.StringTerm(rk[1])
	switch rng.IntN(8) {
	case 0:
		id = field([]string{"nope", "boom", rk[1]})
	case 1:
		typ = field([]string{"invoice", "contact", "opportunity"})
	}
	add("resource", ast.ObjectTerm([2]*ast.Term{ast.StringTerm("type"), typ}, [2]*ast.Term{ast.StringTerm("id"), id}))
	if rng.IntN(2) == 0 {
		add("target", field(users))
	}
	return ast.ObjectTerm(items...)
}

// fusedPair is a plan compiled with and without fused statements.
type fusedPair struct{ fused, plain *Program }

func newFusedPair(tb testing.TB, pol *ir.Policy, cfg Config) fusedPair {
	tb.Helper()
	fused, err := newProgram(pol, cfg, false)
	if err != nil {
		tb.Fatal(err)
	}
	plain, err := newProgram(pol, cfg, true)
	if err != nil {
		tb.Fatal(err)
	}
	return fusedPair{fused, plain}
}

// ops counts the kinds of statement a program has.
func (p *Program) ops() map[vmOp]int {
	n := map[vmOp]int{}
	for _, s := range p.code {
		n[s.op]++
	}
	return n
}

// same evaluates input with both programs: the same value, or the same
// error.
func (fp fusedPair) same(tb testing.TB, input *ast.Term) (ast.Value, error) {
	tb.Helper()
	a, aerr := fp.fused.Eval(context.Background(), EvalOpts{Input: input})
	b, berr := fp.plain.Eval(context.Background(), EvalOpts{Input: input})
	if (aerr == nil) != (berr == nil) || (aerr != nil && aerr.Error() != berr.Error()) {
		tb.Fatalf("input %v: fused error %v, unfused %v", input, aerr, berr)
	}
	if (a == nil) != (b == nil) || (a != nil && a.Compare(b) != 0) {
		tb.Fatalf("input %v: fused %v, unfused %v", input, a, b)
	}
	return a, aerr
}

func TestFusedDefaultPolicy(t *testing.T) {
	w := loadFactWorld(t)
	fp := newFusedPair(t, planModules(t, defaultPolicyFiles(t), "crmauthz/decision"),
		Config{Entrypoint: "crmauthz/decision", Natives: w.natives()})
	got := fp.fused.ops()
	for _, op := range []vmOp{opDotEq, opDotCopy, opCallNF, opCallCopy, opBuiltinNF, opNotCallNF, opAssign2, opSetOnce, opElseChain} {
		if got[op] == 0 {
			t.Errorf("the default policy has no fused statement %d", op)
		}
	}
	rng := rand.New(rand.NewPCG(17, 1))
	reasons := map[string]int{}
	errs := 0
	for i := range 20000 {
		w.lazy = i%2 == 0
		in := w.randomDecisionInput(rng)
		if i%3 == 0 {
			in = lazyTerm(in)
		}
		v, err := fp.same(t, in)
		if err != nil {
			errs++
			continue
		}
		if obj, ok := v.(ast.Object); ok {
			reasons[obj.Get(ast.StringTerm("reason")).String()]++
		}
	}
	// the inputs reach every answer of the policy, and its errors
	if len(reasons) < 14 || errs == 0 {
		t.Fatalf("the inputs reached %d reasons (%v) and %d errors", len(reasons), reasons, errs)
	}
}

// fuseModule puts each fused statement on its paths: a lookup compared with
// constants of every type (numbers compare by value: 1 == 1.0), calls whose
// result is false, undefined, conflicting or an error, copies of lookups and
// calls, constants assigned twice (a conflict).
const fuseModule = `package f

eq_s if input.a == "x"
ne_s if input.a != "x"
eq_n if input.a == 1
eq_b if input.a == true
ne_b if input.a != false
eq_null if input.a == null

truthy := input.b
not_truthy if not truthy
cond if truthy
fn(x) := x.v
copied := y if {
	y := fn(input)
	z := y
	z != 7
}

c := "one" if input.c1
c := "two" if input.c2

n := count(input.n)
n_pos if count(input.n) > 0
sw if startswith(input.a, "x")

conflict := input.d if input.d
conflict := 3 if input.d

default eq_s := "undefined"
default ne_s := "undefined"
default eq_n := "undefined"
default eq_b := "undefined"
default ne_b := "undefined"
default eq_null := "undefined"
default not_truthy := "undefined"
default cond := "undefined"
default copied := "undefined"
default c := "undefined"
default n := "undefined"
default n_pos := "undefined"
default sw := "undefined"
default conflict := "undefined"

decision := [eq_s, ne_s, eq_n, eq_b, ne_b, eq_null, not_truthy, cond, copied, c, n, n_pos, sw, conflict]
`

func TestFusedStatements(t *testing.T) {
	fp := newFusedPair(t, planModules(t, map[string]string{"f.rego": fuseModule}, "f/decision"),
		Config{Entrypoint: "f/decision"})
	got := fp.fused.ops()
	for _, op := range []vmOp{opDotEq, opDotNe, opDotCopy, opCallNF, opCallCopy, opBuiltinNF, opNotCallNF, opSetOnce} {
		if got[op] == 0 {
			t.Errorf("the module has no fused statement %d", op)
		}
	}
	vals := []*ast.Term{nil, ast.NullTerm(), ast.BooleanTerm(true), ast.BooleanTerm(false), ast.StringTerm("x"), ast.StringTerm("y"),
		ast.IntNumberTerm(1), ast.NumberTerm("1.0"), ast.IntNumberTerm(7), ast.ArrayTerm(), ast.ArrayTerm(ast.StringTerm("x")),
		ast.ObjectTerm(), ast.ObjectTerm(ast.Item(ast.StringTerm("v"), ast.IntNumberTerm(7))),
		ast.ObjectTerm(ast.Item(ast.StringTerm("v"), ast.BooleanTerm(false)))}
	rng := rand.New(rand.NewPCG(3, 5))
	var errs, defined int
	for i := range 20000 {
		var items [][2]*ast.Term
		for _, k := range []string{"a", "b", "v", "c1", "c2", "n", "d"} {
			if v := vals[rng.IntN(len(vals))]; v != nil {
				if i%2 == 0 {
					v = lazyTerm(v)
				}
				items = append(items, [2]*ast.Term{ast.StringTerm(k), v})
			}
		}
		in := ast.ObjectTerm(items...)
		if i%3 == 0 {
			in = lazyTerm(in)
		}
		v, err := fp.same(t, in)
		switch {
		case err != nil:
			errs++
		case v != nil:
			defined++
		}
	}
	if errs == 0 || defined == 0 {
		t.Fatalf("%d errors, %d defined: the inputs do not reach both", errs, defined)
	}
}
