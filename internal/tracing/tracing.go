// Package tracing exports OpenTelemetry spans of decisions, replication
// batches and snapshot loads over OTLP/gRPC (docs/operations.md, "Tracing").
//
// A nil *Tracer is tracing off: New returns nil when Config.Endpoint is empty,
// and every caller checks for nil before it calls anything here, so a
// decision pays one comparison and nothing else. The Tracer has its own
// TracerProvider (never otel's global one) and reads the W3C trace context
// (traceparent, tracestate) of the caller, so a decision is a child of the
// gateway's span.
package tracing

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Config configures New.
type Config struct {
	// Endpoint is the OTLP/gRPC receiver, host:port (a collector, Tempo,
	// Jaeger). "" turns tracing off.
	Endpoint string
	// Insecure sends in plaintext; otherwise TLS, verified against CAFile
	// or the system's roots.
	Insecure bool
	// CAFile is a PEM bundle of the CAs that sign the receiver's
	// certificate; "" for the system's roots. Not with Insecure.
	CAFile string
	// SamplingRatio is the share of root traces sampled, 0..1. A request
	// that carries a traceparent follows its sampled flag instead.
	SamplingRatio float64
	// ServiceName and ServiceVersion name the resource; OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES override them.
	ServiceName    string
	ServiceVersion string
	// ExportTimeout bounds one export call.
	ExportTimeout time.Duration
	// MaxQueue is the most spans waiting for export; more are dropped, a
	// decision never waits for the exporter.
	MaxQueue int
	// BatchTimeout is the longest a finished span waits to be exported.
	BatchTimeout time.Duration
	// Logger gets a failed export (at most one line a minute); default
	// slog.Default(). Never otel's global error handler, which would print
	// plain lines among the JSON logs.
	Logger *slog.Logger
}

// DefaultConfig is tracing off, with the settings it uses once an Endpoint
// is set.
func DefaultConfig() Config {
	return Config{
		SamplingRatio: 1,
		ServiceName:   "crmauthz",
		ExportTimeout: 10 * time.Second,
		MaxQueue:      2048,
		BatchTimeout:  5 * time.Second,
	}
}

// Validate checks cfg; the flags' rules (cmd/crmauthz/validate.go) say the same.
func (c Config) Validate() error {
	if c.Endpoint != "" {
		if err := ValidateEndpoint(c.Endpoint); err != nil {
			return err
		}
	}
	if err := ValidateRatio(c.SamplingRatio); err != nil {
		return err
	}
	if c.Insecure && c.CAFile != "" {
		return errors.New("tracing: a CA file and insecure (plaintext) exclude each other")
	}
	if c.ExportTimeout < 0 || c.BatchTimeout < 0 || c.MaxQueue < 0 {
		return errors.New("tracing: negative timeout or queue size")
	}
	return nil
}

// ValidateEndpoint checks an OTLP/gRPC endpoint: host:port, no scheme.
func ValidateEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("the OTLP endpoint %q is not host:port (no scheme, no path): %v", ep, err)
	}
	if host == "" {
		return fmt.Errorf("the OTLP endpoint %q has no host", ep)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("the OTLP endpoint %q has no valid port", ep)
	}
	return nil
}

// ValidateRatio checks a sampling ratio: a number from 0 to 1.
func ValidateRatio(r float64) error {
	if !(r >= 0 && r <= 1) { // also NaN
		return fmt.Errorf("the trace sampling ratio %v is not between 0 and 1", r)
	}
	return nil
}

// Tracer starts the spans of one process. nil is off.
type Tracer struct {
	tp   *sdktrace.TracerProvider
	tr   trace.Tracer
	prop propagation.TraceContext
}

