package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
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

// memoryOptions are the flags of the memory limit.
type memoryOptions struct {
	limit int64 // --memory-limit
}

func addMemoryFlags(f *pflag.FlagSet, o *memoryOptions) {
	f.Int64Var(&o.limit, "memory-limit", 0, "soft memory limit of the Go runtime in bytes; 0: GOMEMLIMIT when set, else 90% of the cgroup's memory limit when there is one, else none")
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
	log.Info("memory limit", "bytes", debug.SetMemoryLimit(-1), "source", source)
	return nil
}
