package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/metrics"
)

// decisionSeries is the crmauthz_decisions_total part of m's exposition.
func decisionSeries(tb testing.TB, m *metrics.Metrics) string {
	tb.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	var b strings.Builder
	for _, l := range strings.SplitAfter(rec.Body.String(), "\n") {
		if strings.Contains(l, "crmauthz_decisions_total") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// The decisions of /v1/decision and /v1/decisions (through their
// metrics.DecisionTable) are exposed exactly as Metrics.Decision, which
// counted them before, exposes the same decisions: the text of
// crmauthz_decisions_total is the same, byte for byte, unknown actions as
// "other".
func TestDecisionCountsExposition(t *testing.T) {
	w := dataset.New(dataset.Config{Records: 200, Users: 40})
	ts := newTestServer(t, &w)
	ref := metrics.New(metrics.Config{})
	for i := 0; i < 300; i++ {
		req := w.RequestAt(i)
		if i%17 == 0 {
			req.Action = "frobnicate" // not an action: label "other"
		}
		rec := serve(ts.decision, http.MethodPost, "/v1/decision", string(req.AppendJSON(nil)), nil)
		var d decisionResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || rec.Code != 200 {
			t.Fatalf("%d %s %v", rec.Code, rec.Body, err)
		}
		ref.Decision("decision", actionLabel(req.Action), d.Allow, d.Reason)
	}
	for i := 0; i < 20; i++ {
		r0 := w.RequestAt(i)
		body := `{"subject":"` + r0.Subject + `","checks":[`
		var actions []string
		for j := 0; j < 5; j++ {
			r := w.RequestAt(i*5 + j)
			if j == 3 {
				r.Action = "x"
			}
			if j > 0 {
				body += ","
			}
			body += `{"action":"` + r.Action + `","resource":{"type":"` + r.Type + `","id":"` + r.ID + `"}}`
			actions = append(actions, r.Action)
		}
		rec := serve(ts.decision, http.MethodPost, "/v1/decisions", body+`]}`, nil)
		var br batchResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &br); err != nil || rec.Code != 200 || len(br.Results) != len(actions) {
			t.Fatalf("%d %s %v", rec.Code, rec.Body, err)
		}
		for j, r := range br.Results {
			ref.Decision("decisions", actionLabel(actions[j]), r.Allow, r.Reason)
		}
	}
	got, want := decisionSeries(t, ts.m), decisionSeries(t, ref)
	if !strings.Contains(want, `action="other"`) || !strings.Contains(want, `endpoint="decisions"`) || got != want {
		t.Fatalf("crmauthz_decisions_total differs:\n got:\n%s\nwant:\n%s", got, want)
	}
}
