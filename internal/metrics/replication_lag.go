package metrics

import "github.com/prometheus/client_golang/prometheus"

// Lag is how far the index is behind the replication stream it reads.
type Lag struct {
	// Events is the stream's last sequence minus the index's applied_seq (0
	// when the index is level with or ahead of the stream).
	Events uint64
	// Seconds is how long the oldest event not yet applied has been in the
	// stream: now minus its publish time; 0 when nothing is pending.
	Seconds float64
}

// lagCollector reads the lag from the replication source at scrape time, so
// the seconds are computed at the moment of the scrape.
type lagCollector struct {
	events, seconds *prometheus.Desc
	lag             func() Lag
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.events
	ch <- c.seconds
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.lag()
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.GaugeValue, float64(l.Events))
	ch <- prometheus.MustNewConstMetric(c.seconds, prometheus.GaugeValue, l.Seconds)
}

// ReplicationLag registers crmauthz_replication_lag_events and
// crmauthz_replication_lag_seconds, read from lag at every scrape. The
// replication source that reads a stream calls it once; without one (an
// index fed over HTTP only) the two gauges are absent, as there is no stream
// to be behind.
func (m *Metrics) ReplicationLag(lag func() Lag) {
	m.reg.MustRegister(&lagCollector{
		events: prometheus.NewDesc(m.ns+"_replication_lag_events",
			"Events in the replication stream not yet applied to the index: the stream's last sequence minus applied_seq.",
			nil, nil),
		seconds: prometheus.NewDesc(m.ns+"_replication_lag_seconds",
			"Age of the oldest event in the replication stream not yet applied to the index (0 when none is pending).",
			nil, nil),
		lag: lag,
	})
}
