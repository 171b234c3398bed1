package main

import (
	"encoding/hex"
	"net/http"
	"testing"

	"github.com/crmauthz/crmauthz/internal/tracing/tracingtest"
)

// TestTracingFlags runs serve with and without --otlp-endpoint beside an
// OTLP receiver that the standard OTEL_* variables also point at: spans
// go there only with the flag (the variables do not turn tracing on), with
// the request's traceparent as their parent, and are flushed on SIGTERM.
func TestTracingFlags(t *testing.T) {
	const (
		traceID = "0af7651916cd43dd8448eb211c80319c"
		spanID  = "b7ad6b7169203331"
	)
	cases := []struct {
		name string
		args func(addr string) []string
		want bool // spans received
	}{
		{"off: no --otlp-endpoint", func(string) []string { return nil }, false},
		{"on", func(addr string) []string { return []string{"--otlp-endpoint", addr, "--otlp-insecure"} }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv := tracingtest.Start(t)
			env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Addr, "OTEL_TRACES_EXPORTER=otlp",
				"OTEL_EXPORTER_OTLP_INSECURE=true"}
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
				"--data-dir", t.TempDir()}, tc.args(rcv.Addr)...)
			p := startWith(t, "", args, env)
			hdr := map[string]string{"traceparent": "00-" + traceID + "-" + spanID + "-01"}
			for range 3 {
				code, body := call(t, http.MethodPost, p.base+"/v1/decision",
					map[string]any{"subject": "u-1", "action": "view", "resource": map[string]string{"type": "contact", "id": "c-1"}}, hdr)
				if code != http.StatusOK {
					t.Fatalf("decision: %d %v", code, body)
				}
			}
			p.stop() // flushes the spans
			if !tc.want {
				if n := rcv.Requests(); n != 0 {
					t.Fatalf("%d export requests with tracing off", n)
				}
				return
			}
			sp := rcv.WaitSpan(t, "crmauthz.decision", traceID)
			if got := hex.EncodeToString(sp.GetParentSpanId()); got != spanID {
				t.Errorf("parent %s, want %s", got, spanID)
			}
			if v, _ := tracingtest.Attr(sp, "crmauthz.decision.reason"); v == "" || v == nil {
				t.Errorf("no reason attribute: %v", sp.GetAttributes())
			}
		})
	}
}
