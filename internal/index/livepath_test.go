package index

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
)

// TestErrorsAfterSnapshotNameTheLiveFile: a snapshot is built as
// index.db.loading and renamed to index.db with its handle kept open; a
// disk error afterwards must name index.db (the file that exists), not
// index.db.loading. The disk error is a real one: the file may not grow
// past RLIMIT_FSIZE (EFBIG).
func TestErrorsAfterSnapshotNameTheLiveFile(t *testing.T) {
	ix := openTest(t, Config{})
	if err := ix.ReplaceAll(1, func(l *Loader) error { return l.PutUser(user("u-1", "l")) }); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(ix.Path())
	if err != nil {
		t.Fatal(err)
	}

	signal.Ignore(syscall.SIGXFSZ) // a write past the limit fails with EFBIG instead of killing the process
	defer signal.Reset(syscall.SIGXFSZ)
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(fi.Size())
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
	}
	err = ix.Update(func(w *WriteTx) error {
		for i := range 5000 { // several MiB: the file must grow
			if err := w.PutUser(user(fmt.Sprintf("u-%06d-%s", i, strings.Repeat("x", 200)), "l")); err != nil {
				return err
			}
		}
		return w.SetAppliedSeq(2)
	})
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		t.Fatal("the Update grew the file past RLIMIT_FSIZE without an error")
	}
	t.Logf("the error: %v", err)
	if strings.Contains(err.Error(), loadingSuffix) {
		t.Fatalf("the error names the temporary file, which no longer exists: %v", err)
	}
	if !strings.Contains(err.Error(), ix.Path()) {
		t.Fatalf("the error does not name %s: %v", ix.Path(), err)
	}
	if seq := ix.AppliedSeq(); seq != 1 {
		t.Fatalf("applied_seq %d after a failed Update", seq)
	}
}

// TestLiveNameKeepsTheCause: the renamed error still is what it was (the
// server maps ENOSPC to 507 through errors.Is).
func TestLiveNameKeepsTheCause(t *testing.T) {
	ix := openTest(t, Config{})
	cause := &os.PathError{Op: "write", Path: ix.Path() + loadingSuffix, Err: syscall.ENOSPC}
	err := ix.liveName(fmt.Errorf("commit: %w", cause))
	if !errors.Is(err, syscall.ENOSPC) || err.Error() != "commit: write "+ix.Path()+": no space left on device" {
		t.Fatalf("liveName = %v (ENOSPC: %v)", err, errors.Is(err, syscall.ENOSPC))
	}
	other := errors.New("disk on fire")
	if ix.liveName(other) != other || ix.liveName(nil) != nil {
		t.Fatal("liveName changed an error that does not name the temporary file")
	}
}
