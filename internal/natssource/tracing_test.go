package natssource

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/crmauthz/crmauthz/internal/natspub"
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

// TestTracingParentFromMessages: a batch's span continues the trace of its
// first message that carries a valid traceparent (natspub writes the
// publisher's span's); a batch without one, or with a malformed one, is a
// root span, and the malformed header is logged (never its value) and not
// trusted. No span holds a subject, an id, a body or a header's value.
func TestTracingParentFromMessages(t *testing.T) {
	const (
		foreignTrace = "0af7651916cd43dd8448eb211c80319c"
		foreignSpan  = "b7ad6b7169203331"
		malformed    = "00-0af7651916cd43dd8448eb211c80319c-zzzzzzzzzzzzzzzz-01"
	)
	type msg struct {
		event  string
		header nats.Header // nil: published with natspub.Publish under the publisher's span
	}
	cases := []struct {
		name string
		msgs []msg
		// parent: "publisher" (the span natspub published under), a span id
		// in hex, or "" for a root span
		parent    string
		malformed bool // a warning about a malformed traceparent is logged
	}{
		{"published under a span", []msg{{userEvent("u-1"), nil}, {userEvent("u-2"), nil}}, "publisher", false},
		{"no headers", []msg{{userEvent("u-1"), nats.Header{}}, {userEvent("u-2"), nats.Header{}}}, "", false},
		{"a malformed traceparent", []msg{{userEvent("u-1"), nats.Header{"traceparent": {malformed}}}}, "", true},
		{"an empty traceparent", []msg{{userEvent("u-1"), nats.Header{"traceparent": {""}}}}, "", true},
		{"the first message with one decides", []msg{
			{userEvent("u-1"), nats.Header{}},
			{userEvent("u-2"), nats.Header{"traceparent": {malformed}}},
			{userEvent("u-3"), nats.Header{"Traceparent": {"00-" + foreignTrace + "-" + foreignSpan + "-01"}, "tracestate": {"vendor=x"}}},
			{userEvent("u-4"), nil},
		}, foreignSpan, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv := tracingtest.Start(t)
			tr := rcv.Tracer(t, 1)
			srv := natstest.Start(t, natstest.Options{})
			js := jsClient(t, srv.URL())
			createStream(t, js, "TP", "tp.events")

			pctx, pub := tr.Start(context.Background(), "publisher", trace.SpanKindProducer)
			for _, m := range tc.msgs {
				if m.header == nil {
					if _, err := natspub.Publish(pctx, js, natspub.NewEventReader(strings.NewReader(m.event)),
						natspub.PublishOptions{Stream: "TP", Subject: "tp.events", Tracer: tr}); err != nil {
						t.Fatal(err)
					}
					continue
				}
				nm := nats.NewMsg("tp.events")
				nm.Data, nm.Header = []byte(m.event), m.header
				if _, err := js.PublishMsg(context.Background(), nm); err != nil {
					t.Fatal(err)
				}
			}
			pub.End()
			want := tc.parent
			if want == "publisher" {
				want = pub.SpanContext().SpanID().String()
			}

			sc := newSidecar(t)
			// one batch: every message is in the stream before the sidecar starts
			sc.start(t, Config{URL: srv.URL(), Stream: "TP", Subject: "tp.events", Tracer: tr, BatchWait: time.Second})
			n := uint64(len(tc.msgs))
			waitApplied(t, sc, n)
			var batch *tracepb.Span
			waitFor(t, time.Minute, "the batch's span", func() bool {
				if err := tr.ForceFlush(context.Background()); err != nil {
					t.Fatal(err)
				}
				for _, sp := range rcv.Spans() {
					if seq, _ := tracingtest.Attr(sp, "crmauthz.applied_seq"); sp.GetName() == tracing.SpanReplication && seq == int64(n) {
						batch = sp
					}
				}
				return batch != nil
			})
			if got, _ := tracingtest.Attr(batch, "crmauthz.replication.applied"); got != int64(n) {
				t.Fatalf("the batch applied %v events, want %d in one batch", got, n)
			}
			if got := hex.EncodeToString(batch.GetParentSpanId()); got != want {
				t.Errorf("the batch's parent span is %q, want %q", got, want)
			}
			switch tc.parent {
			case "publisher":
				if tid := pub.SpanContext().TraceID(); !bytes.Equal(batch.GetTraceId(), tid[:]) {
					t.Errorf("the batch's trace %x is not the publisher's %s", batch.GetTraceId(), pub.SpanContext().TraceID())
				}
			case foreignSpan:
				if got := hex.EncodeToString(batch.GetTraceId()); got != foreignTrace {
					t.Errorf("the batch's trace %s, want %s", got, foreignTrace)
				}
				if got := batch.GetTraceState(); got != "vendor=x" {
					t.Errorf("tracestate %q, want vendor=x", got)
				}
			}
			logs := sc.logs.String()
			if got := strings.Contains(logs, "malformed traceparent"); got != tc.malformed {
				t.Errorf("a malformed traceparent logged: %v, want %v; logs:\n%s", got, tc.malformed, logs)
			}
			for _, text := range tracingtest.AllText(batch) {
				for _, secret := range []string{"u-1", "u-2", "tp.events", "zzzzzzzz", foreignSpan, "vendor=x", `"op"`} {
					if strings.Contains(text, secret) {
						t.Errorf("the batch's span shows %q in %q", secret, text)
					}
				}
			}
			for _, secret := range []string{"zzzzzzzz", foreignSpan, "vendor=x"} {
				if strings.Contains(logs, secret) {
					t.Errorf("a header's value %q is logged:\n%s", secret, logs)
				}
			}
		})
	}
}
