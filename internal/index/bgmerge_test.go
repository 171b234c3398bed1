package index

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startBackgroundMerge freezes ix's active layer and merges it in the background, as an Update
// crossing Config.MergeBytes does, chunk keys per commit, with hook (may be nil) after each commit.
func startBackgroundMerge(tb testing.TB, ix *Index, chunk int, hook func(chunk int, last bool) error) {
	tb.Helper()
	ix.wmu.Lock()
	defer ix.wmu.Unlock()
	ix.mergeChunk = chunk
	_ = ix.waitMerge(false) // a frozen layer left by a stopped merge: merged first, without hook
	if fr := ix.cur.ov.Load().frz; fr != nil {
		if err := ix.mergeTimed(ix.cur, fr, ix.newMergeRun(nil)); err != nil {
			tb.Fatalf("merge the frozen layer left over: %v", err)
		}
	}
	ix.hooks.mergeCommitted = hook
	defer func() { ix.hooks.mergeCommitted = nil }()
	if err := ix.startMerge(ix.cur); err != nil {
		tb.Fatalf("startMerge: %v", err)
	}
}

// waitBackgroundMerge waits for ix's background merge and returns its error.
func waitBackgroundMerge(ix *Index) error {
	ix.wmu.Lock()
	defer ix.wmu.Unlock()
	return ix.waitMerge(false)
}

// pauseAfterFirst returns a merge hook that blocks after the first commit of the first merge it
// sees until resume is called, closing paused when it blocks; calls counts its calls. A failing
// test resumes it at cleanup (registered after the index's Close, so it runs first).
func pauseAfterFirst(tb testing.TB, calls *atomic.Int64) (hook func(int, bool) error, paused chan struct{}, resume func()) {
	paused, ch := make(chan struct{}), make(chan struct{})
	var once sync.Once
	resume = func() { once.Do(func() { close(ch) }) }
	tb.Cleanup(resume)
	hook = func(chunk int, last bool) error {
		if calls.Add(1) == 1 {
			close(paused)
			<-ch
		}
		return nil
	}
	return hook, paused, resume
}

// readOwner reads applied_seq, the owner of c-1 and the users whose reverse index lists it.
func readOwner(tb testing.TB, ix *Index) string {
	tb.Helper()
	var out string
	mustView(tb, ix, func(rt *ReadTx) error {
		r, ok, err := rt.Record(TypeContact, "c-1")
		if err != nil || !ok {
			return fmt.Errorf("record c-1: %v %v", ok, err)
		}
		var refs []string
		for _, u := range []string{"u-a", "u-b", "u-c"} {
			ids, _, err := rt.SubjectRecords(u, TypeContact, "l-1", "", 10)
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				refs = append(refs, u)
			}
		}
		out = fmt.Sprintf("seq %d owner %s refs %v", rt.AppliedSeq(), r.Owner, refs)
		return nil
	})
	return out
}

func setOwnerBatch(tb testing.TB, ix *Index, owner string, seq uint64) {
	tb.Helper()
	mustUpdate(tb, ix, func(w *WriteTx) error {
		if err := w.SetOwner(TypeContact, "c-1", owner); err != nil {
			return err
		}
		return w.SetAppliedSeq(seq)
	})
}

// pausedMerge returns setupRace's index after its batch (seq 2, owner u-b), with that layer
// being merged in the background, paused after its first commit until resume is called.
func pausedMerge(t testing.TB) (ix *Index, resume func()) {
	ix, batch := setupRace(t)
	batch()
	var calls atomic.Int64
	hook, paused, resume := pauseAfterFirst(t, &calls)
	startBackgroundMerge(t, ix, 1, hook)
	<-paused
	return ix, resume
}

