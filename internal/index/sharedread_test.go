package index

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// viewTx returns the bbolt transaction of one View and the owner of contact c-1 it reads.
func viewTx(tb testing.TB, ix *Index) (tx *bolt.Tx, owner string) {
	tb.Helper()
	mustView(tb, ix, func(rt *ReadTx) error {
		tx = rt.tx
		r, ok, err := rt.Record(TypeContact, "c-1")
		if err != nil || !ok {
			return fmt.Errorf("record c-1: %v %v", ok, err)
		}
		owner = r.Owner
		return nil
	})
	return tx, owner
}

// forgetShared releases the read transaction ix's Views share, if one is cached, as a commit's
// start does: the next View begins its own.
func forgetShared(ix *Index) {
	h := ix.cur
	h.smu.Lock()
	s := h.shared.Swap(nil)
	h.smu.Unlock()
	if s != nil {
		s.release()
	}
}

// TestViewsShareTransaction: the Views of one state read through one bbolt transaction
// (sharedread.go); after each kind of commit, a View sees the commit through another one, and
// the one before is rolled back once no View holds it (bbolt's re-map and Close wait for it).
func TestViewsShareTransaction(t *testing.T) {
	owned := func(owner string) func(*Loader) error {
		return func(l *Loader) error { return l.PutRecord(contact("c-1", "l-1", owner)) }
	}
	batch := func(tb testing.TB, ix *Index) { setOwnerBatch(tb, ix, "u-b", 2) }
	for _, tc := range []struct {
		name    string
		direct  bool
		prepare func(tb testing.TB, ix *Index) // before the state whose transaction is shared
		commit  func(tb testing.TB, ix *Index)
		want    string
	}{
		{"batch", false, nil, batch, "u-b"},
		{"direct batch", true, nil, batch, "u-b"},
		{"merge", false, batch, func(tb testing.TB, ix *Index) { forceMerge(tb, ix, -1) }, "u-b"},
		{"merge stopped after a chunk", false, batch, func(tb testing.TB, ix *Index) {
			ix.mergeChunk = 1
			forceMerge(tb, ix, 0)
		}, "u-b"},
		{"snapshot", false, nil, func(tb testing.TB, ix *Index) {
			if err := ix.ReplaceAll(3, owned("u-c")); err != nil {
				tb.Fatal(err)
			}
		}, "u-c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			finished := make(chan struct{})
			go watchdog(nil, finished, time.Minute) // a transaction left open hangs a commit or Close
			defer close(finished)
			tune := defaultTuning()
			tune.direct = tc.direct
			ix, err := openTuned(Config{Dir: t.TempDir()}, tune)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ix.Close() })
			if err := ix.ReplaceAll(1, owned("u-a")); err != nil {
				t.Fatal(err)
			}
			want := "u-a"
			if tc.prepare != nil {
				tc.prepare(t, ix)
				want = "u-b"
			}
			first, owner := viewTx(t, ix)
			if again, _ := viewTx(t, ix); again != first || owner != want {
				t.Fatalf("two Views of one state: transactions %p and %p, owner %q: want one transaction, owner %q", first, again, owner, want)
			}
			tc.commit(t, ix)
			if first.DB() != nil {
				t.Fatal("the transaction of the state before the commit is still open")
			}
			next, owner := viewTx(t, ix)
			if next == first || owner != tc.want {
				t.Fatalf("after the commit: transaction %p (before %p), owner %q: want another transaction, owner %q", next, first, owner, tc.want)
			}
			if again, _ := viewTx(t, ix); again != next {
				t.Fatalf("two Views of the new state: transactions %p and %p", next, again)
			}
			if err := ix.Close(); err != nil {
				t.Fatal(err)
			}
			if next.DB() != nil {
				t.Fatal("Close left the shared transaction open")
			}
		})
	}
}

// TestViewCachesNoTransactionBegunBeforeACommit: a View that began its transaction before a
// commit and would cache it after must not (sharedread.go): later Views would read the state
// before the commit. In direct mode a batch does not change the overlay state, so only the
// check of the commits begun in between tells.
func TestViewCachesNoTransactionBegunBeforeACommit(t *testing.T) {
	tune := defaultTuning()
	tune.direct = true
	tune.initialMmapSize = 64 << 20 // the paused View must not block the batch's commit
	ix, err := openTuned(Config{Dir: t.TempDir()}, tune)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ix.Close() })
	mustUpdate(t, ix, func(w *WriteTx) error { return w.PutRecord(contact("c-1", "l-1", "u-a")) })
	begun, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ix.hooks.sharedBegun = func() {
		once.Do(func() {
			close(begun)
			<-resume
		})
	}
	done := make(chan string)
	go func() {
		_, owner := viewTx(t, ix)
		done <- owner
	}()
	<-begun // the View's transaction holds owner u-a
	setOwnerBatch(t, ix, "u-b", 2)
	close(resume)
	if owner := <-done; owner != "u-a" {
		t.Fatalf("the View begun before the batch read owner %q, want u-a", owner)
	}
	ix.hooks.sharedBegun = nil
	if _, owner := viewTx(t, ix); owner != "u-b" {
		t.Fatalf("a View after the batch read owner %q, want u-b: it read a transaction begun before the batch", owner)
	}
}

