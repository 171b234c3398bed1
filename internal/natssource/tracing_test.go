package natssource

import (
	"context"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/crmauthz/crmauthz/internal/natstest"
	"github.com/crmauthz/crmauthz/internal/tracing"
	"github.com/crmauthz/crmauthz/internal/tracing/tracingtest"
)

// TestTracingBatches: each batch applied from the stream is a consumer span
// with its event count and the applied_seq after it.
func TestTracingBatches(t *testing.T) {
	rcv := tracingtest.Start(t)
	tr := rcv.Tracer(t, 1)

	srv := natstest.Start(t, natstest.Options{})
	js := jsClient(t, srv.URL())
	createStream(t, js, "TR", "tr.events")
	publish(t, js, "TR", "tr.events", userEvents(1, 5)...)
	sc := newSidecar(t)
	sc.start(t, Config{URL: srv.URL(), Stream: "TR", Subject: "tr.events", Tracer: tr})
	waitApplied(t, sc, 5)
	// A span ends just after its commit, which waitApplied may see first.
	var events int64
	waitFor(t, time.Minute, "the spans of 5 events", func() bool {
		if err := tr.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
		events = 0
		for _, sp := range rcv.Spans() {
			if sp.GetName() != tracing.SpanReplication {
				continue
			}
			if sp.GetKind() != tracepb.Span_SPAN_KIND_CONSUMER {
				t.Errorf("kind %v, want consumer", sp.GetKind())
			}
			if src, _ := tracingtest.Attr(sp, "crmauthz.replication.source"); src != "nats" {
				t.Errorf("source %v, want nats", src)
			}
			n, _ := tracingtest.Attr(sp, "crmauthz.replication.applied")
			events += n.(int64)
		}
		return events >= 5
	})
	if events != 5 {
		t.Errorf("the batch spans applied %d events, want 5", events)
	}
}
