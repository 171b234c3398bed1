package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// Two ways to treat the sides more evenly on two shared cores (BENCHMARKS.md,
// "Against the floor"):
//
// --slices N cuts each step of each side into N slices of Duration/N and
// runs them interleaved (crmauthz, floor, crmauthz, floor, …), pooling each
// side's latencies: a hiccup of the machine (the host's steal, another
// process, a page-cache flush) lands on both sides alike instead of on
// whichever ran at that moment, while the figure stays the p99 of all the
// side's requests. Each slice starts with an untimed lead-in
// (--slice-warmup) at the step's own pace, so that the timed part finds
// the server and the generator already at the rate; a new attack starts
// each part, so no request owed by an earlier slice is sent in a burst.
//
// --server-cpus and --generator-cpus pin the servers (through taskset) and
// this tool (the load generator) to separate cores, so that the generator's
// work does not take CPU from the server it measures, nor the server's from
// the generator's clock.

// sliceStride separates the requests of two slices of one step in the
// mix: slice j asks from base + j·sliceStride, its lead-in from half a
// stride further (at most 10 slices within a step's 100,000,000).
const sliceStride = 10_000_000

// slicing is how each step of each side is cut (--slices, --slice-warmup).
type slicing struct {
	n      int           // slices per step and side; 1: the whole step at once
	dur    time.Duration // the timed part of one slice
	pause  time.Duration // before each slice
	settle time.Duration // the most a slice waits for every server to be idle (settle.go)
	leadIn time.Duration // untimed load at the step's pace before each timed part; 0 with n == 1
}

// slicing cuts the run's steps: one part of Duration after Pause with
// --slices 1 (the method before session 9), else Slices parts of
// Duration/Slices, each after its share of the pause (at least 100 ms) and
// a lead-in of SliceWarmup.
func (c *runConfig) slicing() slicing {
	if c.Slices <= 1 {
		return slicing{n: 1, dur: c.Duration, pause: c.Pause, settle: c.Settle}
	}
	n := time.Duration(c.Slices)
	return slicing{n: c.Slices, dur: c.Duration / n, pause: max(c.Pause/n, 100*time.Millisecond), leadIn: c.SliceWarmup, settle: c.Settle}
}

// stepRunner runs one step of every side of a run.
type stepRunner struct {
	sides   [nSides]*side // nil: a side left out
	w       dataset.World
	timeout time.Duration
	record  bool         // keep every request (--requests-out)
	prof    *cpuProfiler // nil: no profile
	cut     slicing
	// step runs one part of a slice, its lead-in or its timed part; nil:
	// runStep. The tests wrap runStep to see what each part was asked
	// (slices_test.go), counts that do not depend on the machine's speed.
	step func(ctx context.Context, s *side, spec stepSpec, w dataset.World, dur, timeout time.Duration, record bool) stepResult
}

// run runs spec on every side present, cut into slices in the order of
// sliceSequence (A B A B …), each slice with fresh requests of the mix (a
// hot set: the same ones). It returns each side's slices in order, and each
// side's evidence summed over its slices.
func (r *stepRunner) run(ctx context.Context, spec stepSpec, order []int) ([nSides][]stepResult, [nSides]stepEvidence, error) {
	var parts [nSides][]stepResult
	var ev [nSides]stepEvidence
	step := r.step
	if step == nil {
		step = runStep
	}
	var present []int
	for _, k := range order {
		if r.sides[k] != nil {
			present = append(present, k)
		}
	}
	for _, k := range sliceSequence(present, r.cut.n) {
		if err := ctx.Err(); err != nil {
			return parts, ev, err
		}
		s := r.sides[k]
		j := len(parts[k]) // this side's slice
		sp := spec
		if sp.hot == 0 {
			sp.base += uint64(j) * sliceStride
		}
		time.Sleep(r.cut.pause)
		waitIdle(ctx, r.serverPIDs(), r.cut.settle)
		if r.cut.leadIn > 0 {
			lead := sp
			if lead.hot == 0 {
				lead.base += sliceStride / 2
			}
			step(ctx, s, lead, r.w, r.cut.leadIn, r.timeout, false)
		}
		before := sampleProc(ctx, s)
		var res stepResult
		began := time.Now()
		if err := r.prof.during(ctx, k == sideCrmauthz, r.cut.dur, func() {
			res = step(ctx, s, sp, r.w, r.cut.dur, r.timeout, r.record)
		}); err != nil {
			return parts, ev, err
		}
		res.began = began
		e := before.to(sampleProc(ctx, s))
		e.conns = res.opened
		if j == 0 {
			ev[k] = e
		} else {
			ev[k] = ev[k].add(e)
		}
		parts[k] = append(parts[k], res)
	}
	return parts, ev, nil
}

