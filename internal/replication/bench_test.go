package replication

import (
	"io"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// BenchmarkLoadSnapshot1M streams the default world (1,000,000 records,
// 10,000 users, 1–10 followers, 5 locations) as snapshot NDJSON through
// Replicator.LoadSnapshot, as PUT /v1/replication/snapshot does, into a new
// index. One iteration takes about ten seconds; like every benchmark it runs
// only with -bench (never in make test), and -short skips it.
//
//	go test -run '^$' -bench LoadSnapshot1M -benchtime 1x ./internal/replication
//
// Reported: records/s, and the peak Go heap in use during the load (the
// loader streams: it must not grow with the snapshot).
func BenchmarkLoadSnapshot1M(b *testing.B) {
	if testing.Short() {
		b.Skip("loads 1,000,000 records")
	}
	w := dataset.New(dataset.Config{})
	var peak uint64
	for b.Loop() {
		b.StopTimer()
		r, _ := newReplicator(b)
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(w.WriteSnapshot(pw, 1)) }()
		stop := make(chan struct{})
		done := make(chan uint64)
		go func() { done <- peakHeap(stop) }()
		b.StartTimer()
		res, err := r.LoadSnapshot(pr)
		b.StopTimer()
		close(stop)
		peak = max(peak, <-done)
		if err != nil {
			b.Fatal(err)
		}
		if res.Records != w.Config().Records {
			b.Fatalf("%+v", res)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(w.Config().Records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// peakHeap samples the heap in use (objects) until stop is closed.
func peakHeap(stop <-chan struct{}) uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		metrics.Read(s)
		peak = max(peak, s[0].Value.Uint64())
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}
