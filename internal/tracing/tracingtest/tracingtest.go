// Package tracingtest is an OTLP/gRPC trace receiver on loopback for tests:
// the collector's TraceService, keeping every span it is sent. Only tests
// import it.
package tracingtest

import (
	"context"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	collpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/crmauthz/crmauthz/internal/tracing"
)

// Receiver receives spans over OTLP/gRPC (plaintext, loopback).
type Receiver struct {
	collpb.UnimplementedTraceServiceServer
	Addr string // host:port

	mu       sync.Mutex
	spans    []*tracepb.Span
	requests int
	count    int  // spans received
	discard  bool // count them, keep none (benchmarks)
	changed  chan struct{}
}

// Start starts a receiver on a free loopback port; it stops when tb ends.
func Start(tb testing.TB) *Receiver { tb.Helper(); return start(tb, false) }

// StartDiscarding starts a receiver that counts the spans and keeps none,
// so that a benchmark's heap does not grow with them.
func StartDiscarding(tb testing.TB) *Receiver { tb.Helper(); return start(tb, true) }

func start(tb testing.TB, discard bool) *Receiver {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &Receiver{Addr: ln.Addr().String(), changed: make(chan struct{}), discard: discard}
	gs := grpc.NewServer()
	collpb.RegisterTraceServiceServer(gs, r)
	go func() { _ = gs.Serve(ln) }()
	tb.Cleanup(gs.Stop)
	return r
}

// Tracer returns a Tracer exporting to r in plaintext, sampling a ratio of
// the traces it starts; it is shut down when tb ends.
func (r *Receiver) Tracer(tb testing.TB, ratio float64) *tracing.Tracer {
	tb.Helper()
	cfg := tracing.DefaultConfig()
	cfg.Endpoint, cfg.Insecure, cfg.SamplingRatio = r.Addr, true, ratio
	tr, err := tracing.New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if tr == nil {
		tb.Fatal("tracing.New returned nil with an endpoint")
	}
	tb.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr
}

// Export implements the collector's TraceService.
func (r *Receiver) Export(_ context.Context, req *collpb.ExportTraceServiceRequest) (*collpb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.count += len(ss.GetSpans())
			if !r.discard {
				r.spans = append(r.spans, ss.GetSpans()...)
			}
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
	return &collpb.ExportTraceServiceResponse{}, nil
}

// Requests is the number of export calls received.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Count is the number of spans received.
func (r *Receiver) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// Spans returns the spans received so far.
func (r *Receiver) Spans() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...)
}

// WaitSpan waits (at most 10 s) for a span named name whose trace id is
// traceID (hex; "" for any) and returns it.
func (r *Receiver) WaitSpan(tb testing.TB, name, traceID string) *tracepb.Span {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		for _, sp := range r.spans {
			if sp.GetName() == name && (traceID == "" || hex.EncodeToString(sp.GetTraceId()) == traceID) {
				r.mu.Unlock()
				return sp
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			tb.Fatalf("no span %q of trace %q received; got %d spans", name, traceID, len(r.Spans()))
			return nil
		}
	}
}

// Attr returns the attribute key of sp as a Go value (string, bool, int64,
// or a []any of them), and whether it is there.
func Attr(sp *tracepb.Span, key string) (any, bool) {
	for _, kv := range sp.GetAttributes() {
		if kv.GetKey() == key {
			return value(kv.GetValue()), true
		}
	}
	return nil, false
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, value(e))
		}
		return out
	}
	return nil
}

// AllText is every attribute key and string value of sp, its name, events
// and status message, for checking that something (a body) is not there.
func AllText(sp *tracepb.Span) []string {
	out := []string{sp.GetName(), sp.GetStatus().GetMessage()}
	var add func(v *commonpb.AnyValue)
	add = func(v *commonpb.AnyValue) {
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			out = append(out, x.StringValue)
		case *commonpb.AnyValue_ArrayValue:
			for _, e := range x.ArrayValue.GetValues() {
				add(e)
			}
		}
	}
	for _, kv := range sp.GetAttributes() {
		out = append(out, kv.GetKey())
		add(kv.GetValue())
	}
	for _, ev := range sp.GetEvents() {
		out = append(out, ev.GetName())
		for _, kv := range ev.GetAttributes() {
			out = append(out, kv.GetKey())
			add(kv.GetValue())
		}
	}
	return out
}