// logSlices logs each side's p99 slice by slice: whether a side's pooled
// tail comes from one slice (a stall) or from all of them. Each figure is
// followed by the wall-clock time its slice began (@hh:mm:ss.mmm), to set
// beside a server's own log (a GC trace).
func logSlices(cfg runConfig, run int, step string, parts [nSides][]stepResult) {
	for k := range parts {
		if len(parts[k]) == 0 {
			continue
		}
		p99 := make([]string, len(parts[k]))
		for j, p := range parts[k] {
			p99[j] = fmtDur(p.p99) + p.began.Format("@15:04:05.000")
		}
		cfg.logf("run %d  %-24s %-8s p99 by slice: %s", run, step, parts[k][0].side, strings.Join(p99, " "))
	}
}

// sliceResults pools one side's slices of a step into one result: counts
// and CPU time summed, the latencies pooled, the achieved rate over the
// slices' own time, the peak RSS, the cache hit share weighted by answers.
func sliceResults(parts []stepResult) stepResult {
	if len(parts) == 1 {
		return parts[0]
	}
	res := stepResult{spec: parts[0].spec, side: parts[0].side, cacheHit: -1}
	var span time.Duration
	var hits float64
	hitsKnown := true
	n := 0
	for _, p := range parts {
		n += len(p.lat)
	}
	lat := make([]time.Duration, 0, n)
	for _, p := range parts {
		res.sent += p.sent
		res.ok += p.ok
		res.errs += p.errs
		if res.firstErr == "" {
			res.firstErr = p.firstErr
		}
		res.cpu += p.cpu
		span += p.span
		lat = append(lat, p.lat...)
		if p.rss.RSS > res.rss.RSS {
			res.rss = p.rss
		}
		if p.cacheHit < 0 {
			hitsKnown = false
		}
		hits += p.cacheHit * float64(p.ok)
	}
	if span > 0 {
		res.achieved = float64(res.ok) / span.Seconds()
	}
	res.span = span
	if hitsKnown && res.ok > 0 {
		res.cacheHit = hits / float64(res.ok)
	}
	slices.Sort(lat)
	res.lat = lat
	res.p50, res.p90, res.p99, res.p999 = quantile(lat, 0.50), quantile(lat, 0.90), quantile(lat, 0.99), quantile(lat, 0.999)
	if len(lat) > 0 {
		res.max = lat[len(lat)-1]
	}
	return res
}

// add sums the evidence of two slices of one step.
func (e stepEvidence) add(o stepEvidence) stepEvidence {
	s := stepEvidence{minflt: e.minflt + o.minflt, majflt: e.majflt + o.majflt, runWait: e.runWait + o.runWait,
		genCPU: e.genCPU + o.genCPU, gcCycles: -1, conns: e.conns + o.conns, machine: e.machine.add(o.machine)}
	if e.gcCycles >= 0 && o.gcCycles >= 0 {
		s.gcCycles = e.gcCycles + o.gcCycles
	}
	return s
}

// sliceSequence is the order in which the n slices of each side of a step
// run: the step's order of the sides repeated n times (A B A B …, A B C A B
// C … with three sides), so that no two slices of one side are adjacent and
// an episode of the machine (a second or so of slow scheduling under
// another process, "Session 9: the slow slices under competing load") that
// covers the timed part of one side's slice covers the next or the one
// before of every other side: in any stretch of time the timed slices a
// side gets differ from any other side's by at most one slice. The order
// before session 10 reversed every other slice (A B B A A B …), so an
// episode could cover two slices of one side, a quarter of its requests
// with 8 slices, and none of the other's ("Session 10: the slices' order").
// The step's order still alternates from step to step and run to run
// (run.go), which evens out the half slot by which the first side's slices
// come earlier. With n == 1 (--slices 1) it is the step's order.
func sliceSequence(order []int, n int) []int {
	seq := make([]int, 0, n*len(order))
	for range n {
		seq = append(seq, order...)
	}
	return seq
}

// checkCPUList checks a taskset CPU list ("1", "0,2", "2-3").
func checkCPUList(flag, s string) error {
	if s == "" {
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		for _, n := range strings.SplitN(part, "-", 2) {
			if _, err := strconv.ParseUint(n, 10, 16); err != nil {
				return fmt.Errorf("--%s %q: want a CPU list such as 1 or 0,2 or 2-3", flag, s)
			}
		}
	}
	return nil
}

// pinned returns the command that runs bin with args on cpus (taskset -c),
// or bin and args as they are when cpus is "".
func pinned(cpus, bin string, args []string) (string, []string) {
	if cpus == "" {
		return bin, args
	}
	return "taskset", append([]string{"-c", cpus, bin}, args...)
}

// pinSelf moves every thread of this process (the load generator) to cpus.
func pinSelf(cpus string) error {
	if cpus == "" {
		return nil
	}
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pinning the load generator to CPUs %s: %v: %s", cpus, err, out)
	}
	return nil
}
