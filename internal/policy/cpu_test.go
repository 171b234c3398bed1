package policy

import (
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/coldtest"
)

// benchCPU measures the CPU time of a benchmark's loop: user and system time
// of the whole process (the garbage collector's workers included), which,
// unlike the elapsed time, hardly depends on how many other processes share
// the cores. report adds it as "cpu-ns/op".
type benchCPU struct{ start time.Duration }

func startCPU(tb testing.TB) benchCPU { return benchCPU{start: coldtest.ProcessCPU(tb)} }

func (c benchCPU) report(b *testing.B) {
	if c.start > 0 && b.N > 0 {
		b.ReportMetric(float64(coldtest.ProcessCPU(b)-c.start)/float64(b.N), "cpu-ns/op")
	}
}
