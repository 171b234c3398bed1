package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/crmauthz/crmauthz/internal/natstest"
	"github.com/crmauthz/crmauthz/internal/tracing/tracingtest"
)

// TestTracingPublishCommands: publish and snapshot publish take serve's
// tracing flags (and their CRMAUTHZ_* twins), so a publish is traced end to
// end: crmauthz publish is a producer span crmauthz.publish whose trace
// context each message carries (the sidecar's batch spans are its children),
// and snapshot publish a producer span crmauthz.snapshot.publish whose trace
// context the object carries (a sidecar's load of it is its child).
func TestTracingPublishCommands(t *testing.T) {
	rcv := tracingtest.Start(t)
	srv := natstest.Start(t, natstest.Options{})
	url := srv.URL()
	dir := t.TempDir()
	events := filepath.Join(dir, "events.ndjson")
	var body strings.Builder
	for _, id := range []string{"u-1", "u-2", "u-3"} {
		body.WriteString(`{"op":"user.upsert","user":{"id":"` + id + `","role":"user","location_ids":["loc-1"]}}` + "\n")
	}
	snap := filepath.Join(dir, "snap.ndjson")
	if err := os.WriteFile(events, []byte(body.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(snap, []byte("{\"seq\": 10}\n{\"user\": {\"id\": \"u-9\", \"role\": \"user\", \"location_ids\": []}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sidecar := func() *proc {
		return startServer(t, t.TempDir(), "--replication-source", url, "--nats-stream", "PT", "--nats-subject", "pt.events",
			"--nats-snapshot-bucket", "PTSNAP", "--otlp-endpoint", rcv.Addr, "--otlp-insecure")
	}

	// publish, traced through the environment twins
	code, out, errOut := natsRun(t, []string{"CRMAUTHZ_OTLP_ENDPOINT=" + rcv.Addr, "CRMAUTHZ_OTLP_INSECURE=true"},
		"publish", "--nats", url, "--stream", "PT", "--subject", "pt.events", "--create", events)
	if code != 0 || !strings.Contains(out, `"published":3`) {
		t.Fatalf("publish: exit %d, %s %s", code, out, errOut)
	}
	pub := rcv.WaitSpan(t, "crmauthz.publish", "") // flushed before the command exits
	if pub.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER {
		t.Errorf("crmauthz.publish is of kind %v, want producer", pub.GetKind())
	}
	for key, want := range map[string]any{"crmauthz.replication.applied": int64(3), "crmauthz.applied_seq": int64(3)} {
		if got, _ := tracingtest.Attr(pub, key); got != want {
			t.Errorf("crmauthz.publish: %s = %v, want %v", key, got, want)
		}
	}
	a := sidecar()
	natsWaitSeq(t, time.Minute, 3, a)
	a.stop() // flushes its spans
	var batches int
	for _, sp := range rcv.Spans() {
		if sp.GetName() != "crmauthz.replication.batch" {
			continue
		}
		batches++
		if !bytes.Equal(sp.GetTraceId(), pub.GetTraceId()) || !bytes.Equal(sp.GetParentSpanId(), pub.GetSpanId()) {
			t.Errorf("a batch span (trace %x, parent %x) is not a child of crmauthz.publish (trace %x, span %x)",
				sp.GetTraceId(), sp.GetParentSpanId(), pub.GetTraceId(), pub.GetSpanId())
		}
	}
	if batches == 0 {
		t.Fatal("no span of the sidecar's batches")
	}

	// snapshot publish, traced through the flags; the stream then starts
	// past it, so a new sidecar loads it.
	code, out, errOut = natsRun(t, nil, "snapshot", "publish", "--nats", url, "--bucket", "PTSNAP", "--create",
		"--otlp-endpoint", rcv.Addr, "--otlp-insecure", snap)
	if code != 0 || !strings.Contains(out, `"seq":10`) {
		t.Fatalf("snapshot publish: exit %d, %s %s", code, out, errOut)
	}
	put := rcv.WaitSpan(t, "crmauthz.snapshot.publish", "")
	natsPurgeTo(t, url, "PT", 11)
	b := sidecar()
	natsWaitSeq(t, time.Minute, 10, b)
	b.stop()
	load := rcv.WaitSpan(t, "crmauthz.snapshot.load", "")
	if !bytes.Equal(load.GetTraceId(), put.GetTraceId()) || !bytes.Equal(load.GetParentSpanId(), put.GetSpanId()) {
		t.Errorf("the sidecar's load (trace %x, parent %x) is not a child of crmauthz.snapshot.publish (trace %x, span %x)",
			load.GetTraceId(), load.GetParentSpanId(), put.GetTraceId(), put.GetSpanId())
	}
}

// TestPublishTracingFlagsRefused: the tracing flags of publish and snapshot
// publish follow serve's rules, from the command line or their twins: exit 2
// before anything is sent.
func TestPublishTracingFlagsRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "e.ndjson")
	if err := os.WriteFile(file, []byte(`{"op":"user.upsert","user":{"id":"u-1","role":"user","location_ids":[]}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmds := map[string][]string{
		"publish":          {"publish", "--nats", "nats://127.0.0.1:1"},
		"snapshot publish": {"snapshot", "publish", "--nats", "nats://127.0.0.1:1", "--bucket", "B"},
	}
	cases := []struct {
		name  string
		args  []string
		env   []string
		wants []string
	}{
		{"an endpoint with a scheme", []string{"--otlp-endpoint", "http://collector:4317"}, nil,
			[]string{`--otlp-endpoint="http://collector:4317" (or CRMAUTHZ_OTLP_ENDPOINT)`, "want HOST:PORT of an OTLP/gRPC receiver"}},
		{"insecure without an endpoint", []string{"--otlp-insecure"}, nil, []string{"--otlp-insecure", "want it with --otlp-endpoint"}},
		{"a CA file with insecure", []string{"--otlp-endpoint", "c:4317", "--otlp-insecure", "--otlp-ca-file", "ca.pem"}, nil,
			[]string{"--otlp-ca-file", "want it without --otlp-insecure"}},
		{"a ratio from the environment", nil, []string{"CRMAUTHZ_OTLP_ENDPOINT=c:4317", "CRMAUTHZ_TRACE_SAMPLING_RATIO=2"},
			[]string{"CRMAUTHZ_TRACE_SAMPLING_RATIO", "want a fraction from 0 to 1"}},
	}
	for name, base := range cmds {
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				args := append(append(append([]string{}, base...), tc.args...), file)
				code, out, errOut := natsRun(t, tc.env, args...)
				if code != exitUsage || out != "" {
					t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d and no result", code, out, errOut, exitUsage)
				}
				for _, w := range tc.wants {
					if !strings.Contains(errOut, w) {
						t.Errorf("stderr %q does not say %q", errOut, w)
					}
				}
			})
		}
	}
}

// natsPurgeTo purges the stream below seq: its first seq is then seq.
func natsPurgeTo(tb testing.TB, url, stream string, seq uint64) {
	tb.Helper()
	ctx := context.Background()
	st, err := natstest.JetStream(tb, url).Stream(ctx, stream)
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(seq)); err != nil {
		tb.Fatal(err)
	}
}
