package index

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/coldtest"
)

// BenchmarkOverlay1M fills the overlay of the 1,000,000-record index with OVERLAY_BENCH_EVENTS
// (default 230,000: about what 16 MiB holds, half of DefaultMergeBytes) random follower and owner changes, in
// batches of 1,000 without merging, then reports: the heap the overlay takes (after a GC) against
// its estimate (layer.size, what Config.MergeBytes bounds), Open with that overlay (rebuilt from
// the delta log), one decision's reads (a user and a record, half of them in the overlay) and a
// page of SubjectRecords with the overlay full, and the one merge that empties it.
//
//	go test -run '^$' -bench 'Overlay1M$' -benchtime 1x ./internal/index
func BenchmarkOverlay1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-record index")
	}
	events := 230_000
	if v, err := strconv.Atoi(os.Getenv("OVERLAY_BENCH_EVENTS")); err == nil && v > 0 {
		events = v
	}
	// OVERLAY_BENCH_PAGESIZE: the page size of the index file (default: a new file's).
	pageSize := defaultTuning().pageSize
	if v, err := strconv.Atoi(os.Getenv("OVERLAY_BENCH_PAGESIZE")); err == nil && v > 0 {
		pageSize = v
	}
	for range b.N {
		dir := b.TempDir()
		copyFile(b, replBenchFile(b, pageSize), filepath.Join(dir, FileName))
		cfg := Config{Dir: dir, MergeBytes: 1 << 40}
		ix, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(5, 5))
		seq := ix.AppliedSeq()
		var touched []replEvent
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap0 := ms.HeapAlloc
		for range events / replBatch {
			evs := replBatchOf(b, ix, rng, replRecords, replUsers, replBatch)
			touched = append(touched, evs[:10]...)
			seq += replBatch
			updateRepl(b, ix, evs, seq)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		lay := ix.cur.ov.Load().lay
		b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(heap0))/(1<<20), "overlay-heap-MiB")
		b.ReportMetric(float64(lay.size.Load())/(1<<20), "overlay-estimate-MiB")
		b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(heap0))/float64(events), "heap-B/event")
		if err := ix.Close(); err != nil {
			b.Fatal(err)
		}

		start := time.Now()
		ix, err = Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "open-ms")
		if ix.AppliedSeq() != seq {
			b.Fatalf("reopened at seq %d, want %d", ix.AppliedSeq(), seq)
		}

		// One decision's reads: a user and a record, every other record one the batches changed.
		const reads = 200_000
		start = time.Now()
		for i := range reads {
			typ, id := TypeContact, fmt.Sprintf("r-%08d", (i*7919)%replRecords*3%replRecords+1)
			if i%2 == 0 {
				e := touched[i%len(touched)]
				typ, id = e.typ, e.id
			}
			if id[len(id)-1] == 'x' {
				continue
			}
			if err := ix.View(func(rt *ReadTx) error {
				if u, err := rt.UserJSON("u-42"); err != nil || u == nil {
					return fmt.Errorf("user: %v", err)
				}
				_, err := rt.RecordJSON(typ, id)
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/reads, "view-ns")

		start = time.Now()
		for i := range 2000 {
			if err := ix.View(func(rt *ReadTx) error {
				_, _, err := rt.SubjectRecords(fmt.Sprint("u-", i%replUsers), TypeContact, fmt.Sprint("loc-", i%5), "", 100)
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/2000/1000, "subject-records-µs")

		// The merge, with the peak of the heap after each of its commits (MERGE_CHUNK: keys per
		// commit, default mergeChunkKeys).
		if v, err := strconv.Atoi(os.Getenv("MERGE_CHUNK")); err == nil && v > 0 {
			ix.mergeChunk = v
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		base, peak, chunks := ms.HeapAlloc, ms.HeapAlloc, 0
		ix.hooks.mergeCommitted = func(int, bool) error {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			chunks++
			return nil
		}
		cpu0 := coldtest.ProcessCPU(b)
		start = time.Now()
		ix.wmu.Lock()
		err = ix.merge(ix.cur)
		ix.wmu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "merge-ms")
		b.ReportMetric(float64((coldtest.ProcessCPU(b) - cpu0).Milliseconds()), "merge-cpu-ms")
		b.ReportMetric(float64(chunks), "merge-commits")
		b.ReportMetric(float64(peak-base)/(1<<20), "merge-heap-peak-MiB")
		if err := ix.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
