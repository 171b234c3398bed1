package sink

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/crmauthz/crmauthz/internal/natstest"
	"github.com/crmauthz/crmauthz/internal/replicatest"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/tracing"
	"github.com/crmauthz/crmauthz/internal/tracing/tracingtest"
)

// TestHTTPSinkTraceparent: a batch the HTTP sink posts is a client span,
// and the replica's span of that batch is its child (one trace from the
// connector to the sidecar).
func TestHTTPSinkTraceparent(t *testing.T) {
	rcv := tracingtest.Start(t)
	tr := rcv.Tracer(t, 1)
	rep := replicatest.New(t, replicatest.Config{Logger: quiet, Tracer: tr})
	hs := httptest.NewServer(rep.Server.AdminHandler()) // loopback: no token needed
	defer hs.Close()
	s, err := New(Config{URL: hs.URL, Logger: quiet, Tracer: tr})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(context.Background(), []replication.Event{userEv(1, "u-1", ""), userEv(2, "u-2", "")}); err != nil {
		t.Fatal(err)
	}
	if err := tr.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	client := rcv.WaitSpan(t, tracing.SpanSinkWrite, "")
	server := rcv.WaitSpan(t, tracing.SpanReplication, "")
	if !bytes.Equal(server.GetTraceId(), client.GetTraceId()) || !bytes.Equal(server.GetParentSpanId(), client.GetSpanId()) {
		t.Errorf("the replica's span (trace %x, parent %x) is not a child of the sink's (trace %x, span %x)",
			server.GetTraceId(), server.GetParentSpanId(), client.GetTraceId(), client.GetSpanId())
	}
	if n, _ := tracingtest.Attr(client, "crmauthz.replication.events"); n != int64(2) {
		t.Errorf("the sink span's events = %v, want 2", n)
	}
}

// TestNATSSinkTraceparent: each Write to the NATS sink is a producer span
// whose trace context every message carries, on both paths (a transaction as
// one atomic batch, single events through natspub's Appender), so the
// sidecar's span of the batch applying them is its child.
func TestNATSSinkTraceparent(t *testing.T) {
	rcv := tracingtest.Start(t)
	tr := rcv.Tracer(t, 1)
	srv := natstest.Start(t, natstest.Options{})
	ix := tracedSidecar(t, srv.URL(), "", tr)
	s, err := New(Config{URL: srv.URL(), Logger: quiet, Tracer: tr, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	writes := [][]replication.Event{
		{userEv(1, "u-1", "t1"), userEv(2, "u-2", "t1")}, // one atomic batch
		{userEv(3, "u-3", "")},                           // the Appender
	}
	for _, w := range writes {
		if err := s.Write(context.Background(), w); err != nil {
			t.Fatal(err)
		}
		last := w[len(w)-1].Seq
		waitFor(t, fmt.Sprintf("the sidecar at seq %d", last), func() bool { return ix.AppliedSeq() == last })
	}
	if err := tr.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The spans by the applied_seq they end at.
	spans := func(name string, n int) map[int64]*tracepb.Span {
		t.Helper()
		out := map[int64]*tracepb.Span{}
		waitFor(t, fmt.Sprintf("%d spans %s", n, name), func() bool {
			clear(out)
			for _, sp := range rcv.Spans() {
				if sp.GetName() == name {
					seq, _ := tracingtest.Attr(sp, "crmauthz.applied_seq")
					out[seq.(int64)] = sp
				}
			}
			return len(out) == n
		})
		return out
	}
	sinks, batches := spans(tracing.SpanSinkWrite, 2), spans(tracing.SpanReplication, 2)
	for _, seq := range []int64{2, 3} {
		sink, batch := sinks[seq], batches[seq]
		if sink == nil || batch == nil {
			t.Fatalf("no span of the write or the batch ending at seq %d: %v, %v", seq, sinks, batches)
		}
		if sink.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER {
			t.Errorf("the sink's span is of kind %v, want producer", sink.GetKind())
		}
		if src, _ := tracingtest.Attr(sink, "crmauthz.replication.source"); src != "nats" {
			t.Errorf("the sink's span has source %v, want nats", src)
		}
		if !bytes.Equal(batch.GetTraceId(), sink.GetTraceId()) || !bytes.Equal(batch.GetParentSpanId(), sink.GetSpanId()) {
			t.Errorf("seq %d: the sidecar's span (trace %x, parent %x) is not a child of the sink's (trace %x, span %x)",
				seq, batch.GetTraceId(), batch.GetParentSpanId(), sink.GetTraceId(), sink.GetSpanId())
		}
		for _, text := range append(tracingtest.AllText(sink), tracingtest.AllText(batch)...) {
			if strings.Contains(text, "u-") || strings.Contains(text, DefaultConfig().Subject) {
				t.Errorf("a span shows an id or the subject: %q", text)
			}
		}
	}
}

// TestNATSSinkSnapshotTrace: a snapshot the NATS sink stores (a connector's
// first copy) is a producer span crmauthz.snapshot.publish whose trace
// context the object carries, so the sidecar's span of its load is its child.
func TestNATSSinkSnapshotTrace(t *testing.T) {
	rcv := tracingtest.Start(t)
	tr := rcv.Tracer(t, 1)
	srv := natstest.Start(t, natstest.Options{})
	s, err := New(Config{URL: srv.URL(), Logger: quiet, Tracer: tr, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Snapshot(context.Background(), 3, snapshotOf("u-1", "u-2")); err != nil {
		t.Fatal(err)
	}
	ix := tracedSidecar(t, srv.URL(), DefaultConfig().SnapshotBucket, tr)
	waitFor(t, "the sidecar at seq 3", func() bool { return ix.AppliedSeq() == 3 })
	if err := tr.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	put := rcv.WaitSpan(t, tracing.SpanSnapshotPublish, "")
	load := rcv.WaitSpan(t, tracing.SpanSnapshotLoad, "")
	if put.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER {
		t.Errorf("the put's span is of kind %v, want producer", put.GetKind())
	}
	if seq, _ := tracingtest.Attr(put, "crmauthz.applied_seq"); seq != int64(3) {
		t.Errorf("the put's seq %v, want 3", seq)
	}
	if !bytes.Equal(load.GetTraceId(), put.GetTraceId()) || !bytes.Equal(load.GetParentSpanId(), put.GetSpanId()) {
		t.Errorf("the sidecar's load (trace %x, parent %x) is not a child of the sink's put (trace %x, span %x)",
			load.GetTraceId(), load.GetParentSpanId(), put.GetTraceId(), put.GetSpanId())
	}
	for _, text := range append(tracingtest.AllText(put), tracingtest.AllText(load)...) {
		if strings.Contains(text, "u-") {
			t.Errorf("a span shows an id: %q", text)
		}
	}
}
