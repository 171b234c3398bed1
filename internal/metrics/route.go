package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Route is the metrics of one decision route that a handler updates on
// every request: the duration observer of its endpoint and the counter of
// its 200 replies, each resolved once, on first use (so no series appears
// before its first request), then used without a lookup. Other statuses go
// through HTTPRequest.
type Route struct {
	m                         *Metrics
	listener, route, endpoint string
	duration                  atomic.Pointer[prometheus.Observer]
	ok                        atomic.Pointer[prometheus.Counter]
}

// Route returns the metrics of the route template route of listener, whose
// decisions are observed as endpoint (crmauthz_decision_duration_seconds).
func (m *Metrics) Route(listener, route, endpoint string) *Route {
	return &Route{m: m, listener: listener, route: route, endpoint: endpoint}
}

// Duration observes the handling time of one request (DecisionDuration).
func (r *Route) Duration(d time.Duration) {
	r.m.observeDuration(&r.duration, r.endpoint, d)
}

// observeDuration observes d in endpoint's decision duration histogram,
// whose observer *o holds once resolved (on first use).
func (m *Metrics) observeDuration(o *atomic.Pointer[prometheus.Observer], endpoint string, d time.Duration) {
	obs := o.Load()
	if obs == nil {
		v := m.decisionDuration.WithLabelValues(endpoint)
		obs = &v
		o.Store(obs)
	}
	(*obs).Observe(d.Seconds())
}

// Request counts one reply with status code (HTTPRequest).
func (r *Route) Request(code int) {
	if code != 200 {
		r.m.HTTPRequest(r.listener, r.route, code)
		return
	}
	c := r.ok.Load()
	if c == nil {
		v := r.m.httpRequests.WithLabelValues(r.listener, r.route, "200")
		c = &v
		r.ok.Store(c)
	}
	(*c).Inc()
}
