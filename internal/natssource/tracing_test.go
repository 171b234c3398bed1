package natssource

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	rcv, tr, srv, js, _ := tracedStream(t, "TR", "tr.events")
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
			rcv, tr, srv, js, _ := tracedStream(t, "TP", "tp.events")

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
			batch := oneBatchSpan(t, rcv, tr, n)
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

// TestTracingLinks: the span of a batch is a child of its first message's
// trace context and links each other distinct one (in the order of the
// messages), at most tracing.MaxLinks; the distinct ones past them are
// counted in crmauthz.trace.links_dropped. Messages without a context, or
// with a malformed one, add nothing.
func TestTracingLinks(t *testing.T) {
	ctxOf := func(i int) string { return fmt.Sprintf("00-%032x-%016x-01", 0xa0000+i, 0xb0000+i) }
	spanOf := func(i int) string { return fmt.Sprintf("%016x", 0xb0000+i) }
	many := make([]int, 0, 1+tracing.MaxLinks+7)
	for i := range cap(many) {
		many = append(many, i+1)
	}
	cases := []struct {
		name    string
		ctxs    []int // per message: the context i (ctxOf), 0 for none, -1 for a malformed one
		links   []int // the contexts linked, in order
		dropped int64 // crmauthz.trace.links_dropped, 0: absent
	}{
		{"one context", []int{1, 1, 1}, nil, 0},
		{"distinct contexts are linked once", []int{0, 1, 2, 1, 0, -1, 3, 2}, []int{2, 3}, 0},
		{"bounded", many, many[1 : 1+tracing.MaxLinks], 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv, tr, srv, js, _ := tracedStream(t, "TL", "tl.events")
			for i, c := range tc.ctxs {
				nm := nats.NewMsg("tl.events")
				nm.Data = []byte(userEvent(fmt.Sprintf("u-%d", i)))
				switch {
				case c > 0:
					nm.Header.Set("traceparent", ctxOf(c))
				case c < 0:
					nm.Header.Set("traceparent", "00-zz-zz-01")
				}
				if _, err := js.PublishMsg(context.Background(), nm); err != nil {
					t.Fatal(err)
				}
			}
			sc := newSidecar(t)
			sc.start(t, Config{URL: srv.URL(), Stream: "TL", Subject: "tl.events", Tracer: tr, BatchWait: time.Second})
			n := uint64(len(tc.ctxs))
			waitApplied(t, sc, n)
			batch := oneBatchSpan(t, rcv, tr, n)
			if got := hex.EncodeToString(batch.GetParentSpanId()); got != spanOf(1) {
				t.Errorf("the batch's parent span is %s, want %s", got, spanOf(1))
			}
			var got, want []string
			for _, l := range batch.GetLinks() {
				got = append(got, hex.EncodeToString(l.GetTraceId())+"-"+hex.EncodeToString(l.GetSpanId()))
			}
			for _, c := range tc.links {
				want = append(want, ctxOf(c)[3:52])
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("links %v, want %v", got, want)
			}
			if d := batch.GetDroppedLinksCount(); d != 0 {
				t.Errorf("the SDK dropped %d links", d)
			}
			dropped, ok := tracingtest.Attr(batch, "crmauthz.trace.links_dropped")
			if (tc.dropped == 0 && ok) || (tc.dropped != 0 && dropped != tc.dropped) {
				t.Errorf("links_dropped = %v (present %v), want %d", dropped, ok, tc.dropped)
			}
		})
	}
}

