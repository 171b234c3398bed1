package replication

import (
	"fmt"
	"io"
	"math/rand/v2"
	"runtime/metrics"
	"strings"
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

// BenchmarkApply1000On1M applies batches of 1,000 events spread at random
// over an index of the default world (1,000,000 records, 10,000 users):
// follower.add, follower.remove and owner.set on existing records of all the
// index, so that a batch touches about as many pages as it has events, each
// committed with an fsync. Loading the world takes about ten seconds first.
//
//	go test -run '^$' -bench Apply1000On1M ./internal/replication
func BenchmarkApply1000On1M(b *testing.B) {
	if testing.Short() {
		b.Skip("loads 1,000,000 records")
	}
	w := dataset.New(dataset.Config{})
	r, _ := newReplicator(b)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(w.WriteSnapshot(pw, 1)) }()
	if _, err := r.LoadSnapshot(pr); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seq := 1
	batch := func() []Event {
		var sb strings.Builder
		sb.WriteString(`{"events":[`)
		for i := 0; i < 1000; i++ {
			seq++
			if i > 0 {
				sb.WriteByte(',')
			}
			rec := w.RecordAt(rng.IntN(w.Config().Records))
			user := rec.Followers[rng.IntN(len(rec.Followers))]
			switch i % 3 {
			case 0:
				fmt.Fprintf(&sb, `{"seq":%d,"op":"follower.remove","type":%q,"id":%q,"user_id":%q}`, seq, rec.Type, rec.ID, user)
			case 1:
				fmt.Fprintf(&sb, `{"seq":%d,"op":"follower.add","type":%q,"id":%q,"user_id":%q}`, seq, rec.Type, rec.ID, user)
			case 2:
				fmt.Fprintf(&sb, `{"seq":%d,"op":"owner.set","type":%q,"id":%q,"user_id":%q}`, seq, rec.Type, rec.ID, rec.Owner)
			}
		}
		sb.WriteString(`]}`)
		ev, err := r.DecodeBatch(strings.NewReader(sb.String()))
		if err != nil {
			b.Fatal(err)
		}
		return ev
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ev := batch()
		b.StartTimer()
		if _, err := r.Apply(ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "events/s")
}
