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
