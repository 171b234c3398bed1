package index

import bolt "go.etcd.io/bbolt"

// tuning holds the bbolt settings of the replication write path (docs/design.md, "Write path"),
// so that BenchmarkRandomReplication1M can compare them on copies of one index. Measured there
// (BENCHMARKS.md, "Random replication"): page sizes of 1, 2 and 8 KiB, split points of 0.3 and
// 0.8 and NoFreelistSync moved events/s by less than the spread between two runs of the same
// setting, while NoFreelistSync makes every Open walk the whole file to rebuild the freelist
// (2–3 s instead of milliseconds at 1,000,000 records, ten times that at 10,000,000). So the
// defaults are bbolt's. Pages of 8 KiB took ~5–10 % less CPU per replicated event, but a View
// took ~5 % longer with the caches hot and more with them evicted (BenchmarkViewCold; session 8
// in BENCHMARKS.md), so the page size stays the OS's.
type tuning struct {
	// pageSize is the page size of a file ReplaceAll or create builds (0: the OS page size).
	// bbolt reads it from the meta page of an existing file, so files of any page size open and
	// keep theirs until a ReplaceAll builds a new one.
	pageSize int
	// noFreelistSync leaves the freelist out of each commit; Open rebuilds it by walking the file.
	noFreelistSync bool
	// fillPercent is the split point of the records and byuser buckets in Update and merges (0:
	// bbolt's 0.5).
	fillPercent float64
	// direct writes each Update straight into the main buckets, without the delta log and the
	// overlay (overlay.go): the layout before issue 17, kept for BenchmarkRandomReplication1M.
	direct bool
	// initialMmapSize is bbolt's InitialMmapSize (0: bbolt's default). A test that holds a read
	// transaction across a merge sets it, so the merge's commits never wait to re-map the file.
	initialMmapSize int
	// statistics turns bbolt's statistics on (the free and pending page counts of db.Stats), for
	// the tests that follow the file's free pages.
	statistics bool
	// mapFreelist uses bbolt's hashmap freelist instead of the array one (the setting before the
	// fix of the file's growth, kept for BenchmarkRandomReplication1M; see liveOptions).
	mapFreelist bool
	// alwaysYield makes a background merge yield to a running batch before every commit, also
	// when it lags the active layer's filling (the policy before session 7 of issue 17, kept for
	// BenchmarkRandomReplication1M; see Index.mergeBehind).
	alwaysYield bool
	// flatDelta writes each Update's delta log entry as a value of the delta bucket (the layout
	// before session 9 of issue 17, delta.go), for the tests of files written by older code.
	flatDelta bool
}

func defaultTuning() tuning {
	return tuning{}
}

// apply sets t's options on opts (a live or new file).
func (t tuning) apply(opts *bolt.Options) *bolt.Options {
	opts.PageSize = t.pageSize
	opts.NoFreelistSync = t.noFreelistSync
	opts.InitialMmapSize = t.initialMmapSize
	if t.mapFreelist {
		opts.FreelistType = bolt.FreelistMapType
	}
	if t.statistics {
		opts.NoStatistics = false
	}
	return opts
}
