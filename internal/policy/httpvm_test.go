package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/crmauthz/crmauthz/policies"
)

// The gateway's decision on the interpreter (httpvm.go) must answer exactly
// as topdown: the same HTTPDecision, or an error where topdown has one (of
// the same topdown code, or the same message).

// httpPair is one policy under both evaluators.
type httpPair enginePair

func newHTTPPair(tb testing.TB, cfg Config) httpPair {
	tb.Helper()
	cfg.EvalTimeout = testEvalTimeout
	ep := newEnginePair(tb, cfg)
	if ev, err := ep.ir.HTTPEvaluator(); ev != EvaluatorIR || err != nil {
		tb.Fatalf("IR engine decides gateway requests with %s (%v)", ev, err)
	}
	if ev, _ := ep.td.HTTPEvaluator(); ev != EvaluatorTopdown {
		tb.Fatalf("topdown engine decides gateway requests with %s", ev)
	}
	return httpPair(ep)
}

// same decides in with both and compares; it returns topdown's answer.
func (hp httpPair) same(tb testing.TB, facts Facts, in HTTPInput) (HTTPDecision, error) {
	tb.Helper()
	ctx := context.Background()
	a, _, aerr := hp.ir.DecideHTTP(ctx, facts, in)
	b, _, berr := hp.td.DecideHTTP(ctx, facts, in)
	if err := sameHTTP(a, aerr, b, berr); err != nil {
		tb.Fatalf("%s %s %v body %v subject %q: %v", in.Method, in.Path, in.Segments, in.Body, in.Subject, err)
	}
	return b, berr
}

// sameHTTP tells how the interpreter's answer (a, aerr) differs from
// topdown's (b, berr); nil when it does not.
func sameHTTP(a HTTPDecision, aerr error, b HTTPDecision, berr error) error {
	switch {
	case (aerr != nil) != (berr != nil):
		return fmt.Errorf("IR %+v (err %v), topdown %+v (err %v)", a, aerr, b, berr)
	case aerr != nil:
		var ta, tb *topdown.Error
		if errors.As(berr, &tb) {
			if !errors.As(aerr, &ta) || ta.Code != tb.Code {
				return fmt.Errorf("IR error %v, topdown error %v", aerr, berr)
			}
			return nil
		}
		if aerr.Error() != berr.Error() && !(errors.Is(aerr, ErrUndefinedHTTPDecision) && errors.Is(berr, ErrUndefinedHTTPDecision)) {
			return fmt.Errorf("IR error %q, topdown error %q", aerr, berr)
		}
		return nil
	case !reflect.DeepEqual(a, b):
		return fmt.Errorf("IR %+v, topdown %+v", a, b)
	}
	return nil
}

