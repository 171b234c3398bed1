package tracing

import (
	"context"
	"strings"
)

// The W3C trace context in the headers of a NATS message (docs/operations.md,
// "Tracing"): the publishers (internal/natspub's Appender, the connectors'
// NATS sink) write the current span's under the W3C names, in lower case;
// internal/natssource reads it back as the parent of the batch that applies
// the message.

// MessageHeaders reads a message's headers whose names are case-sensitive
// (nats.Header, which converts to it): Values finds a name in any case, the
// exact one first, so a publisher that wrote "Traceparent" (an HTTP-style
// carrier) is read as well.
type MessageHeaders map[string][]string

// Values returns the values of name, matched in any case.
func (h MessageHeaders) Values(name string) []string {
	if v, ok := h[name]; ok {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// InjectMessage writes the trace context of ctx's span into h (a message's
// headers: traceparent, tracestate), and nothing when ctx holds no span.
func (t *Tracer) InjectMessage(ctx context.Context, h map[string][]string) {
	t.prop.Inject(ctx, messageCarrier(h))
}

// messageCarrier writes W3C names as they are (lower case): NATS header names
// are case-sensitive, and other readers look for "traceparent".
type messageCarrier map[string][]string

func (c messageCarrier) Get(key string) string {
	if v := MessageHeaders(c).Values(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c messageCarrier) Set(key, value string) { c[key] = []string{value} }
func (c messageCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
