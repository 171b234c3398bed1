package index

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	berrors "go.etcd.io/bbolt/errors"
)

// LockFileName is the lock file inside Config.Dir. Open locks it before it opens index.db and
// holds it until Close: exclusive for a read-write open, shared for a ReadOnly one.
//
// bbolt's own lock is on index.db, and ReplaceAll renames a new file over index.db: a second
// process waiting for bbolt's lock would get it on the replaced (deleted) file once the first
// closed it, and serve and acknowledge writes into a file nobody will read again. The lock file is
// never replaced, so a second process on the same data directory waits for the first to exit
// (Config.Timeout) and then opens the current index.db. See docs/design.md, internal/index.
const LockFileName = "LOCK"

// lockPoll is how often a lock that is held by someone else is tried again (as bbolt does).
const lockPoll = 50 * time.Millisecond

// dirLock is a held lock on Dir/LOCK; the zero value (no file) holds nothing.
type dirLock struct{ f *os.File }

// lockDir takes Dir/LOCK, waiting up to timeout. A read-write lock creates the file and writes
// the process id into it (named in the error of a process that then waits in vain). A read-only
// lock opens the file read-only; where there is none (a data directory no read-write opener of
// this version used) it holds nothing, and bbolt's shared lock on index.db is the only one.
func lockDir(dir string, readOnly bool, timeout time.Duration) (dirLock, error) {
	path := filepath.Join(dir, LockFileName)
	flag := os.O_RDWR | os.O_CREATE
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if readOnly && errors.Is(err, os.ErrNotExist) {
		return dirLock{}, nil
	}
	if err != nil {
		return dirLock{}, fmt.Errorf("index: open lock file: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		ok, err := tryLock(f, !readOnly)
		if err != nil {
			_ = f.Close()
			return dirLock{}, fmt.Errorf("index: lock %s: %w", path, err)
		}
		if ok {
			break
		}
		if !time.Now().Before(deadline) {
			_ = f.Close()
			holder := ""
			if b, err := os.ReadFile(path); err == nil && len(b) > 0 && len(b) < 64 {
				holder = fmt.Sprintf("; its last read-write holder was %s", strings.TrimSpace(string(b)))
			}
			return dirLock{}, fmt.Errorf("index: lock %s: %w after %s: another process holds it "+
				"(a crmauthz serve on the same --data-dir, or crmauthz eval, which holds it shared%s)",
				path, berrors.ErrTimeout, timeout, holder)
		}
		time.Sleep(min(lockPoll, time.Until(deadline)))
	}
	if !readOnly {
		// Best effort, for the message above; the lock is the flock, not the content.
		pid := "pid " + strconv.Itoa(os.Getpid()) + "\n"
		if err := f.Truncate(0); err == nil {
			_, _ = f.WriteAt([]byte(pid), 0)
		}
	}
	return dirLock{f: f}, nil
}

// release lets the lock go (closing the file drops the flock).
func (l dirLock) release() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
