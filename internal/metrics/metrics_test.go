package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMetricsExposition(t *testing.T) {
	m := New(Config{})
	m.Decision("decision", "view", true, "owner")
	m.Decision("decision", "view", true, "owner")
	m.DecisionDuration("decision", 30*time.Microsecond)
	m.HTTPRequest("admin", "/metrics", 200)
	m.Events("follower.add", "applied", 3)
	m.Events("follower.add", "skipped", 0) // zero adds nothing
	m.IndexState(42, 7, map[string]uint64{"contact": 5, "opportunity": 1})
	m.PolicyReload(true, "rev-a")
	m.PolicyReload(false, "")
	m.PolicyReload(true, "rev-b")
	m.DecisionCache(func() (uint64, uint64) { return 9, 4 })

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`crmauthz_decisions_total{action="view",allow="true",endpoint="decision",reason="owner"} 2`,
		`crmauthz_decision_duration_seconds_count{endpoint="decision"} 1`,
		`crmauthz_http_requests_total{code="200",listener="admin",route="/metrics"} 1`,
		`crmauthz_replication_events_total{op="follower.add",result="applied"} 3`,
		`crmauthz_replication_applied_seq 42`,
		`crmauthz_index_users 7`,
		`crmauthz_index_records{type="contact"} 5`,
		`crmauthz_policy_reloads_total{result="ok"} 2`,
		`crmauthz_policy_reloads_total{result="error"} 1`,
		`crmauthz_policy_info{revision="rev-b"} 1`,
		`crmauthz_decision_cache_lookups_total{result="hit"} 9`,
		`crmauthz_decision_cache_lookups_total{result="miss"} 4`,
		`go_goroutines`,
		`process_start_time_seconds`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	for _, unwanted := range []string{`revision="rev-a"`, `result="skipped"`} {
		if strings.Contains(text, unwanted) {
			t.Errorf("exposition has %q", unwanted)
		}
	}
}

// TestCachedChildren checks that the request-path methods, which reuse the
// child of each label tuple, count into the right series from many goroutines.
func TestCachedChildren(t *testing.T) {
	m := New(Config{})
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 1000; i++ {
				m.Decision("decision", "view", i%2 == 0, "owner")
				m.HTTPRequest("decision", "/v1/decision", 200+i%2)
				m.DecisionDuration("decision", time.Microsecond)
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, want := range []string{
		`crmauthz_decisions_total{action="view",allow="true",endpoint="decision",reason="owner"} 2000`,
		`crmauthz_decisions_total{action="view",allow="false",endpoint="decision",reason="owner"} 2000`,
		`crmauthz_http_requests_total{code="200",listener="decision",route="/v1/decision"} 2000`,
		`crmauthz_http_requests_total{code="201",listener="decision",route="/v1/decision"} 2000`,
		`crmauthz_decision_duration_seconds_count{endpoint="decision"} 4000`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

func TestCachedChildrenBounded(t *testing.T) {
	var c children[int, *int]
	for i := 0; i < maxCachedChildren+10; i++ {
		v := i
		if got := c.get(i, func() *int { return &v }); *got != i {
			t.Fatalf("child %d is %d", i, *got)
		}
	}
	if n := len(*c.m.Load()); n != maxCachedChildren {
		t.Fatalf("%d children cached, want the bound %d", n, maxCachedChildren)
	}
}

func BenchmarkDecisionCounter(b *testing.B) {
	m := New(Config{})
	b.ReportAllocs()
	for b.Loop() {
		m.Decision("decision", "view", true, "owner")
		m.HTTPRequest("decision", "/v1/decision", 200)
		m.DecisionDuration("decision", time.Microsecond)
	}
}

// A Route's updates are those of DecisionDuration and HTTPRequest, and its
// series appear only with their first update.
func TestRoute(t *testing.T) {
	m := New(Config{})
	r := m.Route("decision", "/v1/decision", "decision")
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	if text := scrape(); strings.Contains(text, `route="/v1/decision"`) || strings.Contains(text, `endpoint="decision"`) {
		t.Fatalf("series before the first request:\n%s", text)
	}
	r.Request(400)
	if text := scrape(); strings.Contains(text, `code="200",listener="decision"`) {
		t.Errorf("a 200 series after a 400 alone:\n%s", text)
	}
	for i := 0; i < 3; i++ {
		r.Request(200)
		r.Duration(30 * time.Microsecond)
	}
	m.HTTPRequest("decision", "/v1/decision", 200) // the same child
	m.DecisionDuration("decision", time.Microsecond)
	text := scrape()
	for _, want := range []string{
		`crmauthz_http_requests_total{code="200",listener="decision",route="/v1/decision"} 4`,
		`crmauthz_http_requests_total{code="400",listener="decision",route="/v1/decision"} 1`,
		`crmauthz_decision_duration_seconds_count{endpoint="decision"} 4`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

func BenchmarkRoute(b *testing.B) {
	m := New(Config{})
	r := m.Route("decision", "/v1/decision", "decision")
	b.ReportAllocs()
	for b.Loop() {
		m.Decision("decision", "view", true, "owner")
		r.Request(200)
		r.Duration(time.Microsecond)
	}
}

// BenchmarkDecisionMetricsParallel is what a /v1/decision's metrics cost per
// request (its decision counter, its route's 200 counter, its duration
// histogram) when every core counts at once, as at saturation: -cpu 1,2
// tells the atomics' contention from their cost alone.
func BenchmarkDecisionMetricsParallel(b *testing.B) {
	m := New(Config{})
	tb := m.DecisionTable("decision", []string{"view", "edit", "delete", "change_owner", "add_follower", "remove_follower"})
	r := m.Route("decision", "/v1/decision", "decision")
	reasons := []string{"owner", "no_access", "follower", "team_member", "manager"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tb.Count(i%6, i%3 != 0, reasons[i%len(reasons)])
			r.Request(200)
			r.Duration(time.Duration(20+i%40) * time.Microsecond)
			i++
		}
	})
}
