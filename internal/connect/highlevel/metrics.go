package highlevel

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the connector's crmauthz_connector_* series (docs/highlevel.md, "Metrics"), each
// with the constant label connector="highlevel".
type metrics struct {
	reg            *prometheus.Registry
	eventsWritten  *prometheus.CounterVec
	sourceRequests *prometheus.CounterVec
	sourceErrors   *prometheus.CounterVec
	anomalies      *prometheus.CounterVec
	webhooks       *prometheus.CounterVec
	sinkErrors     prometheus.Counter
	pending        prometheus.Gauge
	writtenSeq     prometheus.Gauge
	lastSync       *prometheus.GaugeVec
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	cl := prometheus.Labels{"connector": "highlevel"}
	m := &metrics{
		reg: reg,
		eventsWritten: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmauthz_connector_events_written_total",
			Help: "Replication events written to the sink, by op (a snapshot's lines count as op=snapshot).", ConstLabels: cl}, []string{"op"}),
		sourceRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmauthz_connector_source_requests_total",
			Help: "Requests to the HighLevel API, by resource and HTTP status (error: no answer).", ConstLabels: cl}, []string{"resource", "code"}),
		sourceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmauthz_connector_source_errors_total",
			Help: "Failed requests to the HighLevel API, by kind (network, server, rate_limited, client, decode, token).", ConstLabels: cl}, []string{"kind"}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmauthz_connector_source_anomalies_total",
			Help: "Bad facts of the source, normalised or dropped before they reach the index, by kind.", ConstLabels: cl}, []string{"kind"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmauthz_connector_webhooks_total",
			Help: "Webhooks received, by result (accepted, duplicate, ignored, backed_up, invalid_signature, invalid_webhook, stale_webhook, error).", ConstLabels: cl}, []string{"result"}),
		sinkErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "crmauthz_connector_sink_errors_total",
			Help: "Failed writes to the sink (retried).", ConstLabels: cl}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "crmauthz_connector_pending_work",
			Help: "Webhook work (refreshes and deletes) durable in the state dir and not yet written.", ConstLabels: cl}),
		writtenSeq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "crmauthz_connector_written_seq",
			Help: "The seq of the last event the sink acknowledged.", ConstLabels: cl}),
		lastSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "crmauthz_connector_last_sync_timestamp_seconds",
			Help: "Unix time of the last full reconcile of a location that reached the sink.", ConstLabels: cl}, []string{"location"}),
	}
	reg.MustRegister(m.eventsWritten, m.sourceRequests, m.sourceErrors, m.anomalies, m.webhooks, m.sinkErrors,
		m.pending, m.writtenSeq, m.lastSync,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every error kind exists from the start (at 0), so that rate() and the alerts see the
	// first error (docs/operations.md, "Dashboard and alerts").
	for _, kind := range []string{"network", "server", "rate_limited", "client", "decode", "token"} {
		m.sourceErrors.WithLabelValues(kind)
	}
	return m
}
