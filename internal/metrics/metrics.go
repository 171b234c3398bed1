// Package metrics holds crmauthz's Prometheus registry and collectors.
//
// Every metric of docs/reference.md §2.7 is created here, on a registry of
// its own (never the global default), together with the Go and process collectors.
// The rest of the program sees only the methods of *Metrics.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures New.
type Config struct {
	// Namespace prefixes every metric.
	Namespace string
}

// DefaultConfig returns the defaults, which New fills in for zero fields.
func DefaultConfig() Config {
	return Config{Namespace: "crmauthz"}
}

// Metrics is the set of crmauthz's collectors.
type Metrics struct {
	reg *prometheus.Registry
	ns  string

	decisions        *prometheus.CounterVec
	decisionDuration *prometheus.HistogramVec
	httpRequests     *prometheus.CounterVec
	appliedSeq       prometheus.Gauge
	events           *prometheus.CounterVec
	indexRecords     *prometheus.GaugeVec
	indexUsers       prometheus.Gauge
	policyReloads    *prometheus.CounterVec
	policyInfo       *prometheus.GaugeVec
	policyLastOK     prometheus.Gauge
	decisionLogDrops *prometheus.CounterVec
	snapshotLoads    *prometheus.CounterVec

	// children of the vectors used on every request
	decisionChildren children[decisionLabels, prometheus.Counter]
	durationChildren children[string, prometheus.Observer]
	requestChildren  children[requestLabels, prometheus.Counter]
}

type decisionLabels struct {
	endpoint, action, reason string
	allow                    bool
}

type requestLabels struct {
	listener, route string
	code            int
}

// New creates the registry and registers every collector on it.
func New(cfg Config) *Metrics {
	ns := cfg.Namespace
	if ns == "" {
		ns = DefaultConfig().Namespace
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ns:  ns,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "decisions_total",
			Help: "Decisions made, by endpoint, action, outcome and reason.",
		}, []string{"endpoint", "action", "allow", "reason"}),
		decisionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "decision_duration_seconds",
			Help: "Time to handle one decision request (parse, evaluate, write).",
			// From 10µs to ~1.3s: a decision is expected in tens of microseconds.
			Buckets: prometheus.ExponentialBuckets(10e-6, 2.5, 14),
		}, []string{"endpoint"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "http_requests_total",
			Help: "HTTP requests, by listener, route template and status code.",
		}, []string{"listener", "route", "code"}),
		appliedSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "replication_applied_seq",
			Help: "The last replication sequence number applied to the index.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "replication_events_total",
			Help: "Replication events received, by op and result (applied, skipped, rejected).",
		}, []string{"op", "result"}),
		indexRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "index_records",
			Help: "Records in the index, by type.",
		}, []string{"type"}),
		indexUsers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "index_users",
			Help: "Users in the index.",
		}),
		policyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "policy_reloads_total",
			Help: "Policy loads and reloads, by result (ok, error).",
		}, []string{"result"}),
		policyInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "policy_info",
			Help: "1 for the policy revision being served.",
		}, []string{"revision"}),
		decisionLogDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "decision_log_dropped_total",
			Help: "Decision log lines dropped, by reason (buffer_full, write_error, closed).",
		}, []string{"reason"}),
		snapshotLoads: newSnapshotLoads(ns),
		policyLastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "policy_last_reload_ok",
			Help: "1 when the last policy load or reload succeeded, 0 when it failed (the last good revision keeps serving).",
		}),
	}
	m.reg.MustRegister(
		m.decisions, m.decisionDuration, m.httpRequests, m.appliedSeq, m.events,
		m.indexRecords, m.indexUsers, m.policyReloads, m.policyInfo, m.decisionLogDrops,
		m.snapshotLoads, m.policyLastOK,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Both outcomes of a reload exist from the start, so rate() works at once.
	m.policyReloads.WithLabelValues("ok")
	m.policyReloads.WithLabelValues("error")
	m.decisionLogDrops.WithLabelValues("buffer_full")
	return m
}

// Registry returns the registry, for tests and for extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Decision counts one decision. The caller keeps action bounded (known actions or "other").
func (m *Metrics) Decision(endpoint, action string, allow bool, reason string) {
	m.decisionChildren.get(decisionLabels{endpoint, action, reason, allow}, func() prometheus.Counter {
		return m.decisions.WithLabelValues(endpoint, action, strconv.FormatBool(allow), reason)
	}).Inc()
}

// DecisionDuration observes the handling time of one decision request.
func (m *Metrics) DecisionDuration(endpoint string, d time.Duration) {
	m.durationChildren.get(endpoint, func() prometheus.Observer {
		return m.decisionDuration.WithLabelValues(endpoint)
	}).Observe(d.Seconds())
}

// HTTPRequest counts one HTTP request.
func (m *Metrics) HTTPRequest(listener, route string, code int) {
	m.requestChildren.get(requestLabels{listener, route, code}, func() prometheus.Counter {
		return m.httpRequests.WithLabelValues(listener, route, strconv.Itoa(code))
	}).Inc()
}

// Events counts n replication events of one op with one result.
func (m *Metrics) Events(op, result string, n int) {
	if n > 0 {
		m.events.WithLabelValues(op, result).Add(float64(n))
	}
}

// IndexState sets the applied seq and the index's counts.
func (m *Metrics) IndexState(appliedSeq, users uint64, records map[string]uint64) {
	m.appliedSeq.Set(float64(appliedSeq))
	m.indexUsers.Set(float64(users))
	for typ, n := range records {
		m.indexRecords.WithLabelValues(typ).Set(float64(n))
	}
}

// PolicyReload counts one load or reload, and on success marks revision as the one served.
func (m *Metrics) PolicyReload(ok bool, revision string) {
	if !ok {
		m.policyReloads.WithLabelValues("error").Inc()
		m.policyLastOK.Set(0)
		return
	}
	m.policyReloads.WithLabelValues("ok").Inc()
	m.policyLastOK.Set(1)
	m.policyInfo.Reset()
	m.policyInfo.WithLabelValues(revision).Set(1)
}

// DecisionLogDropped counts n decision log lines dropped for reason
// (buffer_full, write_error, closed). Cheap enough for the request path.
func (m *Metrics) DecisionLogDropped(reason string, n int) {
	if n > 0 {
		m.decisionLogDrops.WithLabelValues(reason).Add(float64(n))
	}
}

// cacheCollector reports the decision cache's hits and misses, read from the
// engine at scrape time (no work on the decision path).
type cacheCollector struct {
	desc  *prometheus.Desc
	stats func() (hits, misses uint64)
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	hits, misses := c.stats()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(hits), "hit")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(misses), "miss")
}

// DecisionCache registers crmauthz_decision_cache_lookups_total{result="hit"|"miss"},
// read from stats at every scrape. Call it once.
func (m *Metrics) DecisionCache(stats func() (hits, misses uint64)) {
	m.reg.MustRegister(&cacheCollector{
		desc: prometheus.NewDesc(m.ns+"_decision_cache_lookups_total",
			"Decision cache lookups, by result (hit: answered without evaluating; miss: evaluated).",
			[]string{"result"}, nil),
		stats: stats,
	})
}
