//go:build !unix

package coldtest

import (
	"testing"
	"time"
)

// ProcessCPU is not measured here (0): ReportCPU then reports nothing.
func ProcessCPU(testing.TB) time.Duration { return 0 }
