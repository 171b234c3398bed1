package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/crmauthz/crmauthz/internal/policy/irvm"
	"github.com/crmauthz/crmauthz/policies"
)

// The IR interpreter must answer exactly as topdown does: the same value, or
// an error where topdown has one. These tests run both on the same policies,
// facts and inputs and compare.

// enginePair is one policy under both evaluators, decision cache off.
type enginePair struct {
	ir, td *Engine
}

func newEnginePair(tb testing.TB, cfg Config) enginePair {
	tb.Helper()
	cfg.DecisionCacheSlots = -1
	cfg.Evaluator = EvaluatorIR
	ir, err := New(cfg)
	if err != nil {
		tb.Fatalf("IR engine: %v", err)
	}
	cfg.Evaluator = EvaluatorTopdown
	td, err := New(cfg)
	if err != nil {
		tb.Fatalf("topdown engine: %v", err)
	}
	if ev, _ := ir.Evaluator(); ev != EvaluatorIR {
		tb.Fatalf("IR engine evaluates with %s", ev)
	}
	if ev, _ := td.Evaluator(); ev != EvaluatorTopdown {
		tb.Fatalf("topdown engine evaluates with %s", ev)
	}
	return enginePair{ir: ir, td: td}
}

// rawDecision is the value of data.crmauthz.decision, or the error.
func rawDecision(e *Engine, facts Facts, in Input) (ast.Value, error) {
	p := e.cur.Load()
	ctx := context.Background()
	if pl := p.vm.Load(); pl != nil && pl.prog != nil {
		return p.evalVM(ctx, pl.prog, p.getVMInput(in, facts, pl.factsInPlace)) // never pooled again: the value may refer to it
	}
	td, err := p.topdown(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := p.eval(ctx, td.decision, p.decisionOpts, facts, p.input(in))
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	if len(rs) > 1 {
		return nil, fmt.Errorf("%d results", len(rs))
	}
	v, _ := rs[0].Expressions[0].Value.(ast.Value)
	return v, nil
}

// same checks that both evaluators give the same value (or both an error,
// of the same topdown error code when topdown gives one).
func (ep enginePair) same(t testing.TB, facts Facts, in Input) {
	t.Helper()
	a, aerr := rawDecision(ep.ir, facts, in)
	b, berr := rawDecision(ep.td, facts, in)
	if (aerr != nil) != (berr != nil) {
		t.Fatalf("input %+v: IR %v (err %v), topdown %v (err %v)", in, a, aerr, b, berr)
	}
	if aerr != nil {
		var ta, tb *topdown.Error
		if errors.As(berr, &tb) && (!errors.As(aerr, &ta) || ta.Code != tb.Code) {
			t.Fatalf("input %+v: IR error %v, topdown error %v", in, aerr, berr)
		}
		return
	}
	if (a == nil) != (b == nil) || (a != nil && a.Compare(b) != 0) {
		t.Fatalf("input %+v: IR %v, topdown %v", in, a, b)
	}
	// and through Decide, as the server asks
	da, _, aerr := ep.ir.Decide(context.Background(), facts, in)
	db, _, berr := ep.td.Decide(context.Background(), facts, in)
	if da != db || (aerr == nil) != (berr == nil) {
		t.Fatalf("input %+v: Decide IR %+v %v, topdown %+v %v", in, da, aerr, db, berr)
	}
}

func TestVMGolden(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	ep := newEnginePair(t, Config{FS: policies.FS})
	if !ep.ir.cur.Load().vm.Load().prog.DirectCall() {
		t.Fatal("the plan of data.crmauthz.decision is not run as a direct call")
	}
	for _, c := range g.Cases {
		ep.same(t, facts, c.input())
		d, _, err := ep.ir.Decide(context.Background(), facts, c.input())
		if err != nil || d.Allow != c.Allow || d.Reason != c.Reason {
			t.Errorf("%s: %+v %v, want %v %s", c.Name, d, err, c.Allow, c.Reason)
		}
	}
}

// TestVMPolicyVariants: the default policy with its switches changed.
func TestVMPolicyVariants(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	for name, cfg := range map[string]string{
		"followers_can_delete":           "package crmauthz.config\n\nfollowers_can_delete := true\n\nfollowers_can_manage_followers := false\n\nmax_followers := 10\n",
		"followers_can_manage_followers": "package crmauthz.config\n\nfollowers_can_delete := false\n\nfollowers_can_manage_followers := true\n\nmax_followers := 10\n",
		"max_followers_1":                "package crmauthz.config\n\nfollowers_can_delete := false\n\nfollowers_can_manage_followers := false\n\nmax_followers := 1\n",
		"max_followers_string":           "package crmauthz.config\n\nfollowers_can_delete := false\n\nfollowers_can_manage_followers := false\n\nmax_followers := \"10\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			files := defaultPolicyFiles(t, false)
			files["config.rego"] = cfg
			dir := t.TempDir()
			writeFiles(t, dir, files)
			ep := newEnginePair(t, Config{Dir: dir})
			for _, c := range g.Cases {
				ep.same(t, facts, c.input())
			}
			for _, in := range randomInputs(g, 2000, 1) {
				ep.same(t, facts, in)
			}
		})
	}
}