// TestBatchDuringMerge: with a background merge paused after its first commit (the main buckets
// half merged), a batch commits and returns without waiting for the merge, and readers see each
// state whole: during the merge, after it, and after a reopen (the delta log keeps the batch's
// entry when the merge's last commit drops the frozen layer's).
func TestBatchDuringMerge(t *testing.T) {
	ix, resume := pausedMerge(t) // seq 2, owner u-b: the layer being merged
	if st := ix.cur.ov.Load(); st.frz == nil || st.lay.n.Load() != 0 {
		t.Fatalf("during the merge: frozen layer %p, active layer of %d versions", st.frz, st.lay.n.Load())
	}
	if got, want := readOwner(t, ix), "seq 2 owner u-b refs [u-b]"; got != want {
		t.Fatalf("mid-merge: %s, want %s", got, want)
	}
	setOwnerBatch(t, ix, "u-c", 3) // returns while the merge is paused: not on the merge's path
	const want3 = "seq 3 owner u-c refs [u-c]"
	if got := readOwner(t, ix); got != want3 {
		t.Fatalf("batch during the merge: %s, want %s", got, want3)
	}
	resume()
	if err := waitBackgroundMerge(ix); err != nil {
		t.Fatal(err)
	}
	if st := ix.cur.ov.Load(); st.frz != nil || st.lay.n.Load() == 0 {
		t.Fatalf("after the merge: frozen layer %p, active layer of %d versions", st.frz, st.lay.n.Load())
	}
	if got := readOwner(t, ix); got != want3 {
		t.Fatalf("after the merge: %s, want %s", got, want3)
	}
	ix = reopen(t, ix, Config{Dir: ix.dir})
	if got := readOwner(t, ix); got != want3 {
		t.Fatalf("after a reopen: %s, want %s", got, want3)
	}
	if n := ix.cur.ov.Load().lay.n.Load(); n == 0 {
		t.Fatal("after a reopen the overlay is empty: the merge dropped the delta entry of batch 3")
	}
}

// TestViewBackgroundMergeRace: a reader that loaded the overlay state before a merge froze the
// layer, and began its read transaction after the merge's commits and a batch between them,
// still sees one whole state (it must start over: the epoch changed).
func TestViewBackgroundMergeRace(t *testing.T) {
	ix, batch := setupRace(t)
	batch()
	loaded, resumeView := make(chan struct{}), make(chan struct{})
	ix.hooks.viewLoaded = func() {
		close(loaded)
		<-resumeView
	}
	t.Cleanup(func() {
		select {
		case <-resumeView:
		default:
			close(resumeView)
		}
	})
	done := make(chan string)
	go func() { done <- readOwner(t, ix) }()
	<-loaded // the reader holds the state of seq 2, before the freeze
	ix.hooks.viewLoaded = nil
	var calls atomic.Int64
	hook, paused, resumeMerge := pauseAfterFirst(t, &calls)
	startBackgroundMerge(t, ix, 1, hook)
	<-paused
	setOwnerBatch(t, ix, "u-c", 3)
	resumeMerge()
	if err := waitBackgroundMerge(ix); err != nil {
		t.Fatal(err)
	}
	close(resumeView)
	got := <-done
	if got != "seq 2 owner u-b refs [u-b]" && got != "seq 3 owner u-c refs [u-c]" {
		t.Fatalf("a reader saw %s: a mix of two states", got)
	}
}

// TestUpdateWaitsForMerge: back-pressure. When a batch fills the active layer while the merge of
// the frozen one still runs, its Update waits for that merge before it freezes the next layer:
// never more than two layers. The merge is paused; the Update must report that it waits
// (hooks.mergeWaiting) rather than return.
func TestUpdateWaitsForMerge(t *testing.T) {
	ix := openTest(t, Config{MergeBytes: 1}) // every batch fills the active layer
	ix.mergeChunk = 1
	var calls atomic.Int64
	hook, paused, resume := pauseAfterFirst(t, &calls)
	ix.hooks.mergeCommitted = hook
	waiting := make(chan struct{})
	ix.hooks.mergeWaiting = func() { close(waiting) }
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutRecord(contact("c-1", "l-1", "u-a")); err != nil {
			return err
		}
		return w.SetAppliedSeq(1)
	}) // starts a background merge, which pauses
	<-paused
	done := make(chan error)
	go func() {
		done <- ix.Update(func(w *WriteTx) error {
			if err := w.SetOwner(TypeContact, "c-1", "u-b"); err != nil {
				return err
			}
			return w.SetAppliedSeq(2)
		})
	}()
	select {
	case <-waiting:
		ix.hooks.mergeWaiting = nil
	case err := <-done:
		t.Fatalf("Update returned (%v) while the active layer was full and a merge still ran", err)
	}
	resume()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := waitBackgroundMerge(ix); err != nil {
		t.Fatal(err)
	}
	if got, want := readOwner(t, ix), "seq 2 owner u-b refs [u-b]"; got != want {
		t.Fatalf("after both merges: %s, want %s", got, want)
	}
	if st := ix.cur.ov.Load(); st.frz != nil || st.lay.n.Load() != 0 {
		t.Fatalf("after both merges: frozen layer %p, active layer of %d versions", st.frz, st.lay.n.Load())
	}
}

