package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// MaxLinks is the most span links a batch's span gets: one for each
// distinct trace context of its messages other than its parent's. The
// distinct ones past it are counted in the span's attribute
// crmauthz.trace.links_dropped (docs/operations.md, "Tracing").
const MaxLinks = 32

const attrLinksDropped = attrPrefix + "trace.links_dropped"

// Contexts gathers the trace contexts of the messages of a batch: the first
// valid one is the parent of the batch's span, each other distinct one (by
// trace and span id) a link, at most MaxLinks. The zero value is empty.
type Contexts struct {
	parent trace.SpanContext
	links  []trace.Link
	// past holds the distinct contexts beyond MaxLinks, only to count them.
	past map[spanKey]struct{}
}

type spanKey struct {
	trace trace.TraceID
	span  trace.SpanID
}

// Add adds the trace context of a message; an invalid (zero) one is skipped.
func (c *Contexts) Add(sc trace.SpanContext) {
	if !sc.IsValid() {
		return
	}
	if !c.parent.IsValid() {
		c.parent = sc
		return
	}
	if sameSpan(sc, c.parent) {
		return
	}
	for _, l := range c.links {
		if sameSpan(sc, l.SpanContext) {
			return
		}
	}
	if len(c.links) < MaxLinks {
		c.links = append(c.links, trace.Link{SpanContext: sc})
		return
	}
	if c.past == nil {
		c.past = map[spanKey]struct{}{}
	}
	c.past[spanKey{sc.TraceID(), sc.SpanID()}] = struct{}{}
}

// Parent is the first valid context added (the zero SpanContext when none).
func (c *Contexts) Parent() trace.SpanContext { return c.parent }

// Links is the number of links, and Dropped the number of distinct contexts
// past MaxLinks.
func (c *Contexts) Links() int   { return len(c.links) }
func (c *Contexts) Dropped() int { return len(c.past) }

func sameSpan(a, b trace.SpanContext) bool {
	return a.TraceID() == b.TraceID() && a.SpanID() == b.SpanID()
}

// StartBatch is StartSampled for a batch of messages: the span's parent is
// c's (none: a root span), and it links c's other contexts; when some were
// past MaxLinks, their number is the attribute crmauthz.trace.links_dropped.
// c may be nil (a root span without links).
func (t *Tracer) StartBatch(ctx context.Context, name string, kind trace.SpanKind, c *Contexts) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithSpanKind(kind)}
	if c != nil {
		if c.parent.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, c.parent)
		}
		if len(c.links) > 0 {
			opts = append(opts, trace.WithLinks(c.links...))
		}
		if n := len(c.past); n > 0 {
			opts = append(opts, trace.WithAttributes(attribute.Int(attrLinksDropped, n)))
		}
	}
	ctx, sp := t.tr.Start(ctx, name, opts...)
	if !sp.IsRecording() {
		sp.End()
		return ctx, nil
	}
	return ctx, sp
}

// MessageContext returns the trace context in a message's (or an object's)
// headers: valid when they hold a valid traceparent (with its tracestate);
// malformed when they hold a traceparent that is not valid W3C trace
// context, which is ignored (the caller counts or logs it, never its value).
func MessageContext(h Headers) (sc trace.SpanContext, malformed bool) {
	if h == nil || len(h.Values("traceparent")) == 0 {
		return trace.SpanContext{}, false
	}
	var prop propagation.TraceContext
	sc = trace.SpanContextFromContext(prop.Extract(context.Background(), carrier{h}))
	if sc.IsValid() {
		return sc, false
	}
	return trace.SpanContext{}, true
}
