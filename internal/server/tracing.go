package server

import (
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/tracing"
)

// reqSpan is the span of one request of the HTTP listeners, started only
// when tracing is on (Server.tr != nil): a handler keeps a nil *reqSpan
// otherwise and checks it before each use, so tracing off costs a nil check
// (docs/operations.md, "Tracing"). The handler fills d (or checks, or b)
// once the outcome is known; end, deferred, sets it and ends the span.
type reqSpan struct {
	sp     trace.Span
	kind   spanKind
	d      tracing.Decision
	checks []tracing.Check
	b      tracing.Batch
}

type spanKind uint8

const (
	spanDecision spanKind = iota
	spanDecisions
	spanBatch
	spanSnapshot
)

// startSpan starts the span of r; its parent is the request's traceparent
// header. nil when the span is not sampled.
func (s *Server) startSpan(r *http.Request, name string, kind spanKind) *reqSpan {
	_, sp := s.tr.StartSampled(r.Context(), name, trace.SpanKindServer, r.Header)
	if sp == nil {
		return nil
	}
	return &reqSpan{sp: sp, kind: kind, b: tracing.Batch{Source: "http"}}
}

// endGin ends the span of a request Gin serves, with its reply's status.
func (r *reqSpan) endGin(c *gin.Context) { r.end(c.Writer.Status()) }

// end ends the span with what the handler filled in and st, the reply's
// status. A request answered with an error before its outcome was known (a
// 4xx, index_behind) gets the reply's status as the span's error.
func (r *reqSpan) end(st int) {
	r.sp.SetAttributes(attribute.Int("http.response.status_code", st))
	errCode := ""
	if st >= http.StatusBadRequest {
		errCode = "http_" + strconv.Itoa(st)
	}
	switch r.kind {
	case spanDecision:
		if r.d.Error == "" {
			r.d.Error = errCode
		}
		tracing.EndDecision(r.sp, r.d)
	case spanDecisions:
		if r.d.Error == "" {
			r.d.Error = errCode
		}
		tracing.EndDecisions(r.sp, r.d, r.checks)
	case spanBatch:
		r.b.Error = errCode
		tracing.EndBatch(r.sp, r.b)
	case spanSnapshot:
		r.b.Error = errCode
		tracing.EndSnapshot(r.sp, r.b)
	}
}

// spanAction and spanType bound the action and resource type a client sent
// to the known ones ("other" else), as the metrics' labels do: a span never
// carries a string of the request's body as it came.
func spanAction(a string) string {
	if a == "" {
		return ""
	}
	return actionLabel(a)
}

func spanType(t string) string {
	switch t {
	case "", "contact", "opportunity":
		return t
	}
	return "other"
}