// TestTracingSnapshotParent: a snapshot object stored with a Tracer
// (natspub.PutSnapshot: a producer span crmauthz.snapshot.publish whose
// trace context the object's headers carry) makes the sidecar's span of its
// load a child of that span; an object without one, or with a malformed one,
// is loaded under a root span, and the malformed header is logged (never its
// value).
func TestTracingSnapshotParent(t *testing.T) {
	const malformed = "00-0af7651916cd43dd8448eb211c80319c-zzzzzzzzzzzzzzzz-01"
	cases := []struct {
		name   string
		traced bool   // PutSnapshot with the Tracer, under a span of the test
		header string // else: a traceparent header put on the object as it is ("" none)
	}{
		{"published under a span", true, ""},
		{"no trace context", false, ""},
		{"a malformed traceparent", false, malformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rcv, tr, srv, js, stream := tracedStream(t, "TS", "ts.events")
			ctx := context.Background()
			obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "tsnaps"})
			if err != nil {
				t.Fatal(err)
			}
			events := userEvents(1, 4)
			publish(t, js, "TS", "ts.events", events...)
			if err := stream.Purge(ctx); err != nil { // the sidecar must bootstrap
				t.Fatal(err)
			}
			snap := strings.NewReader(snapshotAt(t, events))
			var outer trace.Span
			if tc.traced {
				var pctx context.Context
				pctx, outer = tr.Start(ctx, "outer", trace.SpanKindInternal)
				if _, err := natspub.PutSnapshot(pctx, obs, "snap", 4, snap, tr); err != nil {
					t.Fatal(err)
				}
				outer.End()
			} else {
				meta := jetstream.ObjectMeta{Name: "snap", Headers: nats.Header{natspub.SeqHeader: {"4"}}}
				if tc.header != "" {
					meta.Headers["traceparent"] = []string{tc.header}
				}
				if _, err := obs.Put(ctx, meta, snap); err != nil {
					t.Fatal(err)
				}
			}
			sc := newSidecar(t)
			sc.start(t, Config{URL: srv.URL(), Stream: "TS", Subject: "ts.events", SnapshotBucket: "tsnaps", Tracer: tr})
			waitApplied(t, sc, 4)
			if err := tr.ForceFlush(ctx); err != nil {
				t.Fatal(err)
			}
			load := rcv.WaitSpan(t, tracing.SpanSnapshotLoad, "")
			if got, _ := tracingtest.Attr(load, "crmauthz.applied_seq"); got != int64(4) {
				t.Errorf("the load's applied_seq %v, want 4", got)
			}
			if tc.traced {
				put := rcv.WaitSpan(t, tracing.SpanSnapshotPublish, "")
				oid := outer.SpanContext().SpanID()
				if put.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER || !bytes.Equal(put.GetParentSpanId(), oid[:]) {
					t.Errorf("the put's span: kind %v, parent %x; want a producer, child of %s", put.GetKind(), put.GetParentSpanId(), oid)
				}
				if seq, _ := tracingtest.Attr(put, "crmauthz.applied_seq"); seq != int64(4) {
					t.Errorf("the put's seq %v, want 4", seq)
				}
				if size, _ := tracingtest.Attr(put, "crmauthz.snapshot.bytes"); size != int64(snap.Size()) {
					t.Errorf("the put's size %v, want %d", size, snap.Size())
				}
				if !bytes.Equal(load.GetTraceId(), put.GetTraceId()) || !bytes.Equal(load.GetParentSpanId(), put.GetSpanId()) {
					t.Errorf("the load (trace %x, parent %x) is not a child of the put (trace %x, span %x)",
						load.GetTraceId(), load.GetParentSpanId(), put.GetTraceId(), put.GetSpanId())
				}
			} else if len(load.GetParentSpanId()) != 0 {
				t.Errorf("the load has the parent %x, want a root span", load.GetParentSpanId())
			}
			logs := sc.logs.String()
			if got := strings.Contains(logs, "malformed traceparent"); got != (tc.header != "") {
				t.Errorf("a malformed traceparent logged: %v, want %v; logs:\n%s", got, tc.header != "", logs)
			}
			if strings.Contains(logs, "zzzzzzzz") {
				t.Errorf("the header's value is logged:\n%s", logs)
			}
		})
	}
}

// oneBatchSpan waits for the span of the batch that ends at seq n and checks
// that it applied all n events (the test's messages were one batch).
func oneBatchSpan(tb testing.TB, rcv *tracingtest.Receiver, tr *tracing.Tracer, n uint64) *tracepb.Span {
	tb.Helper()
	var batch *tracepb.Span
	waitFor(tb, time.Minute, "the batch's span", func() bool {
		if err := tr.ForceFlush(context.Background()); err != nil {
			tb.Fatal(err)
		}
		for _, sp := range rcv.Spans() {
			if seq, _ := tracingtest.Attr(sp, "crmauthz.applied_seq"); sp.GetName() == tracing.SpanReplication && seq == int64(n) {
				batch = sp
			}
		}
		return batch != nil
	})
	if got, _ := tracingtest.Attr(batch, "crmauthz.replication.applied"); got != int64(n) {
		tb.Fatalf("the batch applied %v events, want %d in one batch", got, n)
	}
	return batch
}

// tracedStream starts what a tracing test needs: an OTLP receiver and a
// tracer exporting to it, a NATS server and the stream name (subject).
func tracedStream(tb testing.TB, name, subject string) (*tracingtest.Receiver, *tracing.Tracer, *natstest.Server, jetstream.JetStream, jetstream.Stream) {
	tb.Helper()
	rcv := tracingtest.Start(tb)
	tr := rcv.Tracer(tb, 1)
	srv := natstest.Start(tb, natstest.Options{})
	js := natstest.JetStream(tb, srv.URL())
	return rcv, tr, srv, js, createStream(tb, js, name, subject)
}
