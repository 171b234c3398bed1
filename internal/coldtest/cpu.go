package coldtest

import "testing"

// ReportCPU reports the process's CPU time per operation ("cpu-ns/op",
// ProcessCPU) from its call to the call of the function it returns; nothing
// where the CPU time is not measured.
func ReportCPU(b *testing.B) func() {
	start := ProcessCPU(b)
	return func() {
		if start > 0 && b.N > 0 {
			b.ReportMetric(float64(ProcessCPU(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}