// httpGenerated draws n gateway requests over the golden facts: methods ×
// paths × bodies × subjects (owners, followers, admins, unknown users;
// records missing; followers lists of 0, 1, many and too many; bodies that
// are not objects or name the owner twice).
func httpGenerated(tb testing.TB, g golden, n int, seed uint64) []HTTPInput {
	rng := rand.New(rand.NewPCG(seed, 17))
	subjects := []string{"ghost", ""}
	for _, u := range g.Users {
		var k struct{ ID string }
		if err := json.Unmarshal(u, &k); err != nil {
			tb.Fatal(err)
		}
		subjects = append(subjects, k.ID)
	}
	methods := []string{"GET", "HEAD", "PUT", "PATCH", "DELETE", "POST", "OPTIONS", "get"}
	ids := map[string][]string{"contacts": {"c-1", "c-2", "c-unassigned", "c-nine", "c-full", "nope"}, "opportunities": {"o-1", "c-1"},
		"invoices": {"c-1"}}
	var paths [][]string
	for coll, list := range ids {
		for _, id := range list {
			paths = append(paths, []string{coll, id}, []string{coll, id, "followers"}, []string{coll, id, "owner"},
				[]string{coll, id, "followers", "x"}, []string{coll, id, "notes"})
		}
		paths = append(paths, []string{coll})
	}
	paths = append(paths, nil, []string{"users"}, []string{"api", "v2", "contacts", "c-1"}, []string{"contacts", ""})
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("f-%d", i))
	}
	bodies := []string{"", `{}`, `{"firstName":"Ann"}`, `{"assignedTo":"u-fol"}`, `{"assignedto":"u-owner"}`, `{"ASSIGNEDTO":"u-other"}`,
		`{"assignedTo":null}`, `{"assignedTo":""}`, `{"assignedTo":5}`, `{"assignedTo":"u-fol","owner":"u-other"}`,
		`{"assignedTo":"u-fol","owner":"u-fol"}`, `{"owner":"ghost"}`, `[1]`, `"s"`, `5`, `null`, `true`,
		`{"followers":[]}`, `{"followers":["u-fol"]}`, `{"followers":["u-free","u-fol","u-other","u-both"]}`,
		`{"followers":[` + strings.Join(many, ",") + `]}`, `{"followers":[` + strings.Join(many[:100], ",") + `]}`,
		`{"followers":"u-fol"}`, `{"followers":[1]}`, `{"followers":[""]}`, `{"followers":["f-9","f-10"]}`,
		`{"followers":["f-10"]}`, `{"followers":["u-fol","u-fol"]}`, `{"followers":{"a":1}}`, `{"followers":null}`,
		`{"followers":["u-owner"],"assignedTo":"u-fol"}`, `{"followers":["u-free","u-none"]}`, `{"followers":["u-free"]}`}
	parsed := make([]HTTPInput, 0, len(bodies))
	for _, b := range bodies {
		var in HTTPInput
		if b != "" {
			v, err := regovalue.ParseBody([]byte(b))
			if err != nil {
				tb.Fatalf("ParseBody(%s): %v", b, err)
			}
			in.Body = v
		}
		parsed = append(parsed, in)
	}
	// most requests are routes of the table, the rest anything
	routes := map[string][]string{"": {"GET", "HEAD", "PUT", "PATCH", "DELETE"}, "followers": {"POST", "DELETE"},
		"owner": {"PUT", "PATCH", "POST"}}
	out := make([]HTTPInput, n)
	for i := range out {
		segs := paths[rng.IntN(len(paths))]
		method := methods[rng.IntN(len(methods))]
		if rng.IntN(4) != 0 {
			coll := []string{"contacts", "contacts", "opportunities"}[rng.IntN(3)]
			list := ids[coll]
			segs = []string{coll, list[rng.IntN(len(list))]}
			kind := []string{"", "", "followers", "owner"}[rng.IntN(4)]
			if kind != "" {
				segs = append(segs, kind)
			}
			method = routes[kind][rng.IntN(len(routes[kind]))]
		}
		in := parsed[rng.IntN(len(parsed))]
		in.Subject = subjects[rng.IntN(len(subjects))]
		in.Method = method
		in.Segments = segs
		in.Path = "/" + strings.Join(segs, "/")
		out[i] = in
	}
	return out
}

// httpVariants are the default policy and variants of its config.rego
// (followers managing followers, a follower maximum of 2 and a path
// prefix; a maximum that is a string), by name.
func httpVariants(tb testing.TB) map[string]Config {
	out := map[string]Config{}
	for name, config := range map[string]string{
		"default": "",
		"followers_manage_prefix": "package crmauthz.config\n\nfollowers_can_delete := true\n\nfollowers_can_manage_followers := true\n\n" +
			"max_followers := 2\n\npath_prefix := \"/api/v2/\"\n",
		"max_followers_string": "package crmauthz.config\n\nfollowers_can_delete := false\n\nfollowers_can_manage_followers := false\n\n" +
			"max_followers := \"10\"\n\npath_prefix := \"\"\n",
	} {
		out[name] = Config{FS: policies.FS}
		if config == "" {
			continue
		}
		files := allDefaultFiles(tb)
		for k := range files {
			if strings.HasSuffix(k, "_test.rego") {
				delete(files, k)
			}
		}
		files["config.rego"] = config
		dir := tb.TempDir()
		writeFiles(tb, dir, files)
		out[name] = Config{Dir: dir}
	}
	return out
}

// TestHTTPVMGolden: the gateway's golden cases (TestDecideHTTP's and the
// benchmark's route table) and a generated set, on the default policy and
// its variants, decided alike by both evaluators.
func TestHTTPVMGolden(t *testing.T) {
	g := loadGolden(t)
	golden := newMemFacts(t, g)
	for name, cfg := range httpVariants(t) {
		t.Run(name, func(t *testing.T) {
			hp := newHTTPPair(t, cfg)
			for _, c := range httpBenchCases(t) {
				hp.same(t, httpFacts(), c.in)
				hp.same(t, golden, c.in)
			}
			reasons := map[string]int{}
			for _, in := range httpGenerated(t, g, 4000, 1) {
				d, err := hp.same(t, golden, in)
				if err != nil {
					reasons["error"]++
				}
				reasons[d.Reason]++
			}
			// the interpreter decided every request itself (an internal
			// error would have been decided by topdown, alike)
			if n := hp.ir.cur.Load().vmFaults.Load(); n != 0 {
				t.Errorf("the interpreter failed on %d requests (decided by topdown)", n)
			}
			// the generated set reaches the route table's every outcome
			for _, r := range []string{"unmapped_route", "invalid_body", "owner", "follower", "follower_limit_reached", "record_not_found"} {
				if name == "default" && reasons[r] == 0 {
					t.Errorf("no generated request answered %s (%v)", r, reasons)
				}
			}
		})
	}
}

