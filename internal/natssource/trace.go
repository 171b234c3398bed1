// The trace context of the stream's messages: the parent of the span of the
// batch that applies them (docs/operations.md, "Tracing").

package natssource

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/tracing"
)

// messageParent returns msg's trace context when its headers hold a valid
// traceparent, else nil. A malformed one is ignored, counted and logged
// (at most one line a minute, with the count since the last line and the
// seq of the latest; never the header's value).
func (s *Source) messageParent(msg jetstream.Msg, seq uint64) tracing.Headers {
	h := msg.Headers()
	if len(h) == 0 {
		return nil
	}
	mh := tracing.MessageHeaders(h)
	ok, malformed := tracing.Parent(mh)
	if ok {
		return mh
	}
	if malformed {
		s.malformedTrace.count++
		if now := time.Now(); now.Sub(s.malformedTrace.logged) >= time.Minute {
			s.log.Warn("messages with a malformed traceparent header: ignored, their batches start their own traces "+
				"(at most one such line a minute)", "messages", s.malformedTrace.count-s.malformedTrace.countLogged, "seq", seq)
			s.malformedTrace.logged, s.malformedTrace.countLogged = now, s.malformedTrace.count
		}
	}
	return nil
}

// malformedTraces counts the messages whose traceparent was malformed; only
// the consumer's goroutine touches it.
type malformedTraces struct {
	count, countLogged uint64
	logged             time.Time
}

// firstParent is the trace context of the first of items that carries one,
// or nil.
func firstParent(items []decoded) tracing.Headers {
	for _, it := range items {
		if it.parent != nil {
			return it.parent
		}
	}
	return nil
}
