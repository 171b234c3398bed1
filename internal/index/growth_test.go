package index

import (
	"math/rand/v2"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// fileGrowth applies batches of random follower and owner changes to a small index, its overlay
// merged in the background as in production, and returns the file's used size (bbolt's high-water
// mark) after the first warm batches and after all of them, and the bytes of its free pages at the
// end.
func fileGrowth(tb testing.TB, t tuning, warm, total int) (atWarm, atEnd, free int64) {
	tb.Helper()
	const (
		records = 20_000
		users   = 2_000
		batch   = 400
	)
	t.statistics = true
	ix, err := openTuned(Config{Dir: tb.TempDir(), MergeBytes: 1 << 20}, t)
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
	rng := rand.New(rand.NewPCG(7, 7))
	seq := ix.AppliedSeq()
	for i := 1; i <= total; i++ {
		evs := replBatchOf(tb, ix, rng, records, users, batch)
		seq += batch
		if err := ix.Update(func(w *WriteTx) error {
			if err := applyReplEvents(w, evs); err != nil {
				return err
			}
			return w.SetAppliedSeq(seq)
		}); err != nil {
			tb.Fatal(err)
		}
		if i == warm {
			if err := waitBackgroundMerge(ix); err != nil {
				tb.Fatal(err)
			}
			atWarm = used()
		}
	}
	if err := waitBackgroundMerge(ix); err != nil {
		tb.Fatal(err)
	}
	if m, _ := ix.MergeStats(); m < 10 {
		tb.Fatalf("%d merges, want at least 10: the test would not show a growth", m)
	}
	return atWarm, used(), int64(ix.cur.db.Stats().FreePageN) * int64(ix.cur.db.Info().PageSize)
}

// TestFileSizeBoundedUnderReplication is the regression test of the file's growth under steady
// random replication (docs/design.md, "Index: delta log, overlay and merge"). With bbolt's
// hashmap freelist the used size grew with every merge cycle and so did the free pages (runs split
// at random until the many-page allocations went to the end of the file): here, 28 MiB after 100
// batches, 44 MiB after 300, 59 MiB after 1,200, two thirds of it free; with the array freelist
// 15–18 MiB, a seventh or less free. After 100 batches (4 merges) the file must not grow by more
// than a quarter in the next 300 (12 more merges), and its free pages must stay under a quarter
// of it.
func TestFileSizeBoundedUnderReplication(t *testing.T) {
	if testing.Short() {
		t.Skip("applies 160,000 events")
	}
	t.Parallel()
	const warm, total = 100, 400
	atWarm, atEnd, free := fileGrowth(t, defaultTuning(), warm, total)
	t.Logf("used %d KiB after %d batches, %d KiB after %d, %d KiB free", atWarm>>10, warm, atEnd>>10, total, free>>10)
	if atEnd > atWarm+atWarm/4 {
		t.Errorf("the file grew from %d to %d KiB between batch %d and %d: more than a quarter", atWarm>>10, atEnd>>10, warm, total)
	}
	if free > atEnd/4 {
		t.Errorf("%d KiB free in a file of %d KiB: more than a quarter", free>>10, atEnd>>10)
	}
}
