//go:build linux || darwin || freebsd || netbsd || openbsd

package metrics

import "syscall"

// diskStats reads the file system holding dir.
func diskStats(dir string) (DiskStats, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return DiskStats{}, err
	}
	bs := uint64(st.Bsize) // int64 or uint32, by platform
	return DiskStats{FreeBytes: uint64(st.Bavail) * bs, SizeBytes: uint64(st.Blocks) * bs}, nil
}
