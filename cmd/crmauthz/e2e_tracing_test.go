package main

import (
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

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

// TestTracingLoadSnapshotFlag: serve --load-snapshot at start is a
// crmauthz.snapshot.load span (source file) with the counts of the file and
// the applied_seq after it, as a PUT of the snapshot is; a file that does not
// load makes serve fail, and its span is an error.
func TestTracingLoadSnapshotFlag(t *testing.T) {
	demo, err := os.ReadFile(demoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	var users, records int64
	for _, l := range strings.Split(string(demo), "\n") {
		users += int64(btoi(strings.HasPrefix(l, `{"user":`)))
		records += int64(btoi(strings.HasPrefix(l, `{"record":`)))
	}
	bad := filepath.Join(t.TempDir(), "bad.ndjson")
	if err := os.WriteFile(bad, []byte("{\"seq\":7}\n{\"user\":{\"id\":\"u-1\",\"role\":\"owner\",\"location_ids\":[]}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file string
		ok         bool
		users      int64
		records    int64
		seq        int64
	}{
		{"the demo", demoSnapshot, true, users, records, 100},
		{"an invalid line", bad, false, 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv := tracingtest.Start(t)
			args := []string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
				"--load-snapshot", tc.file, "--otlp-endpoint", rcv.Addr, "--otlp-insecure"}
			if tc.ok {
				startWith(t, "", args, nil).stop() // flushes the spans
			} else if out, err := exec.Command(binPath, args...).CombinedOutput(); err == nil {
				t.Fatalf("serve started with an invalid snapshot:\n%s", out)
			}
			sp := rcv.WaitSpan(t, "crmauthz.snapshot.load", "")
			if len(sp.GetParentSpanId()) != 0 {
				t.Errorf("the load's span has a parent %x", sp.GetParentSpanId())
			}
			want := map[string]any{"crmauthz.replication.source": "file", "crmauthz.snapshot.users": tc.users,
				"crmauthz.snapshot.records": tc.records, "crmauthz.applied_seq": tc.seq}
			for k, v := range want {
				if got, _ := tracingtest.Attr(sp, k); got != v {
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
			if isErr := sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR; isErr == tc.ok {
				t.Errorf("span status %v, want an error: %v", sp.GetStatus(), !tc.ok)
			}
			for _, text := range tracingtest.AllText(sp) {
				if strings.Contains(text, "u-") || strings.Contains(text, tc.file) {
					t.Errorf("the span shows an id or the file: %q", text)
				}
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
