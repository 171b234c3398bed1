package index

import (
	"cmp"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/coldtest"
	bolt "go.etcd.io/bbolt"
)

// The 1,000,000-record index of BenchmarkRandomReplication1M, built once per page size per test
// binary run (with the sorted ReplaceAll loader) into a temporary directory that TestMain removes.
var replBench struct {
	mu    sync.Mutex
	dir   string
	files map[int]string // by page size
}

const (
	replRecords = 1_000_000
	replUsers   = 10_000
	replBatch   = 1_000
)

// replBenchFile returns the path of a 1M-record index.db built with page size pageSize.
func replBenchFile(b testing.TB, pageSize int) string {
	b.Helper()
	replBench.mu.Lock()
	defer replBench.mu.Unlock()
	if p, ok := replBench.files[pageSize]; ok {
		return p
	}
	if replBench.files == nil {
		replBench.files = map[int]string{}
	}
	// REPL_BENCH_DIR keeps the built files across runs of the test binary (and is not removed).
	cache := os.Getenv("REPL_BENCH_DIR")
	if cache == "" && replBench.dir == "" {
		d, err := os.MkdirTemp("", "crmauthz-index-bench-")
		if err != nil {
			b.Fatal(err)
		}
		replBench.dir = d
	}
	if cache == "" {
		cache = replBench.dir
	}
	dir := filepath.Join(cache, fmt.Sprint("ps", pageSize))
	if _, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
		replBench.files[pageSize] = filepath.Join(dir, FileName)
		return replBench.files[pageSize]
	}
	t := defaultTuning()
	t.pageSize = pageSize
	ix, err := openTuned(Config{Dir: dir}, t)
	if err != nil {
		b.Fatal(err)
	}
	if err := ix.ReplaceAll(1, benchRows(replUsers, replRecords, 1)); err != nil {
		b.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(dir, FileName)
	replBench.files[pageSize] = p
	return p
}

