//go:build unix

package index

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes an flock on f without waiting: exclusive or shared. ok is false when another
// open file description holds a conflicting lock (also one of this process: flock locks belong
// to the open file description).
func tryLock(f *os.File, exclusive bool) (ok bool, err error) {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err = syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}
