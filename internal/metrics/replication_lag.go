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
	// Up: the source is connected and read the stream's state at its last
	// poll. While it is not, Events and Seconds are as last known.
	Up bool
}

// lagCollector reads the lag from the replication source at scrape time, so
// the seconds are computed at the moment of the scrape.
type lagCollector struct {
	events, seconds, up *prometheus.Desc
	lag                 func() Lag
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.events
	ch <- c.seconds
	ch <- c.up
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.lag()
	up := 0.0
	if l.Up {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.GaugeValue, float64(l.Events))
	ch <- prometheus.MustNewConstMetric(c.seconds, prometheus.GaugeValue, l.Seconds)
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
}

// ReplicationLag registers crmauthz_replication_lag_events,
// crmauthz_replication_lag_seconds and crmauthz_replication_source_up, read
// from lag at every scrape. The
// replication source that reads a stream calls it once; without one (an
// index fed over HTTP only) the gauges are absent, as there is no stream to
// be behind.
func (m *Metrics) ReplicationLag(lag func() Lag) {
	m.reg.MustRegister(&lagCollector{
		events: prometheus.NewDesc(m.ns+"_replication_lag_events",
			"Events in the replication stream not yet applied to the index: the stream's last sequence minus applied_seq.",
			nil, nil),
		seconds: prometheus.NewDesc(m.ns+"_replication_lag_seconds",
			"Age of the oldest event in the replication stream not yet applied to the index (0 when none is pending).",
			nil, nil),
		up: prometheus.NewDesc(m.ns+"_replication_source_up",
			"1 while the replication source is connected and reads the stream's state; 0 otherwise (the lag gauges are then as last known).",
			nil, nil),
		lag: lag,
	})
}
