package index

import (
	"math/rand/v2"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// fileGrowth applies batches of random follower and owner changes to a small index, its overlay
// merged in the background as in production, and returns the file's used size (bbolt's high-water
// mark) once loaded and after all the batches, and the bytes of its free pages at the end.
func fileGrowth(tb testing.TB, t tuning, total int) (loaded, atEnd, free int64) {
	tb.Helper()
	const (
		records = 20_000
		users   = 2_000
		batch   = 400
	)
	t.statistics = true
	ix, err := openTuned(Config{Dir: tb.TempDir(), MergeBytes: 512 << 10}, t)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ix.Close() })
	ix.mergeChunk = 256
	if err := ix.ReplaceAll(1, benchRows(users, records, 1)); err != nil {
		tb.Fatal(err)
	}
	used := func() int64 {
		var n int64
		if err := ix.cur.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil }); err != nil {
			tb.Fatal(err)
		}
		return n
	}
	loaded = used()
	rng := rand.New(rand.NewPCG(7, 7))
	seq := ix.AppliedSeq()
	for i := 1; i <= total; i++ {
		evs := replBatchOf(tb, ix, rng, records, users, batch)
		seq += batch
		updateRepl(tb, ix, evs, seq)
	}
	if err := waitBackgroundMerge(ix); err != nil {
		tb.Fatal(err)
	}
	if m, _ := ix.MergeStats(); m < 10 {
		tb.Fatalf("%d merges, want at least 10: the test would not show a growth", m)
	} else {
		tb.Logf("%d merges", m)
	}
	return loaded, used(), int64(ix.cur.db.Stats().FreePageN) * int64(ix.cur.db.Info().PageSize)
}

// TestFileSizeBoundedUnderReplication is the regression test of the file's growth under steady
// random replication (docs/design.md, "Index: delta log, overlay and merge"). With bbolt's
// hashmap freelist the used size grew with every merge cycle and so did the free pages (runs split
// at random until the many-page allocations went to the end of the file): from 12 MiB once loaded
// to about 50 MiB after 400 batches, two thirds of it free. With the array freelist it stays
// at about 1.4 times the loaded size, a sixth or less of it free. So after 400 batches (40 merges)
// the file must stay under twice its loaded size, and its free pages under 40 % of it.
func TestFileSizeBoundedUnderReplication(t *testing.T) {
	if testing.Short() {
		t.Skip("applies 160,000 events")
	}
	t.Parallel()
	const total = 400
	loaded, atEnd, free := fileGrowth(t, defaultTuning(), total)
	t.Logf("used %d KiB once loaded, %d KiB after %d batches, %d KiB free", loaded>>10, atEnd>>10, total, free>>10)
	if atEnd > 2*loaded {
		t.Errorf("the file grew from %d to %d KiB in %d batches: more than twice", loaded>>10, atEnd>>10, total)
	}
	if free > atEnd*4/10 {
		t.Errorf("%d KiB free in a file of %d KiB: more than 40 %%", free>>10, atEnd>>10)
	}
}
