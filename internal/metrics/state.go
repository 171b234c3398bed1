package metrics

import (
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot load sources, the source label of crmauthz_snapshot_loads_total.
const (
	SnapshotSourceHTTP = "http" // PUT /v1/replication/snapshot
	SnapshotSourceFile = "file" // --load-snapshot at start
	SnapshotSourceNATS = "nats" // the NATS source's bootstrap from the object store
)

// newSnapshotLoads is crmauthz_snapshot_loads_total with every source and result
// present from the start (at 0), so that rate() and the dashboard see them at once.
func newSnapshotLoads(ns string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "snapshot_loads_total",
		Help: "Snapshots loaded into the index (whole replacements), by source (http, file, nats) and result (ok, error).",
	}, []string{"source", "result"})
	for _, s := range []string{SnapshotSourceHTTP, SnapshotSourceFile, SnapshotSourceNATS} {
		v.WithLabelValues(s, "ok")
		v.WithLabelValues(s, "error")
	}
	return v
}

// SnapshotLoad counts one snapshot load from source (SnapshotSource*). A load
// refused because another is in progress is not a load and is not counted.
func (m *Metrics) SnapshotLoad(source string, ok bool) {
	result := "ok"
	if !ok {
		result = "error"
	}
	m.snapshotLoads.WithLabelValues(source, result).Inc()
}

// readyCollector reports readiness, read at scrape time.
type readyCollector struct {
	desc  *prometheus.Desc
	ready func() bool
}

func (c *readyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *readyCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, b2f(c.ready()))
}

// Ready registers crmauthz_ready: 1 while /health/ready answers 200, else 0,
// read from ready at every scrape. Call it once.
func (m *Metrics) Ready(ready func() bool) {
	m.reg.MustRegister(&readyCollector{
		desc:  prometheus.NewDesc(m.ns+"_ready", "1 while /health/ready answers 200 (policy compiled, index open, --ready-min-seq applied, a NATS source level once), else 0.", nil, nil),
		ready: ready,
	})
}

// evaluatorCollector reports how the policy in service is evaluated, read at scrape time.
type evaluatorCollector struct {
	evaluator, fallback *prometheus.Desc
	state               func() (evaluator string, fallback bool)
}

func (c *evaluatorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.evaluator
	ch <- c.fallback
}

func (c *evaluatorCollector) Collect(ch chan<- prometheus.Metric) {
	ev, fb := c.state()
	ch <- prometheus.MustNewConstMetric(c.evaluator, prometheus.GaugeValue, 1, ev)
	ch <- prometheus.MustNewConstMetric(c.fallback, prometheus.GaugeValue, b2f(fb))
}

// PolicyEvaluator registers crmauthz_policy_evaluator{evaluator="ir"|"topdown"}
// (1 for the evaluator of the revision in service) and
// crmauthz_policy_evaluator_fallback (1 when --policy-evaluator auto fell back
// to topdown because the IR interpreter cannot run the revision), read from
// state at every scrape. Call it once.
func (m *Metrics) PolicyEvaluator(state func() (evaluator string, fallback bool)) {
	m.reg.MustRegister(&evaluatorCollector{
		evaluator: prometheus.NewDesc(m.ns+"_policy_evaluator",
			"1 for the evaluator of the policy revision in service: ir (the IR interpreter) or topdown.", []string{"evaluator"}, nil),
		fallback: prometheus.NewDesc(m.ns+"_policy_evaluator_fallback",
			"1 when --policy-evaluator auto fell back to topdown for the revision in service (the IR interpreter cannot run it: slower decisions), else 0.", nil, nil),
		state: state,
	})
}

// DiskStats is the file system of the data directory.
type DiskStats struct {
	FreeBytes, SizeBytes uint64 // available to the process, and in all
}

// dataDirCollector reports the index file's size and its file system's free
// space, read at scrape time (a stat and a statfs).
type dataDirCollector struct {
	fileBytes, freeBytes, sizeBytes *prometheus.Desc
	indexPath                       string
}

func (c *dataDirCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.fileBytes
	ch <- c.freeBytes
	ch <- c.sizeBytes
}

func (c *dataDirCollector) Collect(ch chan<- prometheus.Metric) {
	if fi, err := os.Stat(c.indexPath); err == nil {
		ch <- prometheus.MustNewConstMetric(c.fileBytes, prometheus.GaugeValue, float64(fi.Size()))
	}
	if st, err := diskStats(filepath.Dir(c.indexPath)); err == nil {
		ch <- prometheus.MustNewConstMetric(c.freeBytes, prometheus.GaugeValue, float64(st.FreeBytes))
		ch <- prometheus.MustNewConstMetric(c.sizeBytes, prometheus.GaugeValue, float64(st.SizeBytes))
	}
}

// DataDir registers crmauthz_index_file_bytes (the size of indexPath, the
// bbolt file), crmauthz_data_dir_free_bytes and crmauthz_data_dir_size_bytes
// (its file system's space available to the process, and its size), read at
// every scrape; a series is absent while it cannot be read. Call it once.
func (m *Metrics) DataDir(indexPath string) {
	m.reg.MustRegister(&dataDirCollector{
		fileBytes: prometheus.NewDesc(m.ns+"_index_file_bytes",
			"Size of the index file (<data-dir>/index.db) in bytes.", nil, nil),
		freeBytes: prometheus.NewDesc(m.ns+"_data_dir_free_bytes",
			"Bytes available to crmauthz on the data directory's file system.", nil, nil),
		sizeBytes: prometheus.NewDesc(m.ns+"_data_dir_size_bytes",
			"Size in bytes of the data directory's file system.", nil, nil),
		indexPath: indexPath,
	})
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
