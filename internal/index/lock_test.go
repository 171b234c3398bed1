package index

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// fdsInto counts this process's open file descriptors on files in dir.
func fdsInto(tb testing.TB, dir string) int {
	tb.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

// TestSecondOpenerNeverGetsAReplacedFile is issue 15 item 2: process B opens the data directory
// of a running process A and waits for its lock; meanwhile A swaps in a snapshot (renaming a new
// file over index.db), writes on, and exits. B must then open the current index.db and see all of
// A's writes. Before the fix B waited for bbolt's lock on the old index.db, got it when A closed
// that file at the swap, and served (and acknowledged writes into) a deleted file at A's old
// applied_seq. flock locks belong to the open file description, so two Opens in one process
// behave as two processes.
func TestSecondOpenerNeverGetsAReplacedFile(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("watches /proc/self/fd")
	}
	dir := t.TempDir()
	a, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, a, func(w *WriteTx) error { return w.SetAppliedSeq(1) })

	type opened struct {
		ix  *Index
		err error
	}
	base := fdsInto(t, dir)
	bDone := make(chan opened, 1)
	go func() {
		ix, err := Open(Config{Dir: dir, Timeout: 5 * time.Minute})
		bDone <- opened{ix, err}
	}()
	// Wait until B has a file of the directory open: it is waiting for its lock.
	for fdsInto(t, dir) <= base {
		select {
		case b := <-bDone:
			t.Fatalf("B opened beside a live A: %v", b.err)
		default:
			time.Sleep(2 * time.Millisecond)
		}
	}

	if err := a.ReplaceAll(10, snapshotRows(10, 5)); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, a, func(w *WriteTx) error {
		if err := w.PutUser(user("u-late", "l-1")); err != nil {
			return err
		}
		return w.SetAppliedSeq(11)
	})
	select {
	case b := <-bDone:
		if b.err == nil {
			defer b.ix.Close()
		}
		t.Fatalf("B opened while A still runs, at applied_seq %d (err %v)", seqOf(b.ix), b.err)
	default:
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	b := <-bDone
	if b.err != nil {
		t.Fatalf("B after A exited: %v", b.err)
	}
	if got := b.ix.AppliedSeq(); got != 11 {
		t.Errorf("B opened at applied_seq %d, want A's last, 11", got)
	}
	if u, ok := getUser(t, b.ix, "u-late"); !ok {
		t.Errorf("B does not see A's last write: %+v", u)
	}
	// What B acknowledges is in the live file.
	mustUpdate(t, b.ix, func(w *WriteTx) error { return w.SetAppliedSeq(12) })
	if err := b.ix.Close(); err != nil {
		t.Fatal(err)
	}
	c := openTest(t, Config{Dir: dir})
	if got := c.AppliedSeq(); got != 12 {
		t.Errorf("after B: applied_seq %d on disk, want B's acknowledged 12", got)
	}
}

func seqOf(ix *Index) any {
	if ix == nil {
		return "-"
	}
	return ix.AppliedSeq()
}

func getUser(tb testing.TB, ix *Index, id string) (User, bool) {
	tb.Helper()
	var (
		u  User
		ok bool
	)
	mustView(tb, ix, func(t *ReadTx) error {
		var err error
		u, ok, err = t.User(id)
		return err
	})
	return u, ok
}

// TestLockConflicts: a second opener that cannot get the lock file in time gets an error naming
// the lock file and the holder's pid, wrapping bbolt's ErrTimeout (crmauthz eval looks for
// "timeout"); read-only opens share the lock with each other but not with a writer.
func TestLockConflicts(t *testing.T) {
	dir := t.TempDir()
	a := openTest(t, Config{Dir: dir})
	lockPath := filepath.Join(dir, LockFileName)
	for _, ro := range []bool{false, true} {
		t.Run(fmt.Sprint("read-only ", ro), func(t *testing.T) {
			ix, err := Open(Config{Dir: dir, ReadOnly: ro, Timeout: 100 * time.Millisecond})
			if err == nil {
				_ = ix.Close()
				t.Fatal("a second Open beside a read-write one succeeded")
			}
			t.Log(err)
			if !errors.Is(err, berrors.ErrTimeout) || !strings.Contains(err.Error(), lockPath) ||
				!strings.Contains(err.Error(), fmt.Sprint("pid ", os.Getpid())) {
				t.Errorf("error %q, want a timeout naming %s and pid %d", err, lockPath, os.Getpid())
			}
		})
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	r1 := openTest(t, Config{Dir: dir, ReadOnly: true})
	r2 := openTest(t, Config{Dir: dir, ReadOnly: true, Timeout: 100 * time.Millisecond})
	if w, err := Open(Config{Dir: dir, Timeout: 100 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), lockPath) {
		if err == nil {
			_ = w.Close()
		}
		t.Errorf("a writer beside two readers: %v, want a timeout naming %s", err, lockPath)
	}
	_ = r1.Close()
	_ = r2.Close()
	openTest(t, Config{Dir: dir, Timeout: 100 * time.Millisecond})
}

// TestCheckFileNoticesAReplacedFile: Open's second line of defence, against a writer that does
// not take the lock file (an older crmauthz): the file bbolt opened must still be the one at the
// path.
func TestCheckFileNoticesAReplacedFile(t *testing.T) {
	dir := t.TempDir()
	ix := openTest(t, Config{Dir: dir})
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	var file *os.File
	opts := ix.liveOptions()
	opts.ReadOnly = true
	opts.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}
	db, err := bolt.Open(ix.Path(), 0o600, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := ix.checkFile(db, file); err != nil {
		t.Fatalf("the file at the path: %v", err)
	}
	b, err := os.ReadFile(ix.Path())
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "copy")
	if err := os.WriteFile(other, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, ix.Path()); err != nil {
		t.Fatal(err)
	}
	if err := ix.checkFile(db, file); err == nil || !strings.Contains(err.Error(), "was replaced") {
		t.Fatalf("checkFile after a rename over the path: %v", err)
	}
}