// TestCloseStopsMerge: Close stops a background merge after its current commit and returns nil;
// the reopened index has every batch (the delta log kept the frozen layer's entries).
func TestCloseStopsMerge(t *testing.T) {
	ix, batch := setupRace(t)
	batch()
	var calls atomic.Int64
	hook, paused, resume := pauseAfterFirst(t, &calls)
	startBackgroundMerge(t, ix, 1, hook)
	<-paused
	waiting := make(chan struct{})
	ix.hooks.mergeWaiting = func() { close(waiting) }
	closed := make(chan error)
	go func() { closed <- ix.Close() }()
	<-waiting // Close asked the merge to stop
	resume()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the merge made %d commits after Close asked it to stop, want 0", n-1)
	}
	nix, err := Open(Config{Dir: ix.dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nix.Close() })
	if got, want := readOwner(t, nix), "seq 2 owner u-b refs [u-b]"; got != want {
		t.Fatalf("after Close mid-merge and Open: %s, want %s", got, want)
	}
}

// TestReadFrozenLayerAfterLastChunk: a reader that holds the frozen layer and whose transaction
// contains the merge's last chunk commit reads the layer's values from the delta log (its
// entries are deleted only by a commit after the layer's drop) and sees the batch's state whole;
// after the merge the delta log is empty.
func TestReadFrozenLayerAfterLastChunk(t *testing.T) {
	ix, batch := setupRace(t)
	batch() // seq 2, owner u-b: the layer to merge
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(resume) }) })
	startBackgroundMerge(t, ix, 1, func(chunk int, last bool) error {
		if last {
			close(paused)
			<-resume
		}
		return nil
	})
	<-paused // every chunk committed; the frozen layer not dropped yet
	if st := ix.cur.ov.Load(); st.frz == nil {
		t.Fatal("the frozen layer was dropped before the merge's hook returned")
	}
	if got, want := readOwner(t, ix), "seq 2 owner u-b refs [u-b]"; got != want {
		t.Fatalf("after the last chunk commit: %s, want %s", got, want)
	}
	once.Do(func() { close(resume) })
	if err := waitBackgroundMerge(ix); err != nil {
		t.Fatal(err)
	}
	if got, want := readOwner(t, ix), "seq 2 owner u-b refs [u-b]"; got != want {
		t.Fatalf("after the merge: %s, want %s", got, want)
	}
	mustView(t, ix, func(rt *ReadTx) error {
		if k, _ := rt.tx.Bucket(bucketDelta).Cursor().First(); k != nil {
			t.Errorf("the delta log still holds entry %x after the merge", k)
		}
		return nil
	})
}