// randomInputs draws inputs over the golden facts: known and unknown
// subjects, records, targets and actions.
func randomInputs(g golden, n int, seed uint64) []Input {
	rng := rand.New(rand.NewPCG(seed, 7))
	var users []string
	for _, u := range g.Users {
		var k struct{ ID string }
		_ = json.Unmarshal(u, &k)
		users = append(users, k.ID)
	}
	users = append(users, "ghost", "", "f-1", "u-FOL")
	type rec struct{ typ, id string }
	var recs []rec
	for _, r := range g.Records {
		var k struct{ Type, ID string }
		_ = json.Unmarshal(r, &k)
		recs = append(recs, rec{k.Type, k.ID})
	}
	recs = append(recs, rec{"contact", "nope"}, rec{"invoice", "c-1"}, rec{"opportunity", "c-1"})
	actions := []string{"view", "edit", "delete", "change_owner", "add_follower", "remove_follower", "share", "", "VIEW"}
	out := make([]Input, n)
	for i := range out {
		r := recs[rng.IntN(len(recs))]
		in := Input{Subject: users[rng.IntN(len(users))], Action: actions[rng.IntN(len(actions))], ResourceType: r.typ, ResourceID: r.id}
		if rng.IntN(2) == 0 {
			in.Target, in.HasTarget = users[rng.IntN(len(users))], true
		}
		out[i] = in
	}
	return out
}

