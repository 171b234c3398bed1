package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/metrics"
)

// loggedServer is a Server with a decision log, its decision listener on a
// loopback port.
type loggedServer struct {
	*Server
	m   *metrics.Metrics
	url string // of the decision listener
}

// newLoggedServer starts a server whose decision log is built by newLog
// (which gets the server's metrics for OnDrop), with three facts at seq 3:
// u-1 owns c-1, which u-2 follows.
func newLoggedServer(tb testing.TB, newLog func(*metrics.Metrics) *decisionlog.Logger) *loggedServer {
	tb.Helper()
	cfg := newConfig(tb, nil)
	cfg.DecisionLog = newLog(cfg.Metrics)
	s, m := mustNew(tb, cfg), cfg.Metrics
	events := `{"events": [
	  {"seq": 1, "op": "user.upsert", "user": {"id": "u-1", "role": "user", "location_ids": ["l"], "assigned_data_only": true}},
	  {"seq": 2, "op": "user.upsert", "user": {"id": "u-2", "role": "user", "location_ids": ["l"], "assigned_data_only": true}},
	  {"seq": 3, "op": "record.upsert", "record": {"type": "contact", "id": "c-1", "location_id": "l", "owner": "u-1", "followers": ["u-2"]}}]}`
	req := httptest.NewRequest(http.MethodPost, "/v1/replication/events", strings.NewReader(events))
	req.RemoteAddr = "127.0.0.1:1234"
	rec := httptest.NewRecorder()
	s.AdminHandler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		tb.Fatalf("events: %d %s", rec.Code, rec.Body)
	}
	hs := httptest.NewServer(s.DecisionHandler())
	tb.Cleanup(hs.Close)
	return &loggedServer{Server: s, m: m, url: hs.URL}
}

var loopbackClient = &http.Client{Timeout: time.Minute} // a hang guard, not a speed limit

func (ls *loggedServer) post(tb testing.TB, path, body string) (int, map[string]any) {
	tb.Helper()
	resp, err := loopbackClient.Post(ls.url+path, "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		tb.Fatalf("POST %s: %v", path, err)
	}
	return resp.StatusCode, out
}

func TestDecisionLogLines(t *testing.T) {
	var out bytes.Buffer
	var dl *decisionlog.Logger
	ls := newLoggedServer(t, func(*metrics.Metrics) *decisionlog.Logger {
		var err error
		dl, err = decisionlog.New(decisionlog.Config{Output: &out, InstanceID: "i-1", Version: "test",
			Mask: []string{"input.target"}})
		if err != nil {
			t.Fatal(err)
		}
		return dl
	})

	var ids []string
	_, r := ls.post(t, "/v1/decision", `{"subject":"u-1","action":"add_follower","resource":{"type":"contact","id":"c-1"},"target":"u-2"}`)
	ids = append(ids, r["decision_id"].(string))
	rev := r["policy_revision"].(string)
	_, r = ls.post(t, "/v1/decisions", `{"subject":"u-2","checks":[{"action":"edit","resource":{"type":"contact","id":"c-1"}},{"action":"delete","resource":{"type":"contact","id":"c-1"}}]}`)
	batch := r["decision_id"].(string)
	ids = append(ids, batch+"-0", batch+"-1")
	_, r = ls.post(t, "/v1/data/crmauthz/decision", `{"input":{"subject":"u-2","action":"view","resource":{"type":"contact","id":"c-1"}}}`)
	ids = append(ids, r["decision_id"].(string))
	_, r = ls.post(t, "/v1/data/crmauthz/allow", `{"input":{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}}`)
	ids = append(ids, r["decision_id"].(string))
	if code, _ := ls.post(t, "/v1/decision", `{"subject":"u-1"}`); code != 400 { // not a decision: not logged
		t.Fatalf("invalid request: %d", code)
	}
	if err := dl.Close(); err != nil {
		t.Fatal(err)
	}

	var got []map[string]any
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		got = append(got, m)
	}
	if len(got) != len(ids) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(ids), out.String())
	}
	tests := []struct {
		path, input, result string
		batch               bool
	}{
		{"crmauthz/decision", `{"subject":"u-1","action":"add_follower","resource":{"type":"contact","id":"c-1"},"target":"**REDACTED**"}`, `{"allow":true,"reason":"owner"}`, false},
		{"crmauthz/decision", `{"subject":"u-2","action":"edit","resource":{"type":"contact","id":"c-1"}}`, `{"allow":true,"reason":"follower"}`, true},
		{"crmauthz/decision", `{"subject":"u-2","action":"delete","resource":{"type":"contact","id":"c-1"}}`, `{"allow":false,"reason":"follower_not_permitted"}`, true},
		{"crmauthz/decision", `{"subject":"u-2","action":"view","resource":{"type":"contact","id":"c-1"}}`, `{"allow":true,"reason":"follower"}`, false},
		{"crmauthz/allow", `{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}`, `true`, false},
	}
	for i, tt := range tests {
		t.Run(ids[i], func(t *testing.T) {
			m := got[i]
			if m["decision_id"] != ids[i] || m["path"] != tt.path {
				t.Errorf("decision_id %v path %v, want %s %s (the reply's id)", m["decision_id"], m["path"], ids[i], tt.path)
			}
			if b, _ := m["batch_decision_id"].(string); (b == batch) != tt.batch {
				t.Errorf("batch_decision_id %q", b)
			}
			sameJSON(t, "input", m["input"], tt.input)
			sameJSON(t, "result", m["result"], tt.result)
			want := map[string]any{"id": "i-1", "version": "test", "policy_revision": rev, "applied_seq": "3"}
			sameJSON(t, "labels", m["labels"], mustJSON(t, want))
			if ns, _ := m["metrics"].(map[string]any)["timer_server_handler_ns"].(float64); ns <= 0 {
				t.Errorf("timer_server_handler_ns = %v", m["metrics"])
			}
			if _, err := time.Parse(time.RFC3339Nano, m["timestamp"].(string)); err != nil {
				t.Error(err)
			}
		})
	}
}

