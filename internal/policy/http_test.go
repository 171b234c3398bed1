package policy

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/open-policy-agent/opa/v1/ast"
)

func httpFacts() *memFacts {
	return &memFacts{
		users: map[string][]byte{
			"u-owner": []byte(`{"id":"u-owner","role":"user","location_ids":["loc-1"],"assigned_data_only":true}`),
			"u-fol":   []byte(`{"id":"u-fol","role":"user","location_ids":["loc-1"],"assigned_data_only":true}`),
			"u-far":   []byte(`{"id":"u-far","role":"user","location_ids":["loc-2"],"assigned_data_only":true}`),
		},
		records: map[string][]byte{
			"contact\x00c-1": []byte(`{"type":"contact","id":"c-1","location_id":"loc-1","owner":"u-owner","followers":["u-fol"]}`),
		},
	}
}

func mustBody(tb testing.TB, s string) ast.Value {
	tb.Helper()
	v, err := regovalue.ParseBody([]byte(s))
	if err != nil {
		tb.Fatalf("regovalue.ParseBody(%s): %v", s, err)
	}
	return v
}

func TestDecideHTTP(t *testing.T) {
	e := newDefaultEngine(t)
	facts := httpFacts()
	cases := []struct {
		name string
		in   HTTPInput
		want HTTPDecision
	}{
		{"owner views", HTTPInput{Subject: "u-owner", Method: "GET", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"}},
			HTTPDecision{Allow: true, Reason: "owner", Action: "view", ResourceType: "contact", ResourceID: "c-1", Targets: []string{}}},
		{"follower edits", HTTPInput{Subject: "u-fol", Method: "PUT", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"},
			Body: mustBody(t, `{"firstName":"Ann"}`)},
			HTTPDecision{Allow: true, Reason: "follower", Action: "edit", ResourceType: "contact", ResourceID: "c-1", Targets: []string{}}},
		{"follower changes the owner", HTTPInput{Subject: "u-fol", Method: "PUT", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"},
			Body: mustBody(t, `{"assignedTo":"u-fol"}`)},
			HTTPDecision{Allow: false, Reason: "followers_cannot_change_owner", Action: "change_owner", ResourceType: "contact", ResourceID: "c-1", Targets: []string{"u-fol"}}},
		{"owner adds a follower of another location", HTTPInput{Subject: "u-owner", Method: "POST", Path: "/contacts/c-1/followers",
			Segments: []string{"contacts", "c-1", "followers"}, Body: mustBody(t, `{"followers":["u-far"]}`)},
			HTTPDecision{Allow: false, Reason: "target_cross_location", Action: "add_follower", ResourceType: "contact", ResourceID: "c-1", Targets: []string{"u-far"}}},
		{"unmapped", HTTPInput{Subject: "u-owner", Method: "GET", Path: "/users", Segments: []string{"users"}},
			HTTPDecision{Allow: false, Reason: "unmapped_route"}},
		{"invalid body", HTTPInput{Subject: "u-owner", Method: "PUT", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"},
			Body: mustBody(t, `[1]`)},
			HTTPDecision{Allow: false, Reason: "invalid_body", Message: "the body is not a JSON object"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, rev, err := e.DecideHTTP(context.Background(), facts, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if rev != e.Revision() {
				t.Errorf("revision %q, want %q", rev, e.Revision())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecideHTTPFailsClosed(t *testing.T) {
	readErr := errors.New("disk on fire")
	t.Run("facts read error", func(t *testing.T) {
		e := newDefaultEngine(t)
		_, _, err := e.DecideHTTP(context.Background(), &memFacts{err: readErr},
			HTTPInput{Subject: "u-owner", Method: "GET", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"}})
		if !errors.Is(err, readErr) && (err == nil || !strings.Contains(err.Error(), "disk on fire")) {
			t.Fatalf("err = %v, want the read error", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		e := newDefaultEngine(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := e.DecideHTTP(ctx, httpFacts(), HTTPInput{Subject: "u-owner", Method: "GET", Segments: []string{"contacts", "c-1"}}); err == nil {
			t.Fatal("no error for a canceled context")
		}
	})

	base := defaultPolicyFiles(t, false)
	shapes := []struct {
		name string
		rule string // "" leaves http_decision undefined (a policy without routes)
		want string
	}{
		{"no http_decision", "", "undefined"},
		{"not an object", `http_decision := true`, "want an object"},
		{"no allow", `http_decision := {"reason": "x"}`, `"allow"`},
		{"allow not a boolean", `http_decision := {"allow": "yes", "reason": "x"}`, `"allow"`},
		{"no reason", `http_decision := {"allow": true}`, `"reason"`},
		{"empty reason", `http_decision := {"allow": true, "reason": ""}`, `"reason"`},
		{"action not a string", `http_decision := {"allow": true, "reason": "x", "action": 1}`, `"action"`},
		{"resource not an object", `http_decision := {"allow": true, "reason": "x", "resource": "c-1"}`, `"resource"`},
		{"resource without id", `http_decision := {"allow": true, "reason": "x", "resource": {"type": "contact"}}`, `"resource"`},
		{"targets not a list", `http_decision := {"allow": true, "reason": "x", "targets": "u-1"}`, `"targets"`},
		{"targets of numbers", `http_decision := {"allow": true, "reason": "x", "targets": [1]}`, `"targets"`},
		{"message not a string", `http_decision := {"allow": false, "reason": "x", "message": 1}`, `"message"`},
		{"several results", "http_decision := {\"allow\": true, \"reason\": \"x\"} if input.method == \"GET\"\n\nhttp_decision := {\"allow\": false, \"reason\": \"y\"} if input.subject == \"u\"", "conflict"},
	}
	for _, tc := range shapes {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{}
			for k, v := range base {
				files[k] = v
			}
			if tc.rule != "" {
				files["http.rego"] = "package crmauthz\n\n" + tc.rule + "\n"
			}
			writeFiles(t, dir, files)
			e, err := New(Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			d, _, err := e.DecideHTTP(context.Background(), httpFacts(),
				HTTPInput{Subject: "u", Method: "GET", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %+v, %v; want an error containing %q", d, err, tc.want)
			}
			if tc.rule == "" && !errors.Is(err, ErrUndefinedHTTPDecision) {
				t.Fatalf("err = %v, want ErrUndefinedHTTPDecision", err)
			}
		})
	}
}

// TestRoutesOneTarget: routes.rego decides a request with one target (a new
// owner, a list of one follower) by target_decision, and must answer as
// its decision of any list does (list_decision): the same object, or an
// error on both, on the golden and generated requests of each variant of
// the policy (topdown, the policy's own semantics).
func TestRoutesOneTarget(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	ctx := context.Background()
	ins := httpGenerated(t, g, 4000, 1)
	for _, c := range httpBenchCases(t) {
		ins = append(ins, c.in)
	}
	for name, cfg := range httpVariants(t) {
		t.Run(name, func(t *testing.T) {
			cfg.EvalTimeout = testEvalTimeout
			e, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			p := e.cur.Load()
			eval := func(rule string, input ast.Value) (ast.Value, error) {
				pq, err := p.query(ctx, []string{"crmauthz", "routes", rule})
				if err != nil {
					t.Fatal(err)
				}
				rs, err := p.eval(ctx, pq, p.decisionOpts, facts, input)
				if err != nil || len(rs) == 0 {
					return nil, err
				}
				v, _ := rs[0].Expressions[0].Value.(ast.Value)
				return v, nil
			}
			reasons := map[string]int{}
			for _, in := range ins {
				input := p.httpInput(in)
				r, err := eval("route", input)
				obj, _ := r.(ast.Object)
				if err != nil || obj == nil {
					continue
				}
				if targets, ok := valueOf(obj.Get(ast.InternedTerm("targets"))).(*ast.Array); !ok || targets.Len() != 1 {
					continue
				}
				one, oneErr := eval("decision", input)
				list, listErr := eval("list_decision", input)
				switch {
				case (oneErr != nil) != (listErr != nil):
					t.Fatalf("%s %s body %v subject %q: one target %v (%v), as a list %v (%v)", in.Method, in.Path, in.Body, in.Subject, one, oneErr, list, listErr)
				case oneErr != nil:
					reasons["error"]++
				case one == nil || list == nil || one.Compare(list) != 0:
					t.Fatalf("%s %s body %v subject %q: one target %v, as a list %v", in.Method, in.Path, in.Body, in.Subject, one, list)
				default:
					reason, _ := stringOf(one.(ast.Object).Get(ast.InternedTerm("reason")))
					reasons[reason]++
				}
			}
			t.Logf("one target: %v", reasons)
			// one target reaches every kind of outcome (the other variants'
			// prefix leaves few requests mapped)
			for _, r := range []string{"follower_limit_reached", "owner", "follower_not_permitted", "unknown_target"} {
				if name == "default" && reasons[r] == 0 {
					t.Errorf("no request with one target answered %s (%v)", r, reasons)
				}
			}
		})
	}
}