// TestSharedReadFileGrowth: Views run without pause while batches grow the file many times over
// (each growth re-maps it, which waits for every open read transaction), merges write the main
// buckets, a snapshot is swapped in and the index closed. A read transaction kept for later
// Views across a commit would stall that commit for ever (sharedread.go); the test fails after
// two minutes without progress, with every goroutine's stack. The Views check that each sees
// one whole state.
func TestSharedReadFileGrowth(t *testing.T) {
	if testing.Short() {
		t.Skip("grows a file to ~10 MiB")
	}
	dir := t.TempDir()
	ix, err := openTuned(Config{Dir: dir, MergeBytes: 16 << 10}, defaultTuning())
	if err != nil {
		t.Fatal(err)
	}
	ix.mergeChunk = 64
	progress := make(chan string, 16)
	finished := make(chan struct{})
	go watchdog(progress, finished, 2*time.Minute)
	defer close(finished)

	stop := make(chan struct{})
	var (
		wg    sync.WaitGroup
		views atomic.Int64
		bad   atomic.Pointer[string]
	)
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				err := ix.View(func(rt *ReadTx) error {
					seq := rt.AppliedSeq()
					r, ok, err := rt.Record(TypeContact, fmt.Sprintf("g%d", (g+i)%8))
					if err != nil {
						return err
					}
					// Batch seq wrote g0..g7 with owner u-<seq>: one state, never a mix.
					if seq > 0 && (!ok || r.Owner != fmt.Sprintf("u-%d", seq)) {
						return fmt.Errorf("seq %d: record %v %+v", seq, ok, r)
					}
					return nil
				})
				if err != nil {
					msg := err.Error()
					bad.CompareAndSwap(nil, &msg)
					return
				}
				views.Add(1)
			}
		}()
	}
	size := func() int64 {
		fi, err := os.Stat(ix.Path())
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	start := size()
	long := strings.Repeat("x", 400)
	for seq := uint64(1); seq <= 20; seq++ {
		mustUpdate(t, ix, func(w *WriteTx) error {
			for i := range 8 {
				if err := w.PutRecord(contact(fmt.Sprintf("g%d", i), "l-1", fmt.Sprintf("u-%d", seq))); err != nil {
					return err
				}
			}
			for i := range 200 { // ~2 KiB each with their reverse index: the file grows
				if err := w.PutRecord(contact(fmt.Sprintf("%s-%d-%d", long, seq, i), "l-1", long)); err != nil {
					return err
				}
			}
			return w.SetAppliedSeq(seq)
		})
		progress <- fmt.Sprintf("batch %d", seq)
	}
	grown := size()
	if err := ix.ReplaceAll(41, func(l *Loader) error {
		for i := range 8 {
			if err := l.PutRecord(contact(fmt.Sprintf("g%d", i), "l-1", "u-41")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	progress <- "snapshot"
	time.Sleep(10 * time.Millisecond) // Views of the new file (not timed: any number will do)
	progress <- "Views of the snapshot"
	close(stop)
	wg.Wait()
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if p := bad.Load(); p != nil {
		t.Fatalf("a View: %s", *p)
	}
	merges, _ := ix.MergeStats()
	t.Logf("file %d KiB, then %d KiB; %d merges; %d Views", start>>10, grown>>10, merges, views.Load())
	if grown < 64*start || merges < 10 || views.Load() == 0 {
		t.Fatalf("file %d KiB, then %d KiB; %d merges; %d Views: want it grown 64 times (re-mapped several times), 10 merges, Views beside",
			start>>10, grown>>10, merges, views.Load())
	}
}

// watchdog panics with every goroutine's stack when nothing comes on progress for d before
// finished is closed (a deadlock: the test cannot end otherwise).
func watchdog(progress <-chan string, finished <-chan struct{}, d time.Duration) {
	last := "start"
	for {
		select {
		case <-finished:
			return
		case last = <-progress:
		case <-time.After(d):
			buf := make([]byte, 1<<22)
			n := runtime.Stack(buf, true)
			panic(fmt.Sprintf("no progress for %s after %q: deadlock\n%s", d, last, buf[:n]))
		}
	}
}

// TestViewAllocations: a decision's View of a state other Views read already (the applied seq, a
// cached user, a record) allocates nothing: no bbolt transaction, no bucket opened, no cursor
// stack (the cursors are kept across the Views of the state). Before the shared transaction it
// was 8 (the Tx, its meta copy and root bucket; the records bucket; the cursor's stack growing a
// level at a time); with the shared transaction alone, 3 (the stack).
func TestViewAllocations(t *testing.T) {
	if raceBuild {
		t.Skip("the race detector changes allocation counts")
	}
	ix := openTest(t, Config{})
	if err := ix.ReplaceAll(1, benchRows(100, 20_000, 1)); err != nil {
		t.Fatal(err)
	}
	var (
		recs []Record
		uid  string
	)
	mustView(t, ix, func(rt *ReadTx) error {
		if err := rt.ForEachUser(func(u User) error { uid = u.ID; return nil }); err != nil {
			return err
		}
		return rt.ForEachRecord(func(r Record) error {
			if len(recs) < 64 {
				recs = append(recs, r)
			}
			return nil
		})
	})
	i := 0
	read := func(rt *ReadTx) error {
		i++
		_ = rt.AppliedSeq()
		if u, err := rt.UserJSON(uid); err != nil || u == nil {
			return fmt.Errorf("user %s: %q %v", uid, u, err)
		}
		r := recs[i%len(recs)]
		if v, err := rt.RecordJSON(r.Type, r.ID); err != nil || v == nil {
			return fmt.Errorf("record %s %s: %q %v", r.Type, r.ID, v, err)
		}
		return nil
	}
	mustView(t, ix, read)
	const want = 0
	n := testing.AllocsPerRun(200, func() { mustView(t, ix, read) })
	t.Logf("%.1f allocations a View", n)
	if n > want {
		t.Fatalf("%.1f allocations a View, want at most %d", n, want)
	}
}
