// The trace context of the stream's messages and snapshot objects: the
// parent and the links of the span of the batch that applies them, the parent
// of a snapshot load (docs/operations.md, "Tracing").

package natssource

import (
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/tracing"
)

// messageContext returns msg's trace context when its headers hold a valid
// traceparent, else the zero SpanContext. A malformed one is ignored, counted
// and logged (at most one line a minute, with the count since the last line
// and the seq of the latest; never the header's value).
func (s *Source) messageContext(h map[string][]string, seq uint64) trace.SpanContext {
	if len(h) == 0 {
		return trace.SpanContext{}
	}
	sc, malformed := tracing.MessageContext(tracing.MessageHeaders(h))
	if malformed {
		s.malformedTrace.count++
		if now := time.Now(); now.Sub(s.malformedTrace.logged) >= time.Minute {
			s.log.Warn("messages with a malformed traceparent header: ignored, their batches start their own traces "+
				"(at most one such line a minute)", "messages", s.malformedTrace.count-s.malformedTrace.countLogged, "seq", seq)
			s.malformedTrace.logged, s.malformedTrace.countLogged = now, s.malformedTrace.count
		}
	}
	return sc
}

// malformedTraces counts the messages whose traceparent was malformed; only
// the consumer's goroutine touches it.
type malformedTraces struct {
	count, countLogged uint64
	logged             time.Time
}

// batchContexts gathers the trace contexts of items for the span of the
// batch that applies them: the first is its parent, the other distinct ones
// its links (tracing.Contexts). nil when tracing is off.
func (s *Source) batchContexts(items []decoded) *tracing.Contexts {
	if s.cfg.Tracer == nil {
		return nil
	}
	c := new(tracing.Contexts)
	for _, it := range items {
		c.Add(it.trace)
	}
	return c
}

// objectParent returns the headers of a snapshot object when they hold a
// valid traceparent (its publisher's span: the parent of the load's), else
// nil. A malformed one is ignored and logged with the object's name, never
// its value.
func (s *Source) objectParent(o snapshotObject) tracing.Headers {
	h := tracing.MessageHeaders(o.headers)
	sc, malformed := tracing.MessageContext(h)
	if malformed {
		s.log.Warn("a snapshot object with a malformed traceparent header: ignored, its load starts its own trace",
			"object", o.name, "seq", o.seq)
	}
	if !sc.IsValid() {
		return nil
	}
	return h
}