func copyFile(tb testing.TB, src, dst string) {
	tb.Helper()
	in, err := os.Open(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
}

// replEvent is one follower or owner change.
type replEvent struct {
	op      byte // 'a' follower.add, 'r' follower.remove, 'o' owner.set
	typ, id string
	user    string
}

// replBatchOf draws n events on distinct records chosen at random over the whole index of
// benchRows(users, records, …), valid against its current state: a third each of follower.add (a
// user not yet following), follower.remove (a current follower) and owner.set (another user).
func replBatchOf(tb testing.TB, ix *Index, rng *rand.Rand, records, users, n int) []replEvent {
	evs := make([]replEvent, 0, n)
	seen := map[int]bool{}
	err := ix.View(func(rt *ReadTx) error {
		for len(evs) < n {
			j := rng.IntN(records)
			if seen[j] {
				continue
			}
			seen[j] = true
			typ := TypeContact
			if j%3 == 0 {
				typ = TypeOpportunity
			}
			id := fmt.Sprintf("r-%08d", j)
			r, ok, err := rt.Record(typ, id)
			if err != nil || !ok {
				return fmt.Errorf("record %s: %v %v", id, ok, err)
			}
			e := replEvent{typ: typ, id: id}
			other := func() string {
				for {
					u := fmt.Sprint("u-", rng.IntN(users))
					if u != r.Owner && !slices.Contains(r.Followers, u) {
						return u
					}
				}
			}
			switch k := len(evs) % 3; {
			case k == 2:
				e.op, e.user = 'o', other()
			case k == 1 && len(r.Followers) > 0 || len(r.Followers) >= 10:
				e.op, e.user = 'r', r.Followers[rng.IntN(len(r.Followers))]
			default:
				e.op, e.user = 'a', other()
			}
			evs = append(evs, e)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return evs
}

// updateRepl applies evs in one Update that sets applied_seq to seq.
func updateRepl(tb testing.TB, ix *Index, evs []replEvent, seq uint64) {
	tb.Helper()
	if err := ix.Update(func(w *WriteTx) error {
		if err := applyReplEvents(w, evs); err != nil {
			return err
		}
		return w.SetAppliedSeq(seq)
	}); err != nil {
		tb.Fatal(err)
	}
}

func applyReplEvents(w *WriteTx, evs []replEvent) error {
	for _, e := range evs {
		var err error
		switch e.op {
		case 'a':
			err = w.AddFollower(e.typ, e.id, e.user)
		case 'r':
			err = w.RemoveFollower(e.typ, e.id, e.user)
		case 'o':
			err = w.SetOwner(e.typ, e.id, e.user)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkRandomReplication1M applies batches of 1,000 follower and owner changes spread at
// random over an index of 1,000,000 records (10,000 users, 1–10 followers each), one Update (one
// commit, fsynced) per batch, and reports events/s. The events are generated before the clock
// from a model of the records read from the index (replWorld: the same draws as replBatchOf, a
// third each of follower.add, follower.remove and owner.set, every one a real change), so the
// timed region holds what a replication client drives: the Updates, their fsyncs and the merges;
// the "viewgen" variant draws them in the timed region through a View and a Record per event,
// as the benchmark did before session 8 of issue 17 (BENCHMARKS.md). Each variant changes one setting of the write
// path (tuning.go, Config.MergeBytes) on its own copy of the index; "default" is the shipped one
// (delta log and overlay, docs/design.md), "direct" the layout before issue 17 (every Update
// written into the main buckets). The machine is shared and its load swings within seconds, so
// the variants take turns batch by batch inside one benchmark (one op = one batch on each) and
// each reports its own events/s over the same period, and the percentiles of an Update's time.
// The merges run in the background (merge.go), beside the batches: events/s counts the Updates'
// time only; a variant run alone (REPL_BENCH_VARIANTS=default) also reports wall-events/s, the
// sustained rate over the wall clock, the last merge awaited, merged-events/s (the rest of the
// overlay merged too, alone at the end: the strict count) and cpu-µs/event and written-B/event over
// the whole run. Run enough batches for whole merge
// cycles (the default merges every ~230 batches; -benchtime 1000x is four). Building the index takes ~15 s per page
// size on a quiet machine; all the copies take 4.5 GB of disk (REPL_BENCH_DIR keeps the built
// files for the next run).
//
//	go test -run '^$' -bench 'RandomReplication1M$' -benchtime 1000x -count 3 ./internal/index   # default and direct
//	REPL_BENCH_VARIANTS=default go test -run '^$' -bench 'RandomReplication1M$' -benchtime 1000x -count 3 ./internal/index
//	REPL_BENCH_VARIANTS=all go test -run '^$' -bench 'RandomReplication1M$' -benchtime 20x -count 3 ./internal/index
func BenchmarkRandomReplication1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-record index")
	}
	type variant struct {
		name   string
		tune   func(*tuning)
		sorted bool
		merge  int64 // Config.MergeBytes (0: the default)
		chunk  int   // keys per merge commit (0: mergeChunkKeys)
		// viewGen draws each batch's events in the timed region, through a View and a Record
		// per event (replBatchOf: the benchmark before session 8 of issue 17), instead of
		// generating them all before the clock from a model of the records (replWorld).
		viewGen bool

		ix      *Index
		rng     *rand.Rand
		seq     uint64
		codes   []replCode // the events generated before the clock, b.N batches
		evs     []replEvent
		batches int
		total   time.Duration
		inApply time.Duration   // of total, in the Update callback (the rest: commit)
		cpu     time.Duration   // CPU time of the process (user and system) during the Updates
		written int64           // bytes passed to write system calls during the Updates
		lat     []time.Duration // each Update's time, for the percentiles
	}
	variants := []*variant{
		{name: "default", tune: func(*tuning) {}},
		{name: "direct", tune: func(t *tuning) { t.direct = true }},
		{name: "viewgen", tune: func(*tuning) {}, viewGen: true},
		{name: "mergebytes=16MiB", tune: func(*tuning) {}, merge: 16 << 20},
		{name: "mergebytes=24MiB", tune: func(*tuning) {}, merge: 24 << 20},
		{name: "mergebytes=32MiB", tune: func(*tuning) {}, merge: 32 << 20},
		{name: "chunk=2048", tune: func(*tuning) {}, chunk: 2048},
		{name: "mergebytes=32MiB+chunk=4096", tune: func(*tuning) {}, merge: 32 << 20, chunk: 4096},
		{name: "mergebytes=16MiB+chunk=4096", tune: func(*tuning) {}, merge: 16 << 20, chunk: 4096},
		{name: "mergebytes=16MiB+chunk=8192", tune: func(*tuning) {}, merge: 16 << 20, chunk: 8192},
		{name: "mergebytes=64MiB", tune: func(*tuning) {}, merge: 64 << 20},
		{name: "chunk=512", tune: func(*tuning) {}, chunk: 512},
		{name: "chunk=1024", tune: func(*tuning) {}, chunk: 1024},
		{name: "chunk=4096", tune: func(*tuning) {}, chunk: 4096},
		{name: "chunk=8192", tune: func(*tuning) {}, chunk: 8192},
		{name: "mergebytes=8MiB", tune: func(*tuning) {}, merge: 8 << 20},
		{name: "sorted", tune: func(*tuning) {}, sorted: true},
		{name: "pagesize=1024", tune: func(t *tuning) { t.pageSize = 1024 }},
		{name: "pagesize=2048", tune: func(t *tuning) { t.pageSize = 2048 }},
		{name: "pagesize=4096", tune: func(t *tuning) { t.pageSize = 4096 }},
		{name: "pagesize=8192", tune: func(t *tuning) { t.pageSize = 8192 }},
		{name: "pagesize=16384", tune: func(t *tuning) { t.pageSize = 16384 }},
		{name: "yield=always", tune: func(t *tuning) { t.alwaysYield = true }},
		{name: "freelist=map", tune: func(t *tuning) { t.mapFreelist = true }},
		{name: "nofreelistsync", tune: func(t *tuning) { t.noFreelistSync = true }},
		{name: "fill=0.3", tune: func(t *tuning) { t.fillPercent = 0.3 }},
		{name: "fill=0.8", tune: func(t *tuning) { t.fillPercent = 0.8 }},
		{name: "fill=0.95", tune: func(t *tuning) { t.fillPercent = 0.95 }},
		{name: "fill=1", tune: func(t *tuning) { t.fillPercent = 1 }},
	}
	// REPL_BENCH_VARIANTS: "all", or names separated by commas; by default only the shipped
	// settings run (make bench-go), since each page size builds its own index.
	if only := os.Getenv("REPL_BENCH_VARIANTS"); only != "all" {
		names := strings.Split(cmp.Or(only, "default,direct"), ",")
		variants = slices.DeleteFunc(variants, func(v *variant) bool { return !slices.Contains(names, v.name) })
	}
	for i, v := range variants {
		t := defaultTuning()
		v.tune(&t)
		dir := b.TempDir()
		copyFile(b, replBenchFile(b, t.pageSize), filepath.Join(dir, FileName))
		ix, err := openTuned(Config{Dir: dir, MergeBytes: v.merge}, t)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = ix.Close() })
		ix.mergeChunk = v.chunk
		v.ix, v.rng, v.seq = ix, rand.New(rand.NewPCG(3, uint64(i))), ix.AppliedSeq()
		if !v.viewGen {
			world := loadReplWorld(b, ix, replRecords)
			v.codes = make([]replCode, 0, b.N*replBatch)
			for range b.N {
				v.codes = world.batch(v.rng, replUsers, replBatch, v.codes)
			}
		}
	}
	runtime.GC() // the models are garbage now: not collected inside the timed region
	batch := func(v *variant) {
		var evs []replEvent
		if v.viewGen {
			evs = replBatchOf(b, v.ix, v.rng, replRecords, replUsers, replBatch)
		} else {
			k := v.batches * replBatch
			v.evs = replEvents(v.codes[k:k+replBatch], v.evs[:0])
			evs = v.evs
		}
		v.batches++
		if v.sorted {
			slices.SortFunc(evs, func(x, y replEvent) int {
				return cmp.Or(cmp.Compare(x.typ, y.typ), cmp.Compare(x.id, y.id))
			})
		}
		v.seq += replBatch
		cpu0, w0 := coldtest.ProcessCPU(b), processWrittenBytes()
		start := time.Now()
		if err := v.ix.Update(func(w *WriteTx) error {
			t0 := time.Now()
			defer func() { v.inApply += time.Since(t0) }()
			if err := applyReplEvents(w, evs); err != nil {
				return err
			}
			return w.SetAppliedSeq(v.seq)
		}); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		v.total += d
		v.lat = append(v.lat, d)
		v.cpu += coldtest.ProcessCPU(b) - cpu0
		v.written += processWrittenBytes() - w0
	}
	b.ResetTimer()
	loop, loopCPU, loopWritten := time.Now(), coldtest.ProcessCPU(b), processWrittenBytes()
	for i := range b.N {
		for j := range variants {
			batch(variants[(i+j)%len(variants)]) // each variant goes first in turn
		}
	}
	for _, v := range variants { // the merge running in the background is part of the work
		_ = waitBackgroundMerge(v.ix)
	}
	wall := time.Since(loop)
	if len(variants) == 1 {
		// Alone, the wall clock is the sustained rate: the background merges run beside the
		// batches, so the Updates' time alone would leave them out. The events since the last
		// freeze are not merged yet (up to a merge period's worth), so wall-events/s leaves out
		// part of a merge; merged-events/s adds the merge of that rest, alone at the end (no
		// batches beside it), so the true rate lies between the two.
		b.ReportMetric(float64(b.N*replBatch)/wall.Seconds(), variants[0].name+"-wall-events/s")
		v := variants[0]
		v.ix.wmu.Lock()
		err := v.ix.merge(v.ix.cur)
		v.ix.wmu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N*replBatch)/time.Since(loop).Seconds(), v.name+"-merged-events/s")
		// The whole run's CPU (the batches, every merge; the events' generation in viewgen) and bytes
		// written, per event: on a shared machine far steadier than the wall clock.
		b.ReportMetric(float64((coldtest.ProcessCPU(b)-loopCPU).Nanoseconds())/1000/float64(b.N*replBatch), v.name+"-cpu-µs/event")
		b.ReportMetric(float64(processWrittenBytes()-loopWritten)/float64(b.N*replBatch), v.name+"-written-B/event")
	}
	b.StopTimer()
	for _, v := range variants {
		slices.Sort(v.lat)
		for _, q := range []struct {
			name string
			p    float64
		}{{"p50", 0.50}, {"p99", 0.99}, {"max", 1}} {
			i := min(len(v.lat)-1, int(q.p*float64(len(v.lat))))
			b.ReportMetric(float64(v.lat[i].Microseconds())/1000, v.name+"-update-"+q.name+"-ms")
		}
		b.ReportMetric(float64(b.N*replBatch)/v.total.Seconds(), v.name+"-events/s")
		b.ReportMetric(float64((v.total-v.inApply).Microseconds())/1000/float64(b.N), v.name+"-commit-ms")
		b.ReportMetric(float64(v.cpu.Microseconds())/1000/float64(b.N), v.name+"-cpu-ms")
		b.ReportMetric(float64(v.written)/(1<<20)/float64(b.N), v.name+"-written-MiB")
		if m := v.ix.merges.Load(); m > 0 {
			b.ReportMetric(float64(m), v.name+"-merges")
			b.ReportMetric(float64(v.ix.mergeTime.Load())/1e6/float64(m), v.name+"-ms/merge")
		}
		if fi, err := os.Stat(v.ix.Path()); err == nil {
			b.ReportMetric(float64(fi.Size())/(1<<20), v.name+"-file-MiB")
		}
		reportLeafPages(b, v.ix, v.name)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if replBench.dir != "" {
		_ = os.RemoveAll(replBench.dir)
	}
	os.Exit(code)
}

// BenchmarkOpen1M opens the 1,000,000-record index after one commit, with the freelist written at
// each commit (bbolt's default) and without (NoFreelistSync: Open then walks the whole file to
// rebuild it), and reports the bytes the open allocates.
//
//	go test -run '^$' -bench Open1M -benchtime 5x ./internal/index
func BenchmarkOpen1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-record index")
	}
	for _, noSync := range []bool{false, true} {
		b.Run(fmt.Sprint("nofreelistsync=", noSync), func(b *testing.B) {
			t := defaultTuning()
			t.noFreelistSync = noSync
			dir := b.TempDir()
			copyFile(b, replBenchFile(b, t.pageSize), filepath.Join(dir, FileName))
			ix, err := openTuned(Config{Dir: dir}, t)
			if err != nil {
				b.Fatal(err)
			}
			if err := ix.Update(func(w *WriteTx) error { return w.SetAppliedSeq(2) }); err != nil {
				b.Fatal(err)
			}
			if err := ix.Close(); err != nil {
				b.Fatal(err)
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			alloc0 := ms.TotalAlloc
			b.ResetTimer()
			for range b.N {
				ix, err := openTuned(Config{Dir: dir}, t)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := ix.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.TotalAlloc-alloc0)/float64(b.N)/(1<<20), "alloc-MiB/op")
		})
	}
}

// reportLeafPages reports the leaf pages of the records and byuser buckets at the end of a run
// and their fill: a merge of random events rewrites nearly all of them.
func reportLeafPages(b *testing.B, ix *Index, name string) {
	var recs, refs bolt.BucketStats
	if err := ix.cur.db.View(func(tx *bolt.Tx) error {
		recs, refs = tx.Bucket(bucketRecords).Stats(), tx.Bucket(bucketByUser).Stats()
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	ps := ix.cur.db.Info().PageSize
	b.ReportMetric(float64(recs.LeafPageN), name+"-records-leaves")
	b.ReportMetric(float64(refs.LeafPageN), name+"-byuser-leaves")
	b.ReportMetric(float64(recs.LeafInuse+refs.LeafInuse)/float64((recs.LeafPageN+refs.LeafPageN)*ps), name+"-leaf-fill")
}
