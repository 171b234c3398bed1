package index

import (
	"cmp"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkFileGrowth1M applies GROWTH_BENCH_BATCHES (default 800) batches of
// BenchmarkRandomReplication1M's random changes to a copy of its index and logs, every 100
// batches, the file's size, bbolt's high-water mark, its free and pending pages and the delta
// bucket's pages (BENCHMARKS.md, "Random replication (issue 17)"). GROWTH_BENCH_FREELIST=map uses
// the hashmap freelist of before; GROWTH_BENCH_AWAIT=1 waits for each merge after the Update that
// starts it (the commits of the merge inside the Update). Sizes, not timings: it may run niced.
//
//	GROWTH_BENCH_FREELIST=map go test -run '^$' -bench 'FileGrowth1M$' -benchtime 1x ./internal/index
func BenchmarkFileGrowth1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-record index")
	}
	n, err := strconv.Atoi(cmp.Or(os.Getenv("GROWTH_BENCH_BATCHES"), "800"))
	if err != nil || n <= 0 {
		b.Fatalf("GROWTH_BENCH_BATCHES: %q", os.Getenv("GROWTH_BENCH_BATCHES"))
	}
	t := defaultTuning()
	t.statistics = true
	t.mapFreelist = os.Getenv("GROWTH_BENCH_FREELIST") == "map"
	await := os.Getenv("GROWTH_BENCH_AWAIT") == "1"
	for range b.N {
		dir := b.TempDir()
		copyFile(b, replBenchFile(b, t.pageSize), filepath.Join(dir, FileName))
		ix, err := openTuned(Config{Dir: dir}, t)
		if err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(3, 0))
		seq := ix.AppliedSeq()
		for i := 1; i <= n; i++ {
			evs := replBatchOf(b, ix, rng, replRecords, replUsers, replBatch)
			seq += replBatch
			updateRepl(b, ix, evs, seq)
			if await {
				if err := waitBackgroundMerge(ix); err != nil {
					b.Fatal(err)
				}
			}
			if i%100 != 0 && i != n {
				continue
			}
			st := ix.cur.db.Stats()
			fi, err := os.Stat(ix.Path())
			if err != nil {
				b.Fatal(err)
			}
			var used int64
			var delta int
			if err := ix.cur.db.View(func(tx *bolt.Tx) error {
				used = tx.Size()
				bs := tx.Bucket(bucketDelta).Stats()
				delta = bs.BranchPageN + bs.LeafPageN + bs.LeafOverflowN
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			m, _ := ix.MergeStats()
			b.Logf("batch %d: %d merges, file %.1f MiB, used %.1f MiB, %d free pages, %d pending, delta %d pages",
				i, m, float64(fi.Size())/(1<<20), float64(used)/(1<<20), st.FreePageN, st.PendingPageN, delta)
			if i == n {
				b.ReportMetric(float64(fi.Size())/(1<<20), "file-MiB")
				b.ReportMetric(float64(st.FreePageN), "free-pages")
			}
		}
		if err := ix.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
