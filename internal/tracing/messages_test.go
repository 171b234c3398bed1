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
// without a span; MessageContext tells a valid traceparent (in any case) from a
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
			sc, malformed := tracing.MessageContext(tracing.MessageHeaders(tc.h))
			if sc.IsValid() != tc.ok || malformed != tc.malformed {
				t.Errorf("MessageContext = %v, %v; want valid %v, %v", sc, malformed, tc.ok, tc.malformed)
			}
		})
	}
}

// TestContexts: the first valid context is the parent; each other distinct one (by trace and
// span id) is a link, in the order added, at most MaxLinks; the distinct ones past them are
// counted once each; invalid ones are skipped.
func TestContexts(t *testing.T) {
	sc := func(i int) trace.SpanContext {
		var tid trace.TraceID
		var sid trace.SpanID
		tid[0], tid[15], sid[7] = 1, byte(i), byte(i)
		return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, Remote: true})
	}
	var c tracing.Contexts
	c.Add(trace.SpanContext{})
	if c.Parent().IsValid() {
		t.Fatal("an invalid context became the parent")
	}
	c.Add(sc(1))
	c.Add(sc(1))
	for i := 2; i <= tracing.MaxLinks+5; i++ {
		c.Add(sc(i))
		c.Add(sc(i)) // again: not a new link nor counted twice
		c.Add(sc(1))
	}
	if !c.Parent().Equal(sc(1)) || c.Links() != tracing.MaxLinks || c.Dropped() != 4 {
		t.Fatalf("parent %v, %d links, %d dropped; want sc(1), %d, 4", c.Parent(), c.Links(), c.Dropped(), tracing.MaxLinks)
	}
}