// TestHTTPVMErrors: the failures of the gateway's decision, alike on both
// evaluators: a facts read error, a canceled context, and results of the
// wrong shape, several or none.
func TestHTTPVMErrors(t *testing.T) {
	ctx := context.Background()
	in := HTTPInput{Subject: "u-owner", Method: "GET", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"}}
	hp := newHTTPPair(t, Config{FS: policies.FS})
	readErr := &memFacts{err: errors.New("disk on fire")}
	a, _, aerr := hp.ir.DecideHTTP(ctx, readErr, in)
	b, _, berr := hp.td.DecideHTTP(ctx, readErr, in)
	if aerr == nil || berr == nil || !strings.Contains(aerr.Error(), "disk on fire") {
		t.Fatalf("read error: IR %+v %v, topdown %+v %v", a, aerr, b, berr)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := hp.ir.DecideHTTP(canceled, httpFacts(), in); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: IR err %v", err)
	}
	base := defaultPolicyFiles(t, false)
	for _, rule := range []string{
		`http_decision := true`,
		`http_decision := {"reason": "x"}`,
		`http_decision := {"allow": "yes", "reason": "x"}`,
		`http_decision := {"allow": true}`,
		`http_decision := {"allow": true, "reason": ""}`,
		`http_decision := {"allow": true, "reason": "x", "action": 1}`,
		`http_decision := {"allow": true, "reason": "x", "resource": "c-1"}`,
		`http_decision := {"allow": true, "reason": "x", "resource": {"type": "contact"}}`,
		`http_decision := {"allow": true, "reason": "x", "targets": "u-1"}`,
		`http_decision := {"allow": true, "reason": "x", "targets": [1]}`,
		`http_decision := {"allow": false, "reason": "x", "message": 1}`,
		`http_decision := {"allow": true, "reason": "x"} if input.method == "POST"`,
		"http_decision := {\"allow\": true, \"reason\": \"x\"} if input.method == \"GET\"\n\nhttp_decision := {\"allow\": false, \"reason\": \"y\"} if input.subject == \"u-owner\"",
		`http_decision := {"allow": true, "reason": sprintf("%d", [input.subject])}`,
		`http_decision := {"allow": true, "reason": "x", "n": 1 / (count(input.segments) - 2)}`,
		`http_decision[input.method] := {"allow": true, "reason": "x"}`,
		`http_decision := {"allow": true, "reason": crm.user(input.subject).id, "resource": {"type": "contact", "id": crm.record("contact", "c-1").owner}}`,
		// the input and the result unbuilt (httpinput.go, irvm's records)
		// in every use
		`http_decision := input`,
		`http_decision := input.segments`,
		`http_decision := {"allow": true, "reason": json.marshal(input)}`,
		`http_decision := {"allow": "contacts" in input.segments, "reason": concat("/", input.segments), "targets": input.segments}`,
		`http_decision := {"allow": input.segments[1] == "c-1", "reason": input.path, "resource": {"type": input.method, "id": input.segments[count(input.segments) - 1]}}`,
		`http_decision := {"allow": input == {"subject": "u-owner", "method": "GET", "path": "/contacts/c-1", "segments": ["contacts", "c-1"]}, "reason": sprintf("%v", [input])}`,
		`http_decision := {"allow": is_object(input.body), "reason": json.marshal([input.body, object.get(input, "body", "none"), object.get(input.segments, 0, "none")])}`,
		`http_decision := {"allow": true, "reason": "x", "resource": {"type": input.method, "id": input.subject}, "targets": [input.subject]}`,
		`http_decision := {"allow": true, "reason": "x", "resource": {"type": input.method, "id": input.subject, "more": input}, "targets": input.segments}`,
		`http_decision := object.union({"allow": true}, {"reason": input.method, "resource": {"type": "t", "id": input.path}})`,
		`http_decision := {"allow": false, "reason": "x", "resource": input.segments}`,
		`http_decision := {"allow": false, "reason": "x", "message": input.segments[5]}`,
		`http_decision := {"allow": false, "reason": "x", "targets": [s | some s in input.segments; s != "c-1"]}`,
	} {
		t.Run(rule, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{"http.rego": "package crmauthz\n\n" + rule + "\n"}
			for k, v := range base {
				files[k] = v
			}
			writeFiles(t, dir, files)
			hp := newHTTPPair(t, Config{Dir: dir})
			withBody := in
			withBody.Method, withBody.Body = "PUT", mustBody(t, `{"assignedTo":"u-fol","n":[1,{"a":null}]}`)
			for _, facts := range []Facts{httpFacts(), readErr} {
				hp.same(t, facts, in)
				hp.same(t, facts, withBody)
			}
			if n := hp.ir.cur.Load().vmFaults.Load(); n != 0 {
				t.Errorf("the interpreter failed on %d requests (decided by topdown)", n)
			}
		})
	}
	t.Run("no http_decision", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, base)
		e, err := New(Config{Dir: dir, DecisionCacheSlots: -1})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := e.HTTPEvaluator(); ev != EvaluatorIR || !errors.Is(err, ErrUndefinedHTTPDecision) {
			t.Fatalf("HTTPEvaluator = %s, %v; want ir, undefined", ev, err)
		}
		td, err := New(Config{Dir: dir, DecisionCacheSlots: -1, Evaluator: EvaluatorTopdown})
		if err != nil {
			t.Fatal(err)
		}
		httpPair{ir: e, td: td}.same(t, httpFacts(), in)
		if _, _, err := e.DecideHTTP(ctx, httpFacts(), in); !errors.Is(err, ErrUndefinedHTTPDecision) {
			t.Fatalf("err = %v, want ErrUndefinedHTTPDecision", err)
		}
		if n := e.cur.Load().tdBuilds.Load(); n != 0 {
			t.Errorf("%d builds of the topdown side for an undefined http_decision, want 0", n)
		}
	})
}

