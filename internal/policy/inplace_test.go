package policy

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

// A fact's strings are cut from the JSON bytes themselves when the policy
// calls only crm.user, crm.record and the interpreter's own built-ins
// (factsInPlace): a Decision whose reason is one of them must not refer to
// those bytes, which the index reuses once its read transaction ends.
func TestFactsInPlace(t *testing.T) {
	for _, tc := range []struct {
		name, rego string
		inPlace    bool
		want       string
	}{
		{"reason from a fact", `package crmauthz

decision := {"allow": false, "reason": u.role} if u := crm.user(input.subject)
`, true, "auditor"},
		{"reason from a fact's array", `package crmauthz

decision := {"allow": count(u.tags) > 1, "reason": u.tags[1]} if u := crm.user(input.subject)
`, true, "second"},
		{"regex.match keeps its pattern", `package crmauthz

decision := {"allow": regex.match(u.role, "auditor"), "reason": u.role} if u := crm.user(input.subject)
`, false, "auditor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"p.rego": tc.rego})
			e, err := New(Config{Dir: dir, Evaluator: EvaluatorIR, DecisionCacheSlots: -1})
			if err != nil {
				t.Fatal(err)
			}
			if pl := e.cur.Load().vm.Load(); pl.factsInPlace != tc.inPlace {
				t.Fatalf("factsInPlace = %v, want %v", pl.factsInPlace, tc.inPlace)
			}
			js := []byte(`{"id": "u-1", "role": "auditor", "tags": ["first", "second"]}`)
			facts := &memFacts{users: map[string][]byte{"u-1": js}}
			d, _, err := e.Decide(context.Background(), facts, Input{Subject: "u-1", Action: "view", ResourceType: "contact", ResourceID: "c-1"})
			if err != nil {
				t.Fatal(err)
			}
			for i := range js { // the index's page, reused
				js[i] = 'X'
			}
			if d.Reason != tc.want {
				t.Errorf("reason %q after the facts' bytes changed, want %q", d.Reason, tc.want)
			}
		})
	}
	// the default policy's facts are converted in place
	if pl := newDefaultEngine(t).cur.Load().vm.Load(); pl.prog != nil && !pl.factsInPlace {
		t.Error("the default policy's facts are not converted in place")
	}
}

// The gateway's decision converts its facts in place too (httpFactsInPlace):
// every string of its HTTPDecision that comes from a fact must not refer to
// the facts' bytes.
func TestHTTPFactsInPlace(t *testing.T) {
	const fromFacts = `package crmauthz

http_decision := {"allow": false, "reason": u.role, "action": u.tags[0], "message": u.tags[1],
	"resource": {"type": r.type, "id": r.id}, "targets": r.followers} if {
	u := crm.user(input.subject)
	r := crm.record("contact", "c-1")
}
`
	for _, tc := range []struct {
		name, rego string
		inPlace    bool
	}{
		{"strings from facts", fromFacts, true},
		{"through routes.rego's built-ins", strings.Replace(fromFacts, `"reason": u.role`, `"reason": trim(sprintf("%s", [u.role]), " ")`, 1), true},
		{"regex.match keeps its pattern", strings.Replace(fromFacts, "u := crm.user(input.subject)", "u := crm.user(input.subject)\n\tregex.match(u.role, \"auditor\")", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"p.rego": tc.rego, "d.rego": "package crmauthz\n\ndecision := {\"allow\": false, \"reason\": \"x\"}\n"})
			e, err := New(Config{Dir: dir, Evaluator: EvaluatorIR, DecisionCacheSlots: -1})
			if err != nil {
				t.Fatal(err)
			}
			if h := &e.cur.Load().vm.Load().http; h.prog == nil || h.factsInPlace != tc.inPlace {
				t.Fatalf("interpreter %v, factsInPlace = %v, want %v", h.prog != nil, h.factsInPlace, tc.inPlace)
			}
			user := []byte(`{"id": "u-1", "role": "auditor", "tags": ["edit", "a message"]}`)
			rec := []byte(`{"type": "contact", "id": "c-1", "followers": ["u-2", "u-3"]}`)
			facts := &memFacts{users: map[string][]byte{"u-1": user}, records: map[string][]byte{"contact\x00c-1": rec}}
			d, _, err := e.DecideHTTP(context.Background(), facts, HTTPInput{Subject: "u-1", Method: "GET", Path: "/x", Segments: []string{"x"}})
			if err != nil {
				t.Fatal(err)
			}
			for _, js := range [][]byte{user, rec} { // the index's pages, reused
				for i := range js {
					js[i] = 'X'
				}
			}
			want := HTTPDecision{Reason: "auditor", Action: "edit", Message: "a message", ResourceType: "contact", ResourceID: "c-1", Targets: []string{"u-2", "u-3"}}
			if !reflect.DeepEqual(d, want) {
				t.Errorf("after the facts' bytes changed: %+v, want %+v", d, want)
			}
		})
	}
	if h := &newDefaultEngine(t).cur.Load().vm.Load().http; h.prog == nil || !h.factsInPlace {
		t.Error("the default policy's gateway decision does not convert its facts in place")
	}
}
