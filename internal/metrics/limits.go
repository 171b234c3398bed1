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
