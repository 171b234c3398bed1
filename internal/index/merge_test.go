package index

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
)

var errCrash = errors.New("crash")

// forceMerge merges ix's overlay now, as an Update crossing Config.MergeBytes does. With
// stopAfter >= 0 the merge stops after that chunk's commit, as a crash would (a merge of fewer
// chunks completes).
func forceMerge(tb testing.TB, ix *Index, stopAfter int) {
	tb.Helper()
	ix.wmu.Lock() // the hook is read under wmu by Updates that start merges
	defer ix.wmu.Unlock()
	if stopAfter >= 0 {
		ix.hooks.mergeCommitted = func(chunk int, last bool) error {
			if chunk == stopAfter && !last {
				return errCrash
			}
			return nil
		}
		defer func() { ix.hooks.mergeCommitted = nil }()
	}
	if err := ix.merge(ix.cur); err != nil && !errors.Is(err, errCrash) {
		tb.Fatalf("merge: %v", err)
	}
}

// reopen closes ix and opens its directory again, with ix's bbolt settings (the overlay is
// rebuilt from the delta log).
func reopen(tb testing.TB, ix *Index, cfg Config) *Index {
	tb.Helper()
	if err := ix.Close(); err != nil {
		tb.Fatalf("Close: %v", err)
	}
	nix, err := openTuned(cfg, ix.tune)
	if err != nil {
		tb.Fatalf("reopen: %v", err)
	}
	tb.Cleanup(func() { _ = nix.Close() })
	return nix
}

// readOwnerAndSeq reads applied_seq and the owner of contact c-1 in one View.
func readOwnerAndSeq(tb testing.TB, ix *Index) (seq uint64, owner string, refs []string) {
	tb.Helper()
	mustView(tb, ix, func(rt *ReadTx) error {
		seq = rt.AppliedSeq()
		r, ok, err := rt.Record(TypeContact, "c-1")
		if err != nil || !ok {
			return fmt.Errorf("record c-1: %v %v", ok, err)
		}
		owner = r.Owner
		for _, u := range []string{"u-a", "u-b"} {
			ids, _, err := rt.SubjectRecords(u, TypeContact, "l-1", "", 10)
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				refs = append(refs, u)
			}
		}
		return nil
	})
	return seq, owner, refs
}

// setupRace returns an index whose main buckets hold contact c-1 owned by u-a at seq 1, with an
// empty overlay, and a batch that makes u-b its owner at seq 2.
func setupRace(t testing.TB) (*Index, func()) {
	tune := defaultTuning()
	tune.initialMmapSize = 64 << 20 // a reader held across a merge must not block its commits
	ix, err := openTuned(Config{Dir: t.TempDir()}, tune)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ix.Close() })
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutRecord(contact("c-1", "l-1", "u-a")); err != nil {
			return err
		}
		return w.SetAppliedSeq(1)
	})
	forceMerge(t, ix, -1)
	batch := func() {
		mustUpdate(t, ix, func(w *WriteTx) error {
			if err := w.SetOwner(TypeContact, "c-1", "u-b"); err != nil {
				return err
			}
			return w.SetAppliedSeq(2)
		})
	}
	return ix, batch
}

// checkConsistent fails unless (seq, owner, refs) is the state at seq 1 or at seq 2, whole.
func checkConsistent(t testing.TB, seq uint64, owner string, refs []string) {
	t.Helper()
	ok := seq == 1 && owner == "u-a" && fmt.Sprint(refs) == "[u-a]" ||
		seq == 2 && owner == "u-b" && fmt.Sprint(refs) == "[u-b]"
	if !ok {
		t.Fatalf("a reader saw applied_seq %d with owner %q and reverse index entries of %v: a mix of two states", seq, owner, refs)
	}
}

