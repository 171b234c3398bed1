//go:build unix

package coldtest

import (
	"syscall"
	"testing"
	"time"
)

// ProcessCPU is the user and system CPU time of this process so far (the
// garbage collector's workers included): unlike the elapsed time, it hardly
// depends on how many other processes share the cores.
func ProcessCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
