//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package metrics

import "errors"

// diskStats is not implemented here: the free-space gauges are absent.
func diskStats(string) (DiskStats, error) {
	return DiskStats{}, errors.New("statfs: not supported on this platform")
}
