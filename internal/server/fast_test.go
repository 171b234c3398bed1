package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// The lean handlers (fast.go) count each reply as Gin's countRequests did,
// with the route template, and leave everything else to Gin.
func TestLeanRoutesCounted(t *testing.T) {
	const decision = `{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}`
	cases := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		route                    string
	}{
		{"decision", http.MethodPost, "/v1/decision", decision, nil, 200, "/v1/decision"},
		{"decision, malformed", http.MethodPost, "/v1/decision", `{"subject":`, nil, 400, "/v1/decision"},
		{"batch", http.MethodPost, "/v1/decisions", `{"subject":"u-1","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"}}]}`, nil, 200, "/v1/decisions"},
		{"forward auth without the original request", http.MethodGet, "/v1/forward-auth", "", nil, 403, "/v1/forward-auth"},
		{"forward auth without identity", http.MethodGet, "/v1/forward-auth", "",
			map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/contacts/c-1"}, 401, "/v1/forward-auth"},
		{"ext-authz without identity", http.MethodPost, "/v1/ext-authz/contacts/c-1", `{}`, nil, 401, "/v1/ext-authz/*path"},
		// still Gin's
		{"decision with GET", http.MethodGet, "/v1/decision", "", nil, 405, "unmatched"},
		{"forward auth with a method Any does not route", "PROPFIND", "/v1/forward-auth", "", nil, 405, "unmatched"},
		{"unknown path", http.MethodPost, "/v1/decisionz", decision, nil, 404, "unmatched"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, nil)
			labels := map[string]string{"listener": "decision", "route": tc.route, "code": strconv.Itoa(tc.status)}
			before := counter(t, ts.m, "crmauthz_http_requests_total", labels)
			rec := serve(ts.decision, tc.method, tc.path, tc.body, tc.hdr)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := counter(t, ts.m, "crmauthz_http_requests_total", labels); got != before+1 {
				t.Errorf("crmauthz_http_requests_total%v = %v, want %v", labels, got, before+1)
			}
		})
	}
}

// The replies written by hand are the bytes encoding/json (Gin's c.JSON)
// wrote, escaping included.
func TestWriteAllowBytes(t *testing.T) {
	for _, tc := range []decisionResponse{
		{Allow: true, Reason: "owner", DecisionID: "0123abcd-1f", PolicyRevision: "rev-1", AppliedSeq: 42},
		{Allow: true, Reason: `a "quoted" <b> & ü`, DecisionID: "id\u2028", PolicyRevision: "", AppliedSeq: 0},
	} {
		rec := httptest.NewRecorder()
		(&Server{}).writeAllow(rec, tc.Reason, tc.DecisionID, tc.PolicyRevision, tc.AppliedSeq)
		want, err := json.Marshal(tc)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Code != 200 || rec.Body.String() != string(want) {
			t.Errorf("writeAllow wrote %d %s, want 200 %s", rec.Code, rec.Body, want)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
	}
}

// A panic in a lean handler is the recovery middleware's 500 (a deny), and
// is not counted; once part of the reply is sent, the connection is cut.
func TestLeanPanic(t *testing.T) {
	ts := newTestServer(t, nil)
	labels := map[string]string{"listener": "decision", "route": "/v1/boom", "code": "500"}
	req := httptest.NewRequest(http.MethodGet, "/v1/boom", nil)
	rec := httptest.NewRecorder()
	boom := ts.m.Route("decision", "/v1/boom", "")
	ts.serveGateway(rec, req, boom, func(http.ResponseWriter, *http.Request) int { panic("boom") })
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"code":"internal_error"`) {
		t.Errorf("after a panic: %d %s, want 500 internal_error", rec.Code, rec.Body)
	}
	if got := counter(t, ts.m, "crmauthz_http_requests_total", labels); got != 0 {
		t.Errorf("a panicked request was counted: %v", got)
	}
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("a panic after the reply started: recovered %v, want http.ErrAbortHandler", v)
		}
	}()
	ts.serveGateway(httptest.NewRecorder(), req, boom, func(w http.ResponseWriter, _ *http.Request) int {
		_, _ = w.Write([]byte("partial"))
		panic("boom")
	})
}
