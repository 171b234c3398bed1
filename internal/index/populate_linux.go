//go:build linux

package index

import "golang.org/x/sys/unix"

// populateRead maps n bytes from addr (inside bbolt's mapping of the file) into the page tables
// (madvise MADV_POPULATE_READ: a read fault on every page, without reading them in Go).
func populateRead(addr, n uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, addr, n, unix.MADV_POPULATE_READ); errno != 0 {
		return errno
	}
	return nil
}
