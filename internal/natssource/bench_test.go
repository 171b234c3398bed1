package natssource

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/natspub"
	"github.com/crmauthz/crmauthz/internal/natstest"
)

// benchEvents is a mix like a CRM's change feed: users, records with
// owners and followers, then follower adds and removes and owner changes.
func benchEvents(n int) []string {
	out := make([]string, 0, n)
	const users, records = 1000, 20_000
	for i := 0; i < users && len(out) < n; i++ {
		out = append(out, userEvent(fmt.Sprintf("u-%d", i)))
	}
	for i := 0; i < records && len(out) < n; i++ {
		out = append(out, fmt.Sprintf(`{"op":"record.upsert","record":{"type":"contact","id":"c-%d","location_id":"loc-1","owner":"u-%d","followers":["u-%d","u-%d","u-%d"]}}`,
			i, i%users, (i+1)%users, (i+2)%users, (i+3)%users))
	}
	for i := 0; len(out) < n; i++ {
		c, u := (i/2)%records, (i/2*7+500)%users
		switch {
		case i%10 == 9:
			out = append(out, fmt.Sprintf(`{"op":"owner.set","type":"contact","id":"c-%d","user_id":"u-%d"}`, c, u))
		case i%2 == 0:
			out = append(out, fmt.Sprintf(`{"op":"follower.add","type":"contact","id":"c-%d","user_id":"u-%d"}`, c, u))
		default:
			out = append(out, fmt.Sprintf(`{"op":"follower.remove","type":"contact","id":"c-%d","user_id":"u-%d"}`, c, u))
		}
	}
	return out
}

// BenchmarkCatchUp measures how fast one sidecar applies a stream that
// already holds 100,000 events (an in-process nats-server on loopback, a
// real bbolt index that fsyncs each batch), for several batch sizes:
//
//	go test -run '^$' -bench CatchUp -benchtime 3x ./internal/natssource
func BenchmarkCatchUp(b *testing.B) {
	const n = 100_000
	srv := natstest.Start(b, natstest.Options{})
	js := natstest.JetStream(b, srv.URL())
	createStream(b, js, "BENCH", "bench.events")
	publish(b, js, "BENCH", "bench.events", benchEvents(n)...)
	for _, maxBatch := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("batch=%d", maxBatch), func(b *testing.B) {
			var total time.Duration
			var batches uint64
			for i := 0; i < b.N; i++ {
				sc := newSidecar(b)
				start := time.Now()
				src := sc.start(b, Config{URL: srv.URL(), Stream: "BENCH", Subject: "bench.events", MaxBatch: maxBatch})
				waitFor(b, 5*time.Minute, "catch-up", func() bool { return sc.ix.AppliedSeq() >= n })
				total += time.Since(start)
				batches += src.Status().Batches
				src.Close()
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "events/s")
			b.ReportMetric(float64(batches)/float64(b.N), "batches")
		})
	}
}

// BenchmarkBootstrapFromBucket measures how long a new sidecar takes to join
// a stream that was purged: download the snapshot object (200,000 records,
// 10,000 users, from internal/dataset) from the bucket and load it.
//
//	go test -run '^$' -bench Bootstrap -benchtime 3x ./internal/natssource
func BenchmarkBootstrapFromBucket(b *testing.B) {
	const records, seq = 200_000, 1000
	srv := natstest.Start(b, natstest.Options{})
	js := natstest.JetStream(b, srv.URL())
	stream := createStream(b, js, "BOOT", "boot.events")
	publish(b, js, "BOOT", "boot.events", userEvents(1, seq)...)
	ctx := context.Background()
	if err := stream.Purge(ctx); err != nil {
		b.Fatal(err)
	}
	obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "bootsnap"})
	if err != nil {
		b.Fatal(err)
	}
	world := dataset.New(dataset.Config{Records: records, Users: 10_000})
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(world.WriteSnapshot(pw, seq)) }()
	info, err := natspub.PutSnapshot(ctx, obs, "snap", seq, pr, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		sc := newSidecar(b)
		start := time.Now()
		src := sc.start(b, Config{URL: srv.URL(), Stream: "BOOT", Subject: "boot.events", SnapshotBucket: "bootsnap"})
		waitFor(b, 5*time.Minute, "bootstrap", func() bool { return sc.ix.AppliedSeq() >= seq })
		total += time.Since(start)
		src.Close()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/bootstrap")
	b.ReportMetric(float64(info.Size)/(1<<20), "MiB")
}
