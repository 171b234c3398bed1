package index

import (
	"runtime"
	"testing"
	"time"
)

// TestReplaceAllDoesNotWaitForReaders is issue 15 item 8: a View that stays open on the live file
// (a stalled backup download) must not hold up a snapshot swap, nor the writes after it. The View
// keeps reading the old file whole; the old file is closed when it ends. Before the fix
// ReplaceAll closed the old file at once, which waits for every read transaction on it, so a
// stalled reader blocked the swap and every batch behind it.
func TestReplaceAllDoesNotWaitForReaders(t *testing.T) {
	dir := t.TempDir()
	ix := openTest(t, Config{Dir: dir})
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutUser(user("u-old", "l-1")); err != nil {
			return err
		}
		return w.SetAppliedSeq(1)
	})

	inView, release := make(chan struct{}), make(chan struct{})
	viewDone := make(chan error, 1)
	go func() {
		viewDone <- ix.View(func(rt *ReadTx) error {
			close(inView)
			<-release
			// Still the old file, whole.
			if _, ok, err := rt.User("u-old"); !ok || err != nil {
				t.Errorf("the stalled View lost u-old: %v %v", ok, err)
			}
			if _, ok, _ := rt.User("u-new"); ok || rt.AppliedSeq() != 1 {
				t.Errorf("the stalled View sees the new file (seq %d)", rt.AppliedSeq())
			}
			return nil
		})
	}()
	<-inView
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	done := make(chan error, 1)
	go func() {
		if err := ix.ReplaceAll(5, snapshotRows(5, 10)); err != nil {
			done <- err
			return
		}
		done <- ix.Update(func(w *WriteTx) error {
			if err := w.PutUser(user("u-new", "l-1")); err != nil {
				return err
			}
			return w.SetAppliedSeq(6)
		})
	}()
	// Not a bound on speed: a swap that waits for the View never ends, and this says so.
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("ReplaceAll (or the Update after it) waits for a View of the old file")
	}
	if ix.AppliedSeq() != 6 {
		t.Errorf("applied_seq %d, want 6", ix.AppliedSeq())
	}
	if _, ok := getUser(t, ix, "u-new"); !ok {
		t.Error("a new View does not see the write after the swap")
	}
	if _, ok := getUser(t, ix, "u-old"); ok {
		t.Error("a new View sees the old file")
	}

	close(release)
	if err := <-viewDone; err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "linux" {
		// The old file was closed by the View's end: LOCK and the live index.db remain.
		if n := fdsInto(t, dir); n != 2 {
			t.Errorf("%d file descriptors on the data directory after the last View of the old file, want 2", n)
		}
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
}