// kitchenSink exercises what the default policy does not: partial sets and
// objects, comprehensions, every, some, functions with arguments and else,
// defaults, built-ins called through topdown (strings, numbers, objects),
// array indexes, negation of refs, object merges of nested rules.
const kitchenSink = `package crmauthz

import data.crmauthz.config

subject := crm.user(input.subject)

record := crm.record(input.resource.type, input.resource.id)

target := crm.user(input.target)

followers contains f if some f in record.followers

named[f] := upper(f) if {
	some f in record.followers
	startswith(f, "u-")
}

locs := {l: count(l) | some l in subject.location_ids}

default first_follower := null

first_follower := record.followers[0]

level(u) := 3 if u.role == "admin"
else := 2 if not u.assigned_data_only
else := 1

default tier := "none"

tier := "gold" if level(subject) >= 2

default all_remote := false

all_remote if {
	record
	every f in record.followers {
		f != input.subject
	}
}

shared := [x | some x in subject.location_ids; x == record.location_id]

nested.a.b := 1 if record

nested.a.c := object.get(record, ["owner"], "nobody")

default nested_v := {}

nested_v := nested

default target_ok := false

target_ok if target.id == input.target

default no_contact := false

no_contact if not record.contact_id

summary := {
	"followers": followers,
	"named": named,
	"locs": locs,
	"first": object.get({"f": first_follower}, "f", null),
	"tier": tier,
	"remote": all_remote,
	"shared": shared,
	"nested": nested_v,
	"n": count(followers) + count(shared) * 2,
	"union": object.union({"x": 1, "y": {"z": 1}}, {"y": {"w": 2}}),
	"sorted": sort([f | some f in followers]),
	"split": split(concat("/", [input.action, input.resource.type]), "/"),
	"target_ok": target_ok,
	"neg": no_contact,
	"owner_idx": [i | some i, f in record.followers; f == record.owner],
	"cfg": config.max_followers,
	"input_json": json.marshal(input),
	"input_keys": [k | some k, _ in input],
	"res_n": count(input.resource),
	"copy_subject": copy_subject,
	"res_eq": input.resource == {"type": input.resource.type, "id": input.resource.id},
	"has_target": object.get(input, "target", "none"),
	"res_obj": input.resource,
	"lazy": lazy_arrays,
}

# The string arrays of the facts (location_ids, followers) are lazy in the
# interpreter: every use of them must answer as the built array.
lazy_arrays := {
	"fol_eq": record.followers == ["u-fol"],
	"fol_eq_locs": record.followers == subject.location_ids,
	"locs_eq": subject.location_ids == ["loc-1"],
	"fol_neq_false": record.followers != false,
	"fol_is_array": is_array(record.followers),
	"fol_count": count(record.followers),
	"fol_idx": [f | f := record.followers[1]],
	"fol_last": [f | f := record.followers[count(record.followers) - 1]],
	"fol_sorted": sort(record.followers),
	"fol_set": {f | some f in record.followers},
	"in_fol": input.subject in record.followers,
	"input_in_fol": input in record.followers,
	"num_in_fol": 1 in record.followers,
	"in_locs": record.location_id in subject.location_ids,
	"fol_get": object.get(record, "followers", []),
	"record": record,
	"subject": subject,
	"fol_lt": record.followers < ["u-z"],
	"walked": [x | some x in [record.followers, subject.location_ids]],
	"fol_unify": fol_unify,
	"fol_unify_one": [f | ["u-fol", f] = record.followers],
	"fol_twice": fol_twice,
}

default fol_unify := false

fol_unify if record.followers = ["u-fol"]

default fol_twice := "none"

fol_twice := record.followers if record

fol_twice := ["u-fol"] if record.followers == ["u-fol"]

copy_subject := x.subject if x := input

decision := {"allow": count(followers) > 0, "reason": json.marshal(summary)} if subject
else := {"allow": false, "reason": sprintf("no subject %v", [input.subject])}
`

func TestVMKitchenSink(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	files := defaultPolicyFiles(t, false)
	delete(files, "authz.rego")
	files["sink.rego"] = kitchenSink
	dir := t.TempDir()
	writeFiles(t, dir, files)
	ep := newEnginePair(t, Config{Dir: dir})
	for _, c := range g.Cases {
		ep.same(t, facts, c.input())
	}
	for _, in := range randomInputs(g, 1000, 2) {
		ep.same(t, facts, in)
	}
}

// TestVMErrors: conflicts and built-in errors are errors for both.
func TestVMErrors(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	for name, src := range map[string]string{
		"conflict": `package crmauthz

decision := {"allow": false, "reason": "a"} if input.action == "view"

decision := {"allow": false, "reason": "b"} if input.subject != ""
`,
		"builtin error": `package crmauthz

decision := {"allow": false, "reason": sprintf("%d", [count(input.subject)])} if {
	x := to_number(input.action)
	x > 0
}
`,
		"type error": `package crmauthz

decision := {"allow": false, "reason": "x"} if count(crm.user(input.subject).role) > 0
`,
		"object key conflict": `package crmauthz

obj[k] := v if {
	some k, v in {"a": 1, "b": 2}
}

obj[k] := 3 if {
	k := "a"
	input.action == "view"
}

decision := {"allow": false, "reason": json.marshal(obj)}
`,
		// object.get asks a lazy fact or input for a field; on a fact's
		// lazy array it is the type error topdown gives.
		"object.get on lazy values": `package crmauthz

record := crm.record(input.resource.type, input.resource.id)

subject := crm.user(input.subject)

decision := {"allow": false, "reason": json.marshal([
	object.get(record, "owner", "none"),
	object.get(record, "followers", "none"),
	object.get(subject, "location_ids", []),
	object.get(subject, 1, "number key"),
	object.get(input, "target", "no target"),
	object.get(input.resource, "id", "no id"),
	object.get(record.followers, "x", "array"),
])} if input.action == "view"

decision := {"allow": true, "reason": json.marshal(object.get(record, "missing", {"default": record.followers}))} if input.action != "view"
`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"p.rego": src})
			ep := newEnginePair(t, Config{Dir: dir})
			for _, in := range randomInputs(g, 300, 3) {
				ep.same(t, facts, in)
			}
		})
	}
}