// TestUpdateBackgroundMergeRace: a batch runs its callback in a read transaction (Update). One
// that loaded the overlay state while a merge held the frozen layer, and began its transaction
// after the merge dropped the layer and deleted its delta entries, must start over (the epoch
// changed): else it reads the dropped layer's versions without their delta entries (ErrDamaged)
// or pairs it with the merged main buckets. The test pauses the batch between the two steps
// (hooks.viewLoaded), deterministically.
func TestUpdateBackgroundMergeRace(t *testing.T) {
	ix, resume := pausedMerge(t) // seq 2, owner u-b: the layer being merged
	bg := ix.bg                  // set under wmu by startBackgroundMerge, in this goroutine
	var once sync.Once
	ix.hooks.viewLoaded = func() {
		once.Do(func() { // the batch holds the state with the frozen layer
			resume()
			<-bg.done // the layer dropped, its delta entries deleted
		})
	}
	setOwnerBatch(t, ix, "u-c", 3)
	ix.hooks.viewLoaded = nil
	if bg.err != nil {
		t.Fatal(bg.err)
	}
	const want = "seq 3 owner u-c refs [u-c]"
	if got := readOwner(t, ix); got != want {
		t.Fatalf("after the batch: %s, want %s", got, want)
	}
	if err := waitBackgroundMerge(ix); err != nil {
		t.Fatal(err)
	}
	ix = reopen(t, ix, Config{Dir: ix.dir})
	if got := readOwner(t, ix); got != want {
		t.Fatalf("after a reopen: %s, want %s", got, want)
	}
}

// TestMergeYieldsToBatch: a background merge does not begin a commit while an Update runs its
// callback (outside bbolt's writer lock): it waits for the Update's commit, so the batch never
// waits for a chunk begun meanwhile. Then it goes on, and the batch and the merge both land.
func TestMergeYieldsToBatch(t *testing.T) { batchBesideMerge(t, false) }

// TestMergeCatchesUp: a background merge that lags the active layer's filling (the active
// layer's share of MergeBytes is larger than the share of its keys the merge has written) does
// not yield to a running batch: it commits its next chunk while the batch's callback runs (the
// batch's commit then waits for that chunk), so it ends before the active layer is full instead
// of making the batch that fills it wait for the rest of the merge. Both land.
func TestMergeCatchesUp(t *testing.T) { batchBesideMerge(t, true) }

// batchBesideMerge runs a batch while a background merge, one key per commit, is between its
// first and second commits, and checks that the merge yields to the batch (behind false) or, when
// it lags the active layer (behind: MergeBytes so small that an empty active layer is full),
// commits its second chunk while the batch's callback runs; then that both land.
func batchBesideMerge(t testing.TB, behind bool) {
	ix, batch := setupRace(t)
	batch() // seq 2, owner u-b: the layer to merge
	ix.yieldMax = time.Hour
	if behind {
		ix.mergeBytes = layerOverhead
	}
	var calls atomic.Int64
	hook, paused, resume := pauseAfterFirst(t, &calls)
	second := make(chan struct{}) // closed by the merge's second commit
	var once2 sync.Once
	startBackgroundMerge(t, ix, 1, func(chunk int, last bool) error {
		err := hook(chunk, last)
		if calls.Load() >= 2 {
			once2.Do(func() { close(second) })
		}
		return err
	})
	<-paused
	yielding := make(chan struct{})
	var once sync.Once
	ix.hooks.mergeYielding = func() { once.Do(func() { close(yielding) }) }
	inFn := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- ix.Update(func(w *WriteTx) error {
			close(inFn)
			select {
			case <-yielding: // the merge waits for this batch: it has not begun its next commit
				if behind {
					return fmt.Errorf("the merge, behind the active layer, waited for the batch")
				}
			case <-second:
				if !behind {
					return fmt.Errorf("the merge committed a chunk while the batch ran")
				}
			}
			if err := w.SetOwner(TypeContact, "c-1", "u-c"); err != nil {
				return err
			}
			return w.SetAppliedSeq(3)
		})
	}()
	<-inFn
	resume()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := waitBackgroundMerge(ix); err != nil {
		t.Fatal(err)
	}
	ix.hooks.mergeYielding = nil
	if calls.Load() < 2 {
		t.Fatalf("the merge committed %d chunks, want more than 1", calls.Load())
	}
	const want = "seq 3 owner u-c refs [u-c]"
	if got := readOwner(t, ix); got != want {
		t.Fatalf("after the batch and the merge: %s, want %s", got, want)
	}
}
