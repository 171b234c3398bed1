package server

import (
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
	"github.com/crmauthz/crmauthz/internal/server/gateway"
)

// The hot routes of the decision listener — POST /v1/decision, POST
// /v1/decisions and the gateway endpoints (forward auth, Envoy's HTTP
// ext_authz) — are served by plain net/http handlers ahead of Gin
// (decisionMux, docs/design.md "internal/server"); Gin serves every other
// request of the listener, so its routing (404, 405, the trailing-slash
// redirect) is what it was. What Gin and its middleware did for these routes
// is done here too, with the same effects: a panic is logged and answered with
// the 500 error body (a deny), or cuts the connection once part of the reply
// is sent, and is not counted; every other reply is counted in
// crmauthz_http_requests_total with the route template and the status. The
// replies are byte for byte those Gin wrote (status, headers, body).

// Route templates of the lean handlers: the route label Gin gave them.
const (
	routeDecision  = "/v1/decision"
	routeDecisions = "/v1/decisions"
	routeExtAuthz  = gateway.ExtAuthzPrefix + "/*path"
)

// leanRoutes are the metrics of the lean handlers' routes (metrics.Route:
// resolved once, not looked up per request) and the decision counters of
// /v1/decision and /v1/decisions (metrics.DecisionTable: found by action id
// and reason without a map).
type leanRoutes struct {
	decision, decisions, forwardAuth, extAuthz *metrics.Route
	decisionCounts, decisionsCounts            *metrics.DecisionTable
}

func newLeanRoutes(m *metrics.Metrics) leanRoutes {
	return leanRoutes{
		decision:    m.Route("decision", routeDecision, "decision"),
		decisions:   m.Route("decision", routeDecisions, "decisions"),
		forwardAuth: m.Route("decision", gateway.ForwardAuthPath, ""),
		extAuthz:    m.Route("decision", routeExtAuthz, ""),

		decisionCounts:  m.DecisionTable("decision", knownActions),
		decisionsCounts: m.DecisionTable("decisions", knownActions),
	}
}

// jsonContentType is the Content-Type of every JSON reply, as Gin sets it;
// shared, never modified.
var jsonContentType = []string{"application/json; charset=utf-8"}

// decisionMux routes the hot decision routes to their lean handlers and
// everything else to Gin.
type decisionMux struct {
	s   *Server
	gin *gin.Engine
}

func (m *decisionMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodPost && p == routeDecision:
		m.s.serveDecision(w, r)
	case r.Method == http.MethodPost && p == routeDecisions:
		m.s.serveDecisions(w, r)
	case p == gateway.ForwardAuthPath && ginAnyMethod(r.Method):
		m.s.serveGateway(w, r, m.s.routes.forwardAuth, m.s.gw.ForwardAuth)
	case strings.HasPrefix(p, gateway.ExtAuthzPrefix+"/") && ginAnyMethod(r.Method):
		m.s.serveGateway(w, r, m.s.routes.extAuthz, m.s.gw.ExtAuthzHTTP)
	default:
		m.gin.ServeHTTP(w, r)
	}
}

// ginAnyMethod tells whether Gin's Any routes method (anything else on
// those paths is Gin's 405).
func ginAnyMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodHead,
		http.MethodOptions, http.MethodDelete, http.MethodConnect, http.MethodTrace:
		return true
	}
	return false
}

// serveGateway serves a gateway endpoint (internal/server/gateway) as a lean
// handler: the gateway observes its own duration and span; h's returned
// status is the one it wrote.
func (s *Server) serveGateway(w http.ResponseWriter, r *http.Request, mr *metrics.Route, h func(http.ResponseWriter, *http.Request) int) {
	rp := &reply{w: w} // the gateway writes through it: it sees what is written
	defer s.finish(rp, r, mr, noDuration, nil)
	h(rp, r)
}

// reply is the writer of a lean handler: it remembers the status written.
type reply struct {
	w      http.ResponseWriter
	status int // 0: nothing written yet
}

// Header, WriteHeader and Write make a reply the http.ResponseWriter of a
// handler that writes itself (the gateway's), noting the status.
func (rp *reply) Header() http.Header { return rp.w.Header() }

func (rp *reply) WriteHeader(code int) {
	if rp.status == 0 {
		rp.status = code
	}
	rp.w.WriteHeader(code)
}

func (rp *reply) Write(b []byte) (int, error) {
	if rp.status == 0 {
		rp.status = http.StatusOK
	}
	return rp.w.Write(b)
}

// ok writes a 200 with a JSON body, the headers Gin's c.Data set.
func (rp *reply) ok(body []byte) {
	h := rp.w.Header()
	if len(h["Content-Type"]) == 0 {
		h["Content-Type"] = jsonContentType
	}
	rp.status = http.StatusOK
	_, _ = rp.w.Write(body)
}

// error writes err's error body (writeErrorTo).
func (s *Server) replyError(rp *reply, r *http.Request, err error) {
	rp.status = s.writeErrorTo(rp.w, r, err)
}

// statusOr200 is the status a reply has or will have: Gin's Status().
func (rp *reply) statusOr200() int {
	if rp.status == 0 {
		return http.StatusOK
	}
	return rp.status
}

// finish ends a request of a lean handler; deferred at its start. It
// observes the decision's duration since start (a reading of s.clock;
// noDuration: none), ends its span
// (if any), and then does what the
// recovery and countRequests middleware do for Gin's routes.
func (s *Server) finish(rp *reply, r *http.Request, mr *metrics.Route, start time.Duration, rs *reqSpan) {
	if start != noDuration {
		mr.Duration(s.clock() - start)
	}
	if rs != nil {
		rs.end(rp.statusOr200())
	}
	if v := recover(); v != nil {
		s.onPanic(v, rp.w, r, rp.status != 0)
		return
	}
	mr.Request(rp.statusOr200())
}

// onPanic answers a handler's panic v: logged, then the 500 error body (on
// the decision listener a deny), or, once part of the reply is sent, a cut
// connection. http.ErrAbortHandler goes on as it is.
func (s *Server) onPanic(v any, w http.ResponseWriter, r *http.Request, written bool) {
	if v == http.ErrAbortHandler {
		panic(v)
	}
	s.log.Error("panic in handler", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
	if written {
		// Part of the body is sent (a streamed export that met a damaged page):
		// an error body now would be pasted onto it. Cut the connection so the
		// client sees a broken transfer, never a short body taken for whole.
		panic(http.ErrAbortHandler)
	}
	s.writeErrorTo(w, r, newError(http.StatusInternalServerError, errcode.InternalError, "internal error"))
}

// replyBufs holds the buffers replies are built in (a Server's field, as the
// module's other pools are); one larger than maxPooledReply (a large batch)
// is left to the collector.
type replyBufs struct{ p sync.Pool }

const maxPooledReply = 64 << 10

func (rb *replyBufs) get() *[]byte {
	if b, ok := rb.p.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 512)
	return &b
}

func (rb *replyBufs) put(b *[]byte) {
	if cap(*b) > maxPooledReply {
		return
	}
	*b = (*b)[:0]
	rb.p.Put(b)
}