// TestVMFallsBackToTopdown: a policy the interpreter cannot run is
// evaluated by topdown, with the reason.
func TestVMFallsBackToTopdown(t *testing.T) {
	for name, src := range map[string]string{
		"with": `package crmauthz

inner := input.action

decision := {"allow": false, "reason": r} if r := inner with input.action as "x"
`,
		"nondeterministic": `package crmauthz

decision := {"allow": time.now_ns() > 0, "reason": "now"}
`,
		"relation": `package crmauthz

decision := {"allow": false, "reason": "w"} if walk(input, [["action"], "view"])
`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"p.rego": src})
			e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			ev, why := e.Evaluator()
			if ev != EvaluatorTopdown || why == nil {
				t.Fatalf("evaluator %s (%v), want topdown with a reason", ev, why)
			}
			if _, _, err := e.Decide(context.Background(), &memFacts{}, Input{Subject: "u", Action: "view", ResourceType: "contact", ResourceID: "c"}); err != nil {
				t.Fatal(err)
			}
			if _, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir, Evaluator: EvaluatorIR}); err == nil || !strings.Contains(err.Error(), "IR evaluator") {
				t.Fatalf("Evaluator IR took a policy it cannot run: %v", err)
			}
		})
	}
}

// FuzzVMFacts gives both evaluators arbitrary fact documents: every shape
// the policy does not expect (missing fields, wrong types, nulls) must get
// the same answer from both, for the default policy and the kitchen sink.
func FuzzVMFacts(f *testing.F) {
	f.Add(`{"id":"u","role":"user","location_ids":["l"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":true}`,
		`{"type":"contact","id":"c","location_id":"l","owner":"o","followers":["u"]}`, `{"id":"t","role":"user","location_ids":["l"]}`, "view", true)
	f.Add(`{"id":"u","role":"admin","location_ids":"l"}`, `{"type":"contact","id":"c","location_id":"l","followers":null}`, `null`, "add_follower", true)
	f.Add(`{"role":7,"location_ids":["l","m"],"assigned_data_only":"yes","contacts_enabled":false}`, `{"location_id":["l"],"owner":"u","followers":{"u":1}}`, `{}`, "remove_follower", false)
	f.Add(`{"id":"u","location_ids":["l"],"assigned_data_only":true}`, `{"type":"contact","id":"c","location_id":"l","owner":"","followers":["a","b","c","d","e","f","g","h","i","j"]}`, `{"id":"t","location_ids":["l"]}`, "add_follower", true)
	f.Add(`[]`, `1`, `"x"`, "change_owner", true)
	pairs := []enginePair{newEnginePair(f, Config{FS: policies.FS})}
	files := defaultPolicyFiles(f, false)
	delete(files, "authz.rego")
	files["sink.rego"] = kitchenSink
	dir := f.TempDir()
	writeFiles(f, dir, files)
	pairs = append(pairs, newEnginePair(f, Config{Dir: dir}))
	f.Fuzz(func(t *testing.T, user, record, target, action string, hasTarget bool) {
		facts := &memFacts{users: map[string][]byte{}, records: map[string][]byte{}}
		if user != "" {
			facts.users["u"] = []byte(user)
		}
		if target != "" {
			facts.users["t"] = []byte(target)
		}
		if record != "" {
			facts.records["contact\x00c"] = []byte(record)
		}
		for _, subject := range []string{"u", "t"} {
			in := Input{Subject: subject, Action: action, ResourceType: "contact", ResourceID: "c"}
			if hasTarget {
				in.Target, in.HasTarget = "t", true
			}
			for _, ep := range pairs {
				ep.same(t, facts, in)
			}
		}
	})
}

