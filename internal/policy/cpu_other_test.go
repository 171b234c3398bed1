//go:build !unix

package policy

import (
	"testing"
	"time"
)

// processCPU is not measured here (0): no "cpu-ns/op" is reported.
func processCPU(testing.TB) time.Duration { return 0 }
