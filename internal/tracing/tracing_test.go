package tracing_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/tracing"
	"github.com/crmauthz/crmauthz/internal/tracing/tracingtest"
)

const (
	traceID  = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentID = "00f067aa0ba902b7"
	sampled  = "00-" + traceID + "-" + parentID + "-01"
	// unsampled: the caller decided not to record this trace
	unsampled = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
)

func TestOffIsNil(t *testing.T) {
	tr, err := tracing.New(context.Background(), tracing.DefaultConfig())
	if err != nil || tr != nil {
		t.Fatalf("New(DefaultConfig()) = %v, %v; want nil, nil (off)", tr, err)
	}
}

func TestParent(t *testing.T) {
	rcv := tracingtest.Start(t)
	tr := rcv.Tracer(t, 1)
	cases := []struct {
		name string
		ctx  context.Context
		from []tracing.Headers
		want string // parent span id; "" for a root
	}{
		{name: "HTTP header", ctx: context.Background(), from: []tracing.Headers{http.Header{"Traceparent": {sampled}}}, want: parentID},
		{name: "Envoy header map", ctx: context.Background(), from: []tracing.Headers{identity.MapHeaders{"traceparent": sampled}}, want: parentID},
		{name: "gRPC metadata first", ctx: metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", sampled)),
			from: []tracing.Headers{nil, identity.MapHeaders{"traceparent": "00-" + traceID + "-1111111111111111-01"}}, want: parentID},
		{name: "malformed is skipped", ctx: context.Background(),
			from: []tracing.Headers{http.Header{"Traceparent": {"00-zz-yy-01"}}, identity.MapHeaders{"traceparent": sampled}}, want: parentID},
		{name: "none: a root", ctx: context.Background(), from: []tracing.Headers{http.Header{}}, want: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			from := tc.from
			if md := tracing.Metadata(tc.ctx); md != nil {
				from = append([]tracing.Headers{md}, from...)
			}
			_, sp := tr.Start(tc.ctx, "test."+tc.name, trace.SpanKindServer, from...)
			want := traceID
			if tc.want == "" {
				want = sp.SpanContext().TraceID().String()
			}
			tracing.EndDecision(sp, tracing.Decision{ID: "d-1", Reason: "owner", Revision: "rev-1", Allow: true})
			if err := tr.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := rcv.WaitSpan(t, "test."+tc.name, want)
			if p := hex.EncodeToString(got.GetParentSpanId()); p != tc.want {
				t.Errorf("parent span id %q, want %q", p, tc.want)
			}
			if v, _ := tracingtest.Attr(got, "crmauthz.decision.reason"); v != "owner" {
				t.Errorf("reason attribute %v, want owner", v)
			}
		})
	}
}

// TestMalformedResourceEnv: a bad OTEL_RESOURCE_ATTRIBUTES is logged and
// left out; it does not stop the start.
func TestMalformedResourceEnv(t *testing.T) {
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "no-value")
	rcv := tracingtest.Start(t)
	var logs syncBuffer
	cfg := tracing.DefaultConfig()
	cfg.Endpoint, cfg.Insecure, cfg.Logger = rcv.Addr, true, slog.New(slog.NewJSONHandler(&logs, nil))
	tr, err := tracing.New(context.Background(), cfg)
	if err != nil || tr == nil {
		t.Fatalf("New: %v, %v", tr, err)
	}
	defer tr.Shutdown(context.Background())
	if !strings.Contains(logs.String(), "part of the resource is left out") {
		t.Errorf("no warning logged: %q", logs.String())
	}
}