// TestAutoEvaluatorPlans: by default the IR interpreter decides, and a
// reload plans the new revision.
func TestAutoEvaluatorPlans(t *testing.T) {
	dir := t.TempDir()
	files := defaultPolicyFiles(t, false)
	writeFiles(t, dir, files)
	e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := e.Evaluator(); ev != EvaluatorIR || err != nil {
		t.Fatalf("evaluator %s (%v), want ir", ev, err)
	}
	facts := newMemFacts(t, loadGolden(t))
	if got := decideReason(t, e, facts, followerDelete); got != "deny:follower_not_permitted" {
		t.Fatalf("before the change: %s", got)
	}
	writeFiles(t, dir, map[string]string{"config.rego": flipDelete(t, files["config.rego"], true)})
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if ev, err := e.Evaluator(); ev != EvaluatorIR || err != nil {
		t.Fatalf("evaluator %s (%v) after the reload, want ir", ev, err)
	}
	if got := decideReason(t, e, facts, followerDelete); got != "allow:follower" {
		t.Fatalf("after the change: %s", got)
	}
}

// TestVMFaultFallsBackToTopdown: when the interpreter itself fails (here a
// program it cannot run), topdown makes the decision and the fault counts.
func TestVMFaultFallsBackToTopdown(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	e, err := New(Config{EvalTimeout: testEvalTimeout, FS: policies.FS, DecisionCacheSlots: -1, Evaluator: EvaluatorIR})
	if err != nil {
		t.Fatal(err)
	}
	p := e.cur.Load()
	// a plan it cannot have been given: a return out of the plan itself
	broken, err := irvm.New(&ir.Policy{
		Static: &ir.Static{},
		Plans:  &ir.Plans{Plans: []*ir.Plan{{Name: decisionEntry, Blocks: []*ir.Block{{Stmts: []ir.Stmt{&ir.ReturnLocalStmt{Source: ir.Input}}}}}}},
	}, irvm.Config{Entrypoint: decisionEntry})
	if err != nil {
		t.Fatal(err)
	}
	p.vm.Store(&vmPlan{prog: broken})
	for _, c := range g.Cases {
		d, _, err := e.Decide(context.Background(), facts, c.input())
		if err != nil || d.Allow != c.Allow || d.Reason != c.Reason {
			t.Fatalf("%s: %+v %v, want %v %s", c.Name, d, err, c.Allow, c.Reason)
		}
	}
	if n := p.vmFaults.Load(); n != uint64(len(g.Cases)) {
		t.Fatalf("%d faults counted, want %d", n, len(g.Cases))
	}
	// a panic is a fault too (here of a native built-in)
	pol, err := irvm.Plan(context.Background(), defaultModuleFiles(t), decisionEntry, BuiltinDecls())
	if err != nil {
		t.Fatal(err)
	}
	natives := vmNatives()
	natives[BuiltinUser] = func(*irvm.Call, []*ast.Term) (*ast.Term, error) { panic("native") }
	panicky, err := irvm.New(pol, irvm.Config{Entrypoint: decisionEntry, Natives: natives})
	if err != nil {
		t.Fatal(err)
	}
	p.vm.Store(&vmPlan{prog: panicky})
	for _, c := range g.Cases {
		if d, _, err := e.Decide(context.Background(), facts, c.input()); err != nil || d.Allow != c.Allow || d.Reason != c.Reason {
			t.Fatalf("%s after a panic: %+v %v", c.Name, d, err)
		}
	}
	if n := p.vmFaults.Load(); n <= uint64(len(g.Cases)) {
		t.Fatalf("%d faults counted after the panics, want more than %d", n, len(g.Cases))
	}
}

// defaultModuleFiles are the default policy's modules, parsed, as the
// planner takes them.
func defaultModuleFiles(tb testing.TB) []bundle.ModuleFile {
	tb.Helper()
	var files []bundle.ModuleFile
	for name, src := range defaultPolicyFiles(tb, false) {
		m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			tb.Fatal(err)
		}
		files = append(files, bundle.ModuleFile{URL: name, Path: name, Raw: []byte(src), Parsed: m})
	}
	return files
}