// New returns the Tracer of cfg: nil (off) when cfg.Endpoint is empty. The
// exporter connects lazily; a receiver that is down costs dropped spans,
// never a failed start.
func New(ctx context.Context, cfg Config) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" {
		return nil, nil
	}
	def := DefaultConfig()
	if cfg.ServiceName == "" {
		cfg.ServiceName = def.ServiceName
	}
	if cfg.ExportTimeout == 0 {
		cfg.ExportTimeout = def.ExportTimeout
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = def.MaxQueue
	}
	if cfg.BatchTimeout == 0 {
		cfg.BatchTimeout = def.BatchTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	creds, err := transportCredentials(cfg)
	if err != nil {
		return nil, err
	}
	// The flags decide the endpoint and its security: these options override
	// OTEL_EXPORTER_OTLP_ENDPOINT, _INSECURE, _CERTIFICATE, _CLIENT_* and
	// _TIMEOUT. The exporter still reads OTEL_EXPORTER_OTLP_HEADERS and
	// _COMPRESSION.
	exp, err := otlptracegrpc.New(ctx,
		otlptracegrpc.WithEndpoint(cfg.Endpoint),
		otlptracegrpc.WithTLSCredentials(creds),
		otlptracegrpc.WithTimeout(cfg.ExportTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: the OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithFromEnv(),
		resource.WithTelemetrySDK(), resource.WithHost(), resource.WithProcessPID())
	if errors.Is(err, resource.ErrPartialResource) {
		// a malformed OTEL_RESOURCE_ATTRIBUTES: the rest is used
		cfg.Logger.Warn("tracing: part of the resource is left out", "err", err)
	} else if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: the resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		// The caller's sampled flag decides when there is a caller; the
		// ratio decides for traces that start here.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SamplingRatio))),
		sdktrace.WithResource(res),
		sdktrace.WithBatcher(&loggingExporter{SpanExporter: exp, log: cfg.Logger},
			sdktrace.WithMaxQueueSize(cfg.MaxQueue),
			sdktrace.WithBatchTimeout(cfg.BatchTimeout),
			sdktrace.WithExportTimeout(cfg.ExportTimeout)),
	)
	return &Tracer{tp: tp, tr: tp.Tracer("github.com/crmauthz/crmauthz")}, nil
}

func transportCredentials(cfg Config) (credentials.TransportCredentials, error) {
	if cfg.Insecure {
		return insecure.NewCredentials(), nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tracing: reading the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tracing: the CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return credentials.NewTLS(tc), nil
}

// loggingExporter logs a failed export (the spans are dropped) and reports
// success to the batch processor, which would hand the error to otel's
// global error handler.
type loggingExporter struct {
	sdktrace.SpanExporter
	log  *slog.Logger
	last atomic.Int64 // unix nanoseconds of the last line logged
}

func (e *loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		now, last := time.Now().UnixNano(), e.last.Load()
		if now-last >= int64(time.Minute) && e.last.CompareAndSwap(last, now) {
			e.log.Warn("exporting spans failed; they are dropped (at most one such line a minute)",
				"spans", len(spans), "err", err)
		}
	}
	return nil
}

// ForceFlush exports every finished span now.
func (t *Tracer) ForceFlush(ctx context.Context) error { return t.tp.ForceFlush(ctx) }

// Shutdown exports what is queued (until ctx is done) and stops the exporter.
func (t *Tracer) Shutdown(ctx context.Context) error { return t.tp.Shutdown(ctx) }

// Headers is where a caller's trace context is read from: http.Header,
// Envoy's header maps (identity.MapHeaders), gRPC metadata (Metadata).
type Headers interface {
	Values(name string) []string
}

// Start starts a span named name. Its parent is the first valid W3C trace
// context among from (a nil entry is skipped), or the span ctx holds; with
// neither it starts a trace. The span must be ended (End, or one of the Set
// helpers then End).
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind, from ...Headers) (context.Context, trace.Span) {
	for _, h := range from {
		if h == nil {
			continue
		}
		if sc := trace.SpanContextFromContext(t.prop.Extract(ctx, carrier{h})); sc.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
			break
		}
	}
	return t.tr.Start(ctx, name, trace.WithSpanKind(kind))
}

// StartSampled is Start, but returns nil (the span ended at once) when the
// span is not sampled, so that the caller builds no attributes for it: a
// caller that checks for a nil Tracer checks the span the same way.
func (t *Tracer) StartSampled(ctx context.Context, name string, kind trace.SpanKind, from ...Headers) (context.Context, trace.Span) {
	ctx, sp := t.Start(ctx, name, kind, from...)
	if !sp.IsRecording() {
		sp.End()
		return ctx, nil
	}
	return ctx, sp
}

// Inject writes the trace context of ctx's span into h (traceparent,
// tracestate), for a request crmauthz sends (the connectors' HTTP sink).
func (t *Tracer) Inject(ctx context.Context, h http.Header) {
	t.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// carrier reads Headers for the propagator (it never writes).
type carrier struct{ h Headers }

func (c carrier) Get(key string) string {
	if v := c.h.Values(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c carrier) Set(string, string) {}
func (c carrier) Keys() []string     { return nil }

// Metadata returns the incoming gRPC metadata of ctx as Headers (nil when
// there is none): Envoy puts the trace context of its ext_authz call there.
func Metadata(ctx context.Context) Headers {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return nil
	}
	return mdHeaders(md)
}

type mdHeaders metadata.MD

func (m mdHeaders) Values(name string) []string { return metadata.MD(m).Get(name) }
