package policy

import (
	"context"
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
