package index

import (
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// pageSizeOf is the page size of ix's open file.
func pageSizeOf(ix *Index) int { return ix.cur.db.Info().PageSize }

// TestPageSize checks that the files the index builds have the OS's page size, and that a file
// of another page size (16 KiB: tuning.pageSize, as BenchmarkRandomReplication1M's variants build
// them) opens, reads, takes Updates and merges with its own page size, until a ReplaceAll builds
// a new file.
func TestPageSize(t *testing.T) {
	defaultPageSize, other := os.Getpagesize(), 16384
	if defaultPageSize == other {
		other = 8192
	}
	t.Run("new", func(t *testing.T) {
		ix := openTest(t, Config{})
		if got := pageSizeOf(ix); got != defaultPageSize {
			t.Fatalf("a new file's page size %d, want %d", got, defaultPageSize)
		}
		if err := ix.ReplaceAll(1, benchRows(20, 200, 1)); err != nil {
			t.Fatal(err)
		}
		if got := pageSizeOf(ix); got != defaultPageSize {
			t.Fatalf("page size %d after ReplaceAll, want %d", got, defaultPageSize)
		}
	})
	t.Run("other", func(t *testing.T) {
		dir := t.TempDir()
		old, err := openTuned(Config{Dir: dir}, tuning{pageSize: other})
		if err != nil {
			t.Fatal(err)
		}
		if err := old.ReplaceAll(1, benchRows(50, 3000, 1)); err != nil {
			t.Fatal(err)
		}
		want := loadReplWorld(t, old, 3000)
		if got := pageSizeOf(old); got != other {
			t.Fatalf("the other file's page size %d, want %d", got, other)
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		ix := openTest(t, Config{Dir: dir, MergeBytes: 64 << 10}) // merges every few batches
		if got := pageSizeOf(ix); got != other {
			t.Fatalf("the file opened with page size %d, want its %d", got, other)
		}
		rng := rand.New(rand.NewPCG(7, 7))
		var codes []replCode
		for i := range 20 {
			codes = want.batch(rng, 50, 200, codes[:0])
			updateRepl(t, ix, replEvents(codes, nil), uint64(2+i))
		}
		ix.wmu.Lock()
		err = ix.merge(ix.cur)
		ix.wmu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if m, _ := ix.MergeStats(); m < 2 {
			t.Fatalf("%d merges, want several", m)
		}
		got := loadReplWorld(t, ix, 3000)
		for j := range 3000 {
			if got.owner[j] != want.owner[j] || !slices.Equal(got.followers[j], want.followers[j]) {
				t.Fatalf("record %d: owner %d followers %v, want %d %v", j, got.owner[j], got.followers[j], want.owner[j], want.followers[j])
			}
		}
		if got := pageSizeOf(ix); got != other {
			t.Fatalf("page size %d after the merges, want %d", got, other)
		}
		if err := ix.ReplaceAll(100, benchRows(20, 200, 1)); err != nil {
			t.Fatal(err)
		}
		if got := pageSizeOf(ix); got != defaultPageSize {
			t.Fatalf("page size %d after ReplaceAll, want the new files' %d", got, defaultPageSize)
		}
	})
}
