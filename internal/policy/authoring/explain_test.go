package authoring

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/policy"
)

func TestExplainGolden(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	e := newDefaultEngine(t)
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			x, err := Explain(context.Background(), e, facts, c.input())
			if err != nil {
				t.Fatalf("Explain: %v", err)
			}
			if x.Decision.Allow != c.Allow || x.Decision.Reason != c.Reason || x.Revision != e.Revision() {
				t.Errorf("Explain decided %+v (revision %s), want allow=%v reason=%q", x.Decision, x.Revision, c.Allow, c.Reason)
			}
			if x.Rule.Path != "data.crmauthz.decision" || !strings.HasSuffix(x.Rule.File, "authz.rego") || x.Rule.Row == 0 {
				t.Fatalf("deciding rule %+v", x.Rule)
			}
			// The deciding branch names the reason, or the rule that does.
			literal := `"reason": "` + c.Reason + `"`
			found := strings.Contains(x.Rule.Text, literal)
			if !found && strings.Contains(x.Rule.Text, "follower_decision") {
				for _, r := range x.Held {
					if r.Path == "data.crmauthz.follower_decision" && strings.Contains(r.Text, literal) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("no rule that held names %s: deciding %v, held %v", literal, x.Rule, x.Held)
			}
			if len(x.Trace) < 5 || !strings.Contains(strings.Join(x.Trace, "\n"), "authz.rego:") {
				t.Errorf("trace without locations: %q", x.Trace)
			}
			if c.Input.Subject != "" && c.Input.Action != "" && c.Reason != "unknown_action" {
				if len(x.Facts) == 0 || !strings.HasPrefix(x.Facts[0].Call, `crm.user("`+c.Input.Subject+`")`) {
					t.Errorf("facts read = %+v, want crm.user(%q) first", x.Facts, c.Input.Subject)
				}
			}
		})
	}
	t.Run("default rule", func(t *testing.T) {
		x, err := Explain(context.Background(), e, facts, policy.Input{Subject: "u-fol", Action: "delete", ResourceType: "contact", ResourceID: "c-1"})
		if err != nil {
			t.Fatal(err)
		}
		var texts []string
		for _, r := range x.Held {
			texts = append(texts, r.Text)
		}
		if !slices.Contains(texts, "default followers_can_delete := false") {
			t.Errorf("held rules %q lack the switch's default", texts)
		}
	})
	t.Run("facts error", func(t *testing.T) {
		x, err := Explain(context.Background(), e, &memFacts{err: errors.New("disk on fire")}, policy.Input{Subject: "u-fol", Action: "view", ResourceType: "contact", ResourceID: "c-1"})
		if err == nil || x.Decision.Allow {
			t.Fatalf("Explain = %+v, %v; want an error and no allow", x, err)
		}
		if len(x.Facts) != 1 || x.Facts[0].Err == nil {
			t.Errorf("facts = %+v, want the failed read", x.Facts)
		}
	})
}
