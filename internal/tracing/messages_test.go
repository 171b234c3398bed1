package tracing_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/tracing"
	"github.com/crmauthz/crmauthz/internal/tracing/tracingtest"
)

// TestMessageHeaders: InjectMessage writes the span's trace context under the
// W3C names as they are (NATS header names are case-sensitive), nothing
// without a span; Parent tells a valid traceparent (in any case) from a
// malformed one and from none.
func TestMessageHeaders(t *testing.T) {
	tr := tracingtest.Start(t).Tracer(t, 1)
	ctx, sp := tr.Start(context.Background(), "publish", trace.SpanKindProducer)
	defer sp.End()
	h := map[string][]string{}
	tr.InjectMessage(ctx, h)
	want := "00-" + sp.SpanContext().TraceID().String() + "-" + sp.SpanContext().SpanID().String() + "-01"
	if got := h["traceparent"]; len(got) != 1 || got[0] != want {
		t.Fatalf("headers %v, want traceparent %s", h, want)
	}
	empty := map[string][]string{}
	tr.InjectMessage(context.Background(), empty)
	if len(empty) != 0 {
		t.Errorf("headers %v injected without a span", empty)
	}

	cases := []struct {
		name          string
		h             map[string][]string
		ok, malformed bool
	}{
		{"none", nil, false, false},
		{"other headers", map[string][]string{"Nats-Msg-Id": {"x"}}, false, false},
		{"valid", map[string][]string{"traceparent": {sampled}}, true, false},
		{"valid, HTTP case", map[string][]string{"Traceparent": {sampled}}, true, false},
		{"not hex", map[string][]string{"traceparent": {"00-" + traceID + "-zzzzzzzzzzzzzzzz-01"}}, false, true},
		{"all-zero trace id", map[string][]string{"traceparent": {"00-00000000000000000000000000000000-" + parentID + "-01"}}, false, true},
		{"empty", map[string][]string{"traceparent": {""}}, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, malformed := tracing.Parent(tracing.MessageHeaders(tc.h))
			if ok != tc.ok || malformed != tc.malformed {
				t.Errorf("Parent = %v, %v; want %v, %v", ok, malformed, tc.ok, tc.malformed)
			}
		})
	}
}
