package main

import (
	"context"
	"time"
)

// The settle gate before each slice (--settle). A server still working off
// the previous slice's load takes the cores from the next side's slice: in
// session 11's `make bench` (BENCHMARKS.md, "Session 11 (2026-12-07): the
// merged tree at the end of the session"), OPA, overloaded at 5,000/s, went
// on answering its backlog and collecting its 1.7 GB heap after its slice,
// and the crmauthz slice that followed had a p99 of 4.76 ms against
// 0.60–0.93 ms for its seven others. So before each slice the tool waits
// until every server together is idle for one window, at most --settle.

const (
	// settleWindow is the window over which the servers' CPU is read.
	settleWindow = 100 * time.Millisecond
	// idleCPU is the most CPU every server together may use in one
	// settleWindow and still count as idle: one clock tick of /proc/PID/stat
	// (10 ms), a tenth of a core.
	idleCPU = 10 * time.Millisecond
)

// waitIdle waits until the processes pids together used at most idleCPU over
// one settleWindow, or until max has passed, and says how long it waited and
// whether they were idle. A process that is gone counts as idle.
func waitIdle(ctx context.Context, pids []int, max time.Duration) (time.Duration, bool) {
	if max <= 0 || len(pids) == 0 {
		return 0, true
	}
	return waitIdleOf(ctx, func() time.Duration {
		var sum time.Duration
		for _, pid := range pids {
			if d, err := cpuTime(pid); err == nil {
				sum += d
			}
		}
		return sum
	}, max)
}

// waitIdleOf is waitIdle over a reading of the CPU time used so far (the
// tests give one they control: how much CPU a real busy process gets on a
// loaded machine is the machine's). Idle is checked before the bound, so a
// window found idle is idle however late it was read.
func waitIdleOf(ctx context.Context, total func() time.Duration, max time.Duration) (time.Duration, bool) {
	start := time.Now()
	before := total()
	for {
		select {
		case <-ctx.Done():
			return time.Since(start), false
		case <-time.After(settleWindow):
		}
		after := total()
		if after-before <= idleCPU {
			return time.Since(start), true
		}
		if time.Since(start) >= max {
			return time.Since(start), false
		}
		before = after
	}
}

// serverPIDs are the processes of the sides present.
func (r *stepRunner) serverPIDs() []int {
	var pids []int
	for _, s := range r.sides {
		if s != nil && s.pid > 0 {
			pids = append(pids, s.pid)
		}
	}
	return pids
}