// TestSampling: the ratio decides for roots, the caller's flag for the rest.
func TestSampling(t *testing.T) {
	rcv := tracingtest.Start(t)
	tr := rcv.Tracer(t, 0)
	cases := []struct {
		name   string
		h      http.Header
		export bool
	}{
		{"root at ratio 0", http.Header{}, false},
		{"caller sampled", http.Header{"Traceparent": {sampled}}, true},
		{"caller not sampled", http.Header{"Traceparent": {unsampled}}, false},
	}
	for _, tc := range cases {
		_, sp := tr.Start(context.Background(), tc.name, trace.SpanKindServer, tc.h)
		sp.End()
	}
	if err := tr.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	rcv.WaitSpan(t, "caller sampled", traceID)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			for _, sp := range rcv.Spans() {
				if sp.GetName() == tc.name {
					n++
				}
			}
			if got := n == 1; got != tc.export {
				t.Errorf("exported %d spans, want exported=%v", n, tc.export)
			}
		})
	}
}

// TestExportFailureIsLogged: a receiver that is down costs dropped spans
// and one log line a minute, through the Logger (never otel's global error
// handler, which prints plain lines to stderr).
func TestExportFailureIsLogged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var logs syncBuffer
	cfg := tracing.DefaultConfig()
	cfg.Endpoint, cfg.Insecure, cfg.ExportTimeout = addr, true, 200*time.Millisecond
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	tr, err := tracing.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	for range 2 {
		_, sp := tr.Start(context.Background(), "lost", trace.SpanKindServer)
		sp.End()
		if err := tr.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "exporting spans failed"); n != 1 {
		t.Errorf("%d log lines about the failed exports, want 1:\n%s", n, logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*tracing.Config)
		ok   bool
	}{
		{"default", func(*tracing.Config) {}, true},
		{"endpoint", func(c *tracing.Config) { c.Endpoint = "collector:4317" }, true},
		{"scheme", func(c *tracing.Config) { c.Endpoint = "http://collector:4317" }, false},
		{"no port", func(c *tracing.Config) { c.Endpoint = "collector" }, false},
		{"port 0", func(c *tracing.Config) { c.Endpoint = "collector:0" }, false},
		{"no host", func(c *tracing.Config) { c.Endpoint = ":4317" }, false},
		{"ratio 0", func(c *tracing.Config) { c.SamplingRatio = 0 }, true},
		{"ratio above 1", func(c *tracing.Config) { c.SamplingRatio = 1.5 }, false},
		{"ratio negative", func(c *tracing.Config) { c.SamplingRatio = -0.1 }, false},
		{"ratio NaN", func(c *tracing.Config) { c.SamplingRatio = math.NaN() }, false},
		{"CA file and insecure", func(c *tracing.Config) { c.CAFile, c.Insecure = "/ca.pem", true }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tracing.DefaultConfig()
			tc.mod(&cfg)
			if err := cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// BenchmarkSpan is the work tracing adds to one decision when it is on: a
// span started from a request's traceparent, its attributes set, ended and
// exported to an OTLP receiver in this process (whose decoding counts here
// too), sampled or not.
func BenchmarkSpan(b *testing.B) {
	rcv := tracingtest.StartDiscarding(b)
	for _, bc := range []struct {
		name string
		tp   string
	}{{"sampled", sampled}, {"unsampled", unsampled}, {"root-ratio1", ""}} {
		b.Run(bc.name, func(b *testing.B) {
			tr := rcv.Tracer(b, 1)
			h := http.Header{}
			if bc.tp != "" {
				h.Set("Traceparent", bc.tp)
			}
			ctx := context.Background()
			before := rcv.Count()
			b.ReportAllocs()
			for b.Loop() {
				_, sp := tr.Start(ctx, tracing.SpanDecision, trace.SpanKindServer, h)
				tracing.EndDecision(sp, tracing.Decision{ID: "0123456789abcdef-1f", Allow: true, Reason: "owner", Action: "view",
					ResourceType: "contact", Revision: "f276d391951a9708", AppliedSeq: 12345})
			}
			if err := tr.ForceFlush(ctx); err != nil {
				b.Fatal(err)
			}
			// below 1 when the queue was full (spans dropped, never waited for)
			b.ReportMetric(float64(rcv.Count()-before)/float64(b.N), "exported/op")
		})
	}
}