func mustJSON(tb testing.TB, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func sameJSON(tb testing.TB, what string, got any, want string) {
	tb.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		tb.Fatal(err)
	}
	if mustJSON(tb, got) != mustJSON(tb, w) {
		tb.Errorf("%s = %s, want %s", what, mustJSON(tb, got), want)
	}
}

// dropped reads crmauthz_decision_log_dropped_total{reason} from the registry.
func dropped(tb testing.TB, m *metrics.Metrics, reason string) float64 {
	tb.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "crmauthz_decision_log_dropped_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestDecisionLogFullDoesNotBlock logs into a pipe nobody reads: the
// writer blocks, the queue fills, and decisions go on, their lines dropped
// and counted.
func TestDecisionLogFullDoesNotBlock(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var dl *decisionlog.Logger
	ls := newLoggedServer(t, func(m *metrics.Metrics) *decisionlog.Logger {
		dl, err = decisionlog.New(decisionlog.Config{Output: w, BufferSize: 4, OnDrop: m.DecisionLogDropped,
			CloseTimeout: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return dl
	})
	// 1000 checks make ~250 KB of lines: more than the pipe and the writer's buffer hold.
	var sb strings.Builder
	sb.WriteString(`{"subject":"u-2","checks":[`)
	for i := range 1000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"action":"view","resource":{"type":"contact","id":"c-1"}}`)
	}
	sb.WriteString(`]}`)
	for i := range 20 {
		if code, body := ls.post(t, "/v1/decisions", sb.String()); code != 200 {
			t.Fatalf("batch %d: %d %v", i, code, body)
		}
		if code, body := ls.post(t, "/v1/decision", `{"subject":"u-2","action":"view","resource":{"type":"contact","id":"c-1"}}`); code != 200 || body["allow"] != true {
			t.Fatalf("decision %d: %d %v", i, code, body)
		}
	}
	if n := dropped(t, ls.m, decisionlog.DropBufferFull); n < 10_000 {
		t.Errorf("crmauthz_decision_log_dropped_total{reason=\"buffer_full\"} = %v, want most of the 20,020 lines", n)
	}
	if err := dl.Close(); err == nil {
		t.Error("Close with a blocked output: no error")
	}
	r.Close() // the writer gets EPIPE and stops
}

// BenchmarkDecisionLog measures the decision handler with the decision log
// off, on (written to io.Discard) and sampled at 1%.
func BenchmarkDecisionLog(b *testing.B) {
	w := dataset.New(dataset.Config{Records: 10_000, Users: 1_000})
	bodies := make([]string, 1024)
	for i := range bodies {
		bodies[i] = string(w.RequestAt(i).AppendJSON(nil))
	}
	for _, bc := range []struct {
		name string
		rate float64 // < 0: off
	}{{"off", -1}, {"on", 1}, {"sampled1pct", 0.01}} {
		b.Run(bc.name, func(b *testing.B) {
			ts := newTestServer(b, &w)
			if bc.rate >= 0 {
				dl, err := decisionlog.New(decisionlog.Config{Output: io.Discard, SampleRate: bc.rate, BufferSize: 1 << 16})
				if err != nil {
					b.Fatal(err)
				}
				defer dl.Close()
				ts.dlog = dl
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				rec := serve(ts.decision, http.MethodPost, "/v1/decision", bodies[i%len(bodies)], nil)
				if rec.Code != 200 {
					b.Fatal(rec.Body.String())
				}
			}
		})
	}
}