// TestViewMergeRace: a reader that loaded the overlay state before a batch and a merge, and
// began its read transaction after the merge's commits, must not pair the old state (applied_seq
// 1) with the main buckets the merge wrote (owner u-b). The test pauses the reader between the two
// steps (hooks.viewLoaded), deterministically.
func TestViewMergeRace(t *testing.T) {
	for _, stopAfter := range []int{0, -1} { // the merge paused after its first commit; or done
		t.Run(fmt.Sprint("stop after chunk ", stopAfter), func(t *testing.T) {
			ix, batch := setupRace(t)
			ix.mergeChunk = 1
			loaded, resume := make(chan struct{}), make(chan struct{})
			var once sync.Once
			ix.hooks.viewLoaded = func() {
				once.Do(func() {
					close(loaded)
					<-resume
				})
			}
			type result struct {
				seq   uint64
				owner string
				refs  []string
			}
			done := make(chan result)
			go func() {
				seq, owner, refs := readOwnerAndSeq(t, ix)
				done <- result{seq, owner, refs}
			}()
			<-loaded // the reader holds the state of seq 1
			ix.hooks.viewLoaded = nil
			batch()
			forceMerge(t, ix, stopAfter) // its commits write owner u-b into the main buckets
			close(resume)
			r := <-done
			checkConsistent(t, r.seq, r.owner, r.refs)
			seq, owner, refs := readOwnerAndSeq(t, ix)
			if seq != 2 || owner != "u-b" {
				t.Fatalf("after the merge: seq %d owner %q refs %v", seq, owner, refs)
			}
		})
	}
}

// TestViewDuringMerge: a reader whose read transaction began before a merge (main buckets: owner
// u-a) and reads after the merge emptied the overlay still sees the batch it began with (owner
// u-b, from the overlay layer it holds), never the pre-merge main buckets alone.
func TestViewDuringMerge(t *testing.T) {
	ix, batch := setupRace(t)
	batch()
	ix.mergeChunk = 1
	inView, resume := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		done <- ix.View(func(rt *ReadTx) error {
			close(inView)
			<-resume
			r, ok, err := rt.Record(TypeContact, "c-1")
			if err != nil || !ok {
				return fmt.Errorf("record c-1: %v %v", ok, err)
			}
			ids, _, err := rt.SubjectRecords("u-b", TypeContact, "l-1", "", 10)
			if err != nil {
				return err
			}
			if seq := rt.AppliedSeq(); seq != 2 || r.Owner != "u-b" || len(ids) != 1 {
				return fmt.Errorf("seq %d, owner %q, u-b's records %q: want seq 2, owner u-b, [c-1]", seq, r.Owner, ids)
			}
			return nil
		})
	}()
	<-inView
	forceMerge(t, ix, -1)
	if st := ix.cur.ov.Load(); st.lay.n.Load() != 0 || st.frz != nil {
		t.Fatalf("after the merge the overlay holds %d versions and frozen layer %p", st.lay.n.Load(), st.frz)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestBackupSeqFromDeltaLog: Backup reports the applied_seq of the file it copies, found in the
// delta log (the last entry that sets it, here not the last entry), or in the main buckets after
// a merge emptied the log.
func TestBackupSeqFromDeltaLog(t *testing.T) {
	ix := openTest(t, Config{})
	backupSeq := func() uint64 {
		t.Helper()
		var seq uint64
		if _, err := ix.Backup(io.Discard, func(s uint64, _ int64) error { seq = s; return nil }); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	mustUpdate(t, ix, func(w *WriteTx) error { return w.SetAppliedSeq(5) })
	mustUpdate(t, ix, func(w *WriteTx) error { return w.PutUser(user("u-1", "l-1")) }) // no seq
	if got := backupSeq(); got != 5 {
		t.Fatalf("backup seq %d with the delta log, want 5", got)
	}
	forceMerge(t, ix, -1)
	if got := backupSeq(); got != 5 {
		t.Fatalf("backup seq %d after a merge, want 5", got)
	}
	mustUpdate(t, ix, func(w *WriteTx) error { return w.SetAppliedSeq(9) })
	if got := backupSeq(); got != 9 {
		t.Fatalf("backup seq %d, want 9", got)
	}
}
