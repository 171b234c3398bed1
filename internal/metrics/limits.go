package metrics

import "github.com/prometheus/client_golang/prometheus"

// limitsCollector reads the policy engine's counts of stopped evaluations
// at each scrape.
type limitsCollector struct {
	desc  *prometheus.Desc
	stats func() (timeouts, builtins uint64)
}

func (c *limitsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *limitsCollector) Collect(ch chan<- prometheus.Metric) {
	timeouts, builtins := c.stats()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(timeouts), "timeout")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(builtins), "builtin_size")
}

// PolicyLimits registers crmauthz_policy_evaluations_stopped_total{bound=
// "timeout"|"builtin_size"}: evaluations stopped by --eval-timeout, and
// built-in calls refused for the size of their result (docs/policies.md),
// read from stats at every scrape. Call it once.
func (m *Metrics) PolicyLimits(stats func() (timeouts, builtins uint64)) {
	m.reg.MustRegister(&limitsCollector{
		desc: prometheus.NewDesc(m.ns+"_policy_evaluations_stopped_total",
			"Policy evaluations stopped by a bound (denied), by bound: timeout (--eval-timeout) or builtin_size (a built-in's result over its limit).",
			[]string{"bound"}, nil),
		stats: stats,
	})
}

// mergesCollector reads the index's count and time of overlay merges at each scrape.
type mergesCollector struct {
	merges, seconds *prometheus.Desc
	stats           func() (merges uint64, seconds float64)
}

func (c *mergesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.merges
	ch <- c.seconds
}

func (c *mergesCollector) Collect(ch chan<- prometheus.Metric) {
	n, s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.merges, prometheus.CounterValue, float64(n))
	ch <- prometheus.MustNewConstMetric(c.seconds, prometheus.CounterValue, s)
}

// IndexMerges registers crmauthz_index_merges_total and
// crmauthz_index_merge_seconds_total: the merges of the index's overlay into
// its file (docs/design.md, "Index: delta log, overlay and merge"), ended,
// and the time they took, read from stats at every scrape. Call it once.
func (m *Metrics) IndexMerges(stats func() (merges uint64, seconds float64)) {
	m.reg.MustRegister(&mergesCollector{
		merges: prometheus.NewDesc(m.ns+"_index_merges_total",
			"Merges of the index's overlay of recent replication batches into the index file, ended (done, failed or stopped).", nil, nil),
		seconds: prometheus.NewDesc(m.ns+"_index_merge_seconds_total",
			"Time the ended merges of the index's overlay took, in seconds (they run beside the batches).", nil, nil),
		stats: stats,
	})
}