// TestHTTPVMNoTopdownAfterReload: a gateway decision after New and after a
// reload builds no topdown side and prepares no topdown query (before the
// interpreter decided them, the first gateway request of a revision built
// the compiler and prepared the query, 10–30 ms under a lock); it answers
// with the revision in service.
func TestHTTPVMNoTopdownAfterReload(t *testing.T) {
	files := allDefaultFiles(t)
	for k := range files {
		if strings.HasSuffix(k, "_test.rego") {
			delete(files, k)
		}
	}
	dir := t.TempDir()
	writeFiles(t, dir, files)
	e, err := New(Config{Dir: dir, EvalTimeout: testEvalTimeout})
	if err != nil {
		t.Fatal(err)
	}
	facts := httpFacts()
	del := HTTPInput{Subject: "u-fol", Method: "DELETE", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"}}
	want := []string{"follower_not_permitted", "follower", "follower_not_permitted"}
	config := files["config.rego"]
	for i, reason := range want {
		if i > 0 {
			config = flipDelete(t, config, i%2 == 1)
			writeFiles(t, dir, map[string]string{"config.rego": config})
			if err := e.Reload(); err != nil {
				t.Fatal(err)
			}
		}
		p := e.cur.Load()
		d, rev, err := e.DecideHTTP(context.Background(), facts, del)
		if err != nil || d.Reason != reason || rev != p.revision {
			t.Fatalf("revision %d: %+v, %s, %v; want %s from %s", i, d, rev, err, reason, p.revision)
		}
		p.mu.Lock()
		queries := len(p.queries)
		p.mu.Unlock()
		if n := p.tdBuilds.Load(); n != 0 || p.td.Load() != nil || queries != 0 {
			t.Fatalf("revision %d: %d topdown builds, topdown side %v, %d prepared queries; want none",
				i, n, p.td.Load() != nil, queries)
		}
	}
}

// countingFacts counts the reads of each fact.
type countingFacts struct {
	Facts
	reads map[string]int
}

func (f *countingFacts) UserJSON(id string) ([]byte, error) {
	f.reads["user "+id]++
	return f.Facts.UserJSON(id)
}

func (f *countingFacts) RecordJSON(typ, id string) ([]byte, error) {
	f.reads["record "+typ+"/"+id]++
	return f.Facts.RecordJSON(typ, id)
}

// TestHTTPVMFactsReadOnce: a gateway's evaluation reads each fact once,
// however often the policy asks for it (the subject and the record once per
// target); a user and a record of the same id are different facts.
func TestHTTPVMFactsReadOnce(t *testing.T) {
	e := newDefaultEngine(t)
	facts := &countingFacts{Facts: httpFacts(), reads: map[string]int{}}
	in := HTTPInput{Subject: "u-owner", Method: "POST", Path: "/contacts/c-1/followers", Segments: []string{"contacts", "c-1", "followers"},
		Body: mustBody(t, `{"followers":["u-fol","u-owner","u-far","ghost"]}`)}
	d, _, err := e.DecideHTTP(context.Background(), facts, in)
	if err != nil || d.Reason != "unknown_target" {
		t.Fatalf("DecideHTTP = %+v, %v; want unknown_target (ghost, the first target)", d, err)
	}
	want := map[string]int{"user u-owner": 1, "record contact/c-1": 1, "user u-fol": 1, "user u-far": 1, "user ghost": 1}
	if !reflect.DeepEqual(facts.reads, want) {
		t.Fatalf("reads %v, want %v", facts.reads, want)
	}
	// a user and a record of the same id
	dir := t.TempDir()
	files := defaultPolicyFiles(t, false)
	files["http.rego"] = "package crmauthz\n\nhttp_decision := {\"allow\": false, \"reason\": \"x\", \"action\": object.get(crm.user(\"c-1\"), \"id\", \"none\"), " +
		"\"message\": object.get(crm.record(\"\", \"c-1\"), \"id\", \"none\"), \"targets\": [object.get(crm.record(\"contact\", \"c-1\"), \"id\", \"none\")]}\n"
	writeFiles(t, dir, files)
	hp := newHTTPPair(t, Config{Dir: dir})
	world := &memFacts{users: map[string][]byte{"c-1": []byte(`{"id":"the user"}`)},
		records: map[string][]byte{"contact\x00c-1": []byte(`{"id":"the contact"}`), "\x00c-1": []byte(`{"id":"the untyped"}`)}}
	got, err := hp.same(t, world, in)
	if err != nil || got.Action != "the user" || got.Message != "the untyped" || !reflect.DeepEqual(got.Targets, []string{"the contact"}) {
		t.Fatalf("got %+v, %v", got, err)
	}
}

// TestHTTPVMFallback: a policy whose http_decision the interpreter cannot
// run (a with of a path) has its gateway requests decided by topdown,
// prepared at the load (no build at the first request), with the same
// answers, while its plain decisions stay on the interpreter.
func TestHTTPVMFallback(t *testing.T) {
	files := allDefaultFiles(t)
	for k := range files {
		if strings.HasSuffix(k, "_test.rego") {
			delete(files, k)
		}
	}
	files["http.rego"] = "package crmauthz\n\nimport data.crmauthz.routes\n\n" +
		"http_decision := d if d := routes.decision with input.method as upper(input.method)\n"
	dir := t.TempDir()
	writeFiles(t, dir, files)
	e, err := New(Config{Dir: dir, EvalTimeout: testEvalTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := e.Evaluator(); ev != EvaluatorIR {
		t.Fatalf("decisions evaluated by %s, want ir", ev)
	}
	if ev, err := e.HTTPEvaluator(); ev != EvaluatorTopdown || err == nil || !strings.Contains(err.Error(), "with of a path") {
		t.Fatalf("HTTPEvaluator = %s, %v; want topdown for a with of a path", ev, err)
	}
	writeFiles(t, dir, map[string]string{"http.rego": files["http.rego"] + "\n# changed\n"})
	reload := e.ReloadSources(context.Background())
	if reload.Err != nil || fmt.Sprint(reload.Attrs) != "[policy_evaluator ir gateway_evaluator topdown gateway_why_not_ir "+
		fmt.Sprint(func() error { _, err := e.HTTPEvaluator(); return err }())+"]" {
		t.Fatalf("reload: %v, attributes %v", reload.Err, reload.Attrs)
	}
	p := e.cur.Load()
	if p.td.Load() == nil {
		t.Fatal("no topdown side after the load, though gateway requests need it")
	}
	ir := newDefaultEngine(t)
	in := HTTPInput{Subject: "u-fol", Method: "put", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"},
		Body: mustBody(t, `{"assignedTo":"u-fol"}`)}
	got, _, err := e.DecideHTTP(context.Background(), httpFacts(), in)
	in.Method = "PUT"
	want, _, werr := ir.DecideHTTP(context.Background(), httpFacts(), in)
	if err != nil || werr != nil || !reflect.DeepEqual(got, want) || got.Reason != "followers_cannot_change_owner" {
		t.Fatalf("fallback %+v, %v; interpreter %+v, %v", got, err, want, werr)
	}
	if n := p.tdBuilds.Load(); n != 0 {
		t.Errorf("%d topdown builds at the first gateway request, want 0", n)
	}
}
