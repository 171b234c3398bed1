package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/spf13/pflag"
)

// Adaptive GOMAXPROCS (--adaptive-procs; docs/operations.md "Bounds",
// BENCHMARKS.md "Session 12: the decision's CPU outside the evaluation").
//
// With more than one P, the Go scheduler wakes an idle P's thread whenever a
// goroutine becomes runnable while that P sleeps: net/http starts a goroutine
// for every request (the background read of the connection, which ends with
// the request) and the netpoller readies goroutines on other threads. At a
// moderate fixed rate the Ps are mostly idle, so nearly every request pays for
// thread wake-ups, spinning threads that find nothing, and sysmon's short
// polling — more CPU than the decision itself. With one P none of that
// happens; but under load one P lets a request wait for a core the process
// could have had. The controller samples the process's CPU use and runs one P
// while it uses less than procsDown of a core, all of them (the GOMAXPROCS in
// force at the start) once it uses more than procsUp.

// procsOptions is the flag of the adaptive GOMAXPROCS.
type procsOptions struct {
	adaptive bool // --adaptive-procs
}

func addProcsFlags(f *pflag.FlagSet, o *procsOptions) {
	f.BoolVar(&o.adaptive, "adaptive-procs", false,
		"run the Go scheduler with one P while the process uses under 0.4 of a core, and all of them (GOMAXPROCS) above 0.5: less CPU per request at moderate rates, but a higher p99 (requests queue behind one P)")
}

// The controller's thresholds, in cores used over one sample, and its
// sampling period.
const (
	procsUp     = 0.5
	procsDown   = 0.4
	procsSample = 100 * time.Millisecond
)

// nextProcs is the P count after a sample in which the process used util
// cores, with cur Ps in force and at most max.
func nextProcs(cur, max int, util float64) int {
	switch {
	case max <= 1:
		return max
	case cur < max && util > procsUp:
		return max
	case cur > 1 && util < procsDown:
		return 1
	}
	return cur
}

// procsController applies nextProcs every sample.
type procsController struct {
	max, cur int
	cpu      func() time.Duration // the process's CPU time so far
	set      func(int)            // runtime.GOMAXPROCS
	lastCPU  time.Duration
	lastAt   time.Time
}

// observe takes the sample at now, and sets the P count nextProcs chooses.
func (c *procsController) observe(now time.Time) {
	cpu := c.cpu()
	if cpu < 0 {
		return // unreadable this time: no sample
	}
	if wall := now.Sub(c.lastAt); wall > 0 && !c.lastAt.IsZero() {
		util := float64(cpu-c.lastCPU) / float64(wall)
		if n := nextProcs(c.cur, c.max, util); n != c.cur {
			c.set(n)
			c.cur = n
		}
	}
	c.lastCPU, c.lastAt = cpu, now
}

// runAdaptiveProcs runs the controller on the process's CPU time (cpu) until
// ctx ends, then gives the runtime back its P count. It does nothing where
// the CPU time cannot be read, or with one P.
//
// Going back to all Ps restores the runtime's own setting
// (runtime.SetDefaultGOMAXPROCS), so that it follows the cgroup's CPU limit
// again, as it does until the controller first sets one P; when the
// GOMAXPROCS environment variable was set, its value is restored instead.
func runAdaptiveProcs(ctx context.Context, log *slog.Logger, cpu func() time.Duration) {
	max := runtime.GOMAXPROCS(0)
	if max <= 1 || cpu() < 0 {
		log.Info("adaptive GOMAXPROCS: not applied", "gomaxprocs", max)
		return
	}
	_, fromEnv := os.LookupEnv("GOMAXPROCS")
	restore := func() {
		if fromEnv {
			runtime.GOMAXPROCS(max)
			return
		}
		runtime.SetDefaultGOMAXPROCS()
	}
	c := &procsController{max: max, cur: max, cpu: cpu}
	c.set = func(n int) {
		if n < c.max {
			runtime.GOMAXPROCS(n)
			return
		}
		restore()
	}
	defer func() {
		if c.cur != c.max {
			restore()
		}
	}()
	log.Info("adaptive GOMAXPROCS", "max", max, "up_cores", procsUp, "down_cores", procsDown)
	t := time.NewTicker(procsSample)
	defer t.Stop()
	c.observe(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if c.cur == c.max && !fromEnv {
				// The runtime's own count, which follows the cgroup's limit.
				c.max = runtime.GOMAXPROCS(0)
				c.cur = c.max
			}
			c.observe(now)
		}
	}
}
