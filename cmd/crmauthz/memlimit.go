package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// The soft memory limit of the Go runtime (docs/operations.md "Bounds"):
// near it the garbage collector works harder, so a burst of allocations
// (a policy's, many large bodies at once) is collected before the kernel's
// OOM killer ends the process.

// memoryOptions are the flags of the memory limit and the garbage collector.
type memoryOptions struct {
	limit     int64 // --memory-limit
	gcPercent int   // --gc-percent
}

func addMemoryFlags(f *pflag.FlagSet, o *memoryOptions) {
	f.Int64Var(&o.limit, "memory-limit", 0, "soft memory limit of the Go runtime in bytes; 0: GOMEMLIMIT when set, else 90% of the cgroup's memory limit when there is one, else none")
	f.IntVar(&o.gcPercent, "gc-percent", 0, fmt.Sprintf("heap growth between garbage collections, in percent of the live heap (the runtime's GOGC), %d to %d, or -1 for none (only with a memory limit); 0: GOGC when set, else %d", minGCPercent, maxGCPercent, defaultGCPercent))
}

// The garbage collector's pace (docs/operations.md "Bounds", "Garbage collection").
// The runtime's default, GOGC=100, collects each time the heap doubles; a
// collection's mark phase takes a quarter of the cores (and any idle one)
// for 8–19 ms on a small host, and the slowest percent of decisions at a
// fixed rate often arrived during one. 200 halves the number of collections for a heap
// of three times the live one (the live heap is mostly the decision cache
// when questions repeat, up to 16 MiB; a few MB otherwise), and the soft
// memory limit still makes the collector work harder near the limit. 400
// did not measurably change the tail (BENCHMARKS.md, "Session 6: the
// collector").
const (
	defaultGCPercent = 200
	minGCPercent     = 10
	maxGCPercent     = 10000
)

// gcPercent chooses the collector's percent: the flag, else GOGC (which the
// runtime has applied itself: 0 is returned), else defaultGCPercent.
// memLimit is the soft memory limit in force (math.MaxInt64: none); -1, no
// collection by growth, needs one.
func gcPercent(flag int, gogc string, memLimit int64) (percent int, source string, err error) {
	switch {
	case flag == -1 && (memLimit <= 0 || memLimit == math.MaxInt64):
		return 0, "", fmt.Errorf("--gc-percent -1 (no collection by heap growth) needs a memory limit (--memory-limit, GOMEMLIMIT or a cgroup limit)")
	case flag == -1:
		return -1, "--gc-percent", nil
	case flag != 0 && (flag < minGCPercent || flag > maxGCPercent):
		return 0, "", fmt.Errorf("--gc-percent %d: want %d to %d, or -1", flag, minGCPercent, maxGCPercent)
	case flag != 0:
		return flag, "--gc-percent", nil
	case strings.TrimSpace(gogc) != "":
		return 0, "GOGC", nil
	}
	return defaultGCPercent, "default", nil
}

// cgroupMemoryFiles hold the memory limit of the process's cgroup (v2, v1).
var cgroupMemoryFiles = [...]string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimit chooses the soft memory limit: the flag, else GOMEMLIMIT
// (which the runtime has applied itself: 0 is returned), else 90% of the
// first cgroup limit found in files; 0 for none. source says which.
func memoryLimit(flag int64, gomemlimit string, files []string) (limit int64, source string, err error) {
	switch {
	case flag < 0:
		return 0, "", fmt.Errorf("--memory-limit %d: must not be negative", flag)
	case flag > 0:
		return flag, "--memory-limit", nil
	case strings.TrimSpace(gomemlimit) != "":
		return 0, "GOMEMLIMIT", nil
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, "", fmt.Errorf("reading the cgroup memory limit: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, "none (the cgroup has no memory limit)", nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, "", fmt.Errorf("the cgroup memory limit in %s is %q, not a number of bytes", f, s)
		}
		if n >= 1<<62 { // cgroup v1's "no limit"
			return 0, "none (the cgroup has no memory limit)", nil
		}
		return n / 10 * 9, "90% of " + f, nil
	}
	return 0, "none", nil
}

// applyMemoryLimit sets the runtime's soft memory limit as memoryLimit
// chooses it, and logs the choice.
func applyMemoryLimit(o memoryOptions, log *slog.Logger) error {
	limit, source, err := memoryLimit(o.limit, os.Getenv("GOMEMLIMIT"), cgroupMemoryFiles[:])
	if err != nil {
		return err
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	inForce := debug.SetMemoryLimit(-1)
	log.Info("memory limit", "bytes", inForce, "source", source)
	percent, source, err := gcPercent(o.gcPercent, os.Getenv("GOGC"), inForce)
	if err != nil {
		return err
	}
	if percent == 0 {
		log.Info("garbage collector", "gogc", os.Getenv("GOGC"), "source", source)
		return nil
	}
	debug.SetGCPercent(percent)
	log.Info("garbage collector", "gc_percent", percent, "source", source)
	return nil
}
