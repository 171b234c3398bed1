package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/cliflags"
	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// tracingOptions are the OpenTelemetry flags of serve and of the connectors' sink (docs/operations.md,
// "Tracing"); their defaults are tracing.DefaultConfig()'s.
type tracingOptions struct {
	cfg tracing.Config
}

func addTracingFlags(f *pflag.FlagSet, o *tracingOptions) {
	o.cfg = tracing.DefaultConfig()
	f.StringVar(&o.cfg.Endpoint, "otlp-endpoint", o.cfg.Endpoint, "export OpenTelemetry spans of decisions, replication batches and snapshot loads over OTLP/gRPC to HOST:PORT (a collector); \"\": tracing off")
	f.BoolVar(&o.cfg.Insecure, "otlp-insecure", o.cfg.Insecure, "send spans to --otlp-endpoint in plaintext (default: TLS)")
	f.StringVar(&o.cfg.CAFile, "otlp-ca-file", o.cfg.CAFile, "PEM file of the CAs that sign --otlp-endpoint's certificate (default: the system's)")
	f.Float64Var(&o.cfg.SamplingRatio, "trace-sampling-ratio", o.cfg.SamplingRatio, "fraction of traces started here that are sampled, 0 to 1; a request with a traceparent follows its sampled flag")
}

// The rules of the tracing flags (in validate.go's serveRules and
// connect_validate.go's sinkRules).

func (o *tracingOptions) endpointRule() string {
	if o.cfg.Endpoint != "" && tracing.ValidateEndpoint(o.cfg.Endpoint) != nil {
		return "want HOST:PORT of an OTLP/gRPC receiver (no scheme), e.g. otel-collector:4317, or nothing (off)"
	}
	return ""
}

func (o *tracingOptions) insecureRule() string { return o.needsEndpoint(o.cfg.Insecure) }

func (o *tracingOptions) caFileRule() string {
	if w := cliflags.BlankOrPath(o.cfg.CAFile); w != "" {
		return w
	}
	if o.cfg.CAFile != "" && o.cfg.Insecure {
		return "want it without --otlp-insecure"
	}
	return o.needsEndpoint(o.cfg.CAFile != "")
}

func (o *tracingOptions) ratioRule() string {
	if tracing.ValidateRatio(o.cfg.SamplingRatio) != nil {
		return "want a fraction from 0 to 1"
	}
	return ""
}

func (o *tracingOptions) needsEndpoint(set bool) string {
	if set && o.cfg.Endpoint == "" {
		return "want it with --otlp-endpoint"
	}
	return ""
}

// rules are the rules of the tracing flags alone, for the commands whose
// other flags are checked where they are used (publish, snapshot publish).
func (o *tracingOptions) rules() map[string]cliflags.Rule {
	return map[string]cliflags.Rule{
		"otlp-endpoint":        o.endpointRule,
		"otlp-insecure":        o.insecureRule,
		"otlp-ca-file":         o.caFileRule,
		"trace-sampling-ratio": o.ratioRule,
	}
}

// commandTracer is newTracer for a one-shot command (publish, snapshot
// publish): its logger writes warnings (a failed export) to stderr as JSON,
// beside the command's result on stdout. The tracer is nil when
// --otlp-endpoint is not set; the caller shuts it down (shutdownTracer).
func (o tracingOptions) commandTracer(ctx context.Context) (*tracing.Tracer, *slog.Logger, error) {
	log, err := newLogger("warn")
	if err != nil {
		return nil, nil, err
	}
	tr, err := o.newTracer(ctx, log)
	return tr, log, err
}

// newTracer returns the tracer of the flags: nil when --otlp-endpoint is not set.
func (o tracingOptions) newTracer(ctx context.Context, log *slog.Logger) (*tracing.Tracer, error) {
	cfg := o.cfg
	cfg.ServiceVersion, cfg.Logger = version, log
	tr, err := tracing.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("--otlp-endpoint: %w", err)
	}
	if tr != nil {
		log.Info("tracing on", "otlp_endpoint", cfg.Endpoint, "insecure", cfg.Insecure, "sampling_ratio", cfg.SamplingRatio)
	}
	return tr, nil
}

// tracedSink is a connector's sink with the tracer of its spans, which Close
// flushes (for up to 5 s) after closing the sink.
type tracedSink struct {
	sink.Sink
	tr  *tracing.Tracer
	log *slog.Logger
}

func (s tracedSink) Close() error {
	err := s.Sink.Close()
	shutdownTracer(s.tr, s.log)
	return err
}

// shutdownTracer sends the spans still queued, for up to 5 s.
func shutdownTracer(tr *tracing.Tracer, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		log.Warn("exporting the last spans", "err", err)
	}
}
