package metrics

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// decisionLines is the crmauthz_decisions_total part of an exposition.
func decisionLines(text string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(text, "\n") {
		if strings.Contains(l, "crmauthz_decisions_total") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// A DecisionTable's counts are exposed exactly as Decision's: the same
// decisions counted through Decision on one registry and through tables on
// another give the same text, byte for byte, including the series not yet
// seen (none) and a reason list past its bound.
func TestDecisionTableExposition(t *testing.T) {
	actions := []string{"view", "edit", "delete"}
	type call struct {
		endpoint string
		action   int // an id of actions; len(actions) or more: "other"
		allow    bool
		reason   string
	}
	var calls []call
	for i := 0; i < 500; i++ {
		c := call{endpoint: []string{"decision", "decisions"}[i%2], action: i % 5, allow: i%3 == 0,
			reason: []string{"owner", "no_access", "follower", "error", "evaluation_timeout"}[i%7%5]}
		if i%50 == 0 { // more reasons than a list keeps
			for j := 0; j < maxTableReasons+3; j++ {
				calls = append(calls, call{"decision", 1, true, fmt.Sprintf("r%02d", j)})
			}
		}
		calls = append(calls, c)
	}
	label := func(a int) string {
		if a < len(actions) {
			return actions[a]
		}
		return "other"
	}
	ref, got := New(Config{}), New(Config{})
	if d := decisionLines(scrape(t, got)); d != "" {
		t.Fatalf("series before the first decision:\n%s", d)
	}
	tables := map[string]*DecisionTable{}
	for _, e := range []string{"decision", "decisions"} {
		tables[e] = got.DecisionTable(e, actions)
	}
	for _, c := range calls {
		ref.Decision(c.endpoint, label(c.action), c.allow, c.reason)
		tables[c.endpoint].Count(c.action, c.allow, c.reason)
	}
	want, have := decisionLines(scrape(t, ref)), decisionLines(scrape(t, got))
	if want == "" || have != want {
		t.Fatalf("exposition differs:\n got:\n%s\nwant:\n%s", have, want)
	}
	// Decision and a table count into the same series.
	m := New(Config{})
	m.Decision("decision", "view", true, "owner")
	m.DecisionTable("decision", actions).Count(0, true, "owner")
	if !strings.Contains(scrape(t, m), `crmauthz_decisions_total{action="view",allow="true",endpoint="decision",reason="owner"} 2`) {
		t.Errorf("Decision and the table count apart:\n%s", decisionLines(scrape(t, m)))
	}
}

// CountLabel and Duration count into Decision's and DecisionDuration's series.
func TestDecisionTableLabels(t *testing.T) {
	ref, got := New(Config{}), New(Config{})
	tb := got.DecisionTable("forward_auth", []string{"view", "edit"})
	for _, c := range []struct {
		action string
		allow  bool
		reason string
	}{{"view", true, "owner"}, {"edit", false, "no_access"}, {"other", false, "invalid_path"}, {"frobnicate", false, "x"}, {"view", true, "owner"}} {
		ref.Decision("forward_auth", c.action, c.allow, c.reason)
		tb.CountLabel(c.action, c.allow, c.reason)
	}
	ref.DecisionDuration("forward_auth", 3*time.Millisecond)
	tb.Duration(3 * time.Millisecond)
	filter := func(text string) string {
		var b strings.Builder
		for _, l := range strings.SplitAfter(text, "\n") {
			if strings.Contains(l, "crmauthz_decision") && !strings.Contains(l, "cache") {
				b.WriteString(l)
			}
		}
		return b.String()
	}
	want, have := filter(scrape(t, ref)), filter(scrape(t, got))
	if !strings.Contains(want, `action="frobnicate"`) || !strings.Contains(want, `endpoint="forward_auth"} 1`) || have != want {
		t.Fatalf("exposition differs:\n got:\n%s\nwant:\n%s", have, want)
	}
}

// Goroutines counting through one table at once lose no count, while new
// reasons are added to its lists.
func TestDecisionTableConcurrent(t *testing.T) {
	m := New(Config{})
	tb := m.DecisionTable("decision", []string{"view"})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				tb.Count(i%2, i%3 == 0, fmt.Sprintf("r%d", i%5))
			}
		}()
	}
	wg.Wait()
	text := decisionLines(scrape(t, m))
	total := 0
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		var n int
		if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &n); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		total += n
	}
	if total != 4000 {
		t.Fatalf("%d decisions counted, want 4000:\n%s", total, text)
	}
}

func BenchmarkDecisionTable(b *testing.B) {
	m := New(Config{})
	tb := m.DecisionTable("decision", []string{"view", "edit", "delete", "change_owner", "add_follower", "remove_follower"})
	reasons := []string{"owner", "no_access", "follower", "team_member", "manager"}
	for _, r := range reasons {
		tb.Count(0, true, r)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tb.Count(0, true, reasons[i%len(reasons)])
		i++
	}
}

func BenchmarkDecisionMap(b *testing.B) {
	m := New(Config{})
	reasons := []string{"owner", "no_access", "follower", "team_member", "manager"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Decision("decision", "view", true, reasons[i%len(reasons)])
		i++
	}
}
