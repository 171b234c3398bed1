package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// The machine's share of a step (BENCHMARKS.md, "The machine's stalls"):
// the cores here are virtual, so a step's tail can come from outside both
// servers. Two counters of /proc/stat's first line, summed over the cores:
// steal, the time the hypervisor ran something else while a core wanted to
// run (proc(5)), and nice, the user time of niced processes (other work on
// the machine; neither server nor the load generator is niced). The
// machine's busy time less the servers' and the generator's own was tried
// as "the rest of the machine's CPU" and left out: it came out 0.1–0.7 s
// below zero per 4 s step, steal or not (BENCHMARKS.md, same section).

// clockTick is the unit of /proc/stat: USER_HZ, 100 on every Linux
// architecture this tool builds for (sysconf(_SC_CLK_TCK)).
const clockTick = 10 * time.Millisecond

// machineTimes is /proc/stat's counters at one moment (a sample), or what
// the machine did between two (a step's delta); ok is false when they could
// not be read (the step's machine figures are then unknown).
type machineTimes struct {
	steal, nice time.Duration
	ok          bool
}

func readMachine() (machineTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineTimes{}, err
	}
	return parseProcStat(b)
}

// parseProcStat reads the aggregate "cpu " line: user nice system idle
// iowait irq softirq steal ... in clock ticks.
func parseProcStat(b []byte) (machineTimes, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 || string(f[0]) != "cpu" {
			continue
		}
		if len(f) < 9 {
			return machineTimes{}, fmt.Errorf("/proc/stat: cpu line has %d fields, want at least 9", len(f))
		}
		var v [8]int64
		for i := range v {
			n, err := strconv.ParseInt(string(f[i+1]), 10, 64)
			if err != nil {
				return machineTimes{}, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
			}
			v[i] = n
		}
		return machineTimes{steal: time.Duration(v[7]) * clockTick, nice: time.Duration(v[1]) * clockTick, ok: true}, nil
	}
	return machineTimes{}, fmt.Errorf("/proc/stat: no cpu line")
}

func (a machineTimes) to(b machineTimes) machineTimes {
	if !a.ok || !b.ok {
		return machineTimes{}
	}
	return machineTimes{steal: b.steal - a.steal, nice: b.nice - a.nice, ok: true}
}

func (d machineTimes) add(o machineTimes) machineTimes {
	if !d.ok || !o.ok {
		return machineTimes{}
	}
	return machineTimes{steal: d.steal + o.steal, nice: d.nice + o.nice, ok: true}
}

// machineFigure is a duration as a float for the tables, -1 when unknown.
func machineFigure(ok bool, d time.Duration) float64 {
	if !ok {
		return -1
	}
	return float64(d)
}

// fmtMachine prints a machine figure in milliseconds per step; "-" when
// unknown (a negative median: some run could not read /proc/stat).
func fmtMachine(v float64) string {
	if v == -1 {
		return "-"
	}
	return fmt.Sprintf("%.0fms", v/float64(time.Millisecond))
}

// fixedRateRuns is one row per run of every fixed-rate step: crmauthz's and
// the floor's p99, their ratio, and the steal and the rest of the machine's
// CPU during each side's step, so that a run far above the median can be
// told apart: a stall of the machine during one side's step, or crmauthz's
// own. Nil without a floor or with a single run.
func fixedRateRuns(rep *report) *table {
	if rep.cfg.Runs < 2 {
		return nil
	}
	var t table
	t.row("step", "run", "crmauthz p99", "floor p99", "crmauthz/floor", "crmauthz steal", "crmauthz niced", "floor steal", "floor niced")
	rows := 0
	for i, runs := range rep.steps {
		if len(runs) == 0 || i >= len(rep.evidence) || runs[0][sideFloor].side == "" || runs[0][sideCrmauthz].spec.rate <= 0 {
			continue
		}
		for j, p := range runs {
			if j >= len(rep.evidence[i]) {
				break
			}
			e := rep.evidence[i][j]
			c, f := p[sideCrmauthz], p[sideFloor]
			t.row(c.spec.name, fmt.Sprint(j+1), fmtDur(c.p99), fmtDur(f.p99), fmtRatio(ratioOf(float64(c.p99), float64(f.p99))),
				fmtMachine(machineFigure(e[sideCrmauthz].machine.ok, e[sideCrmauthz].machine.steal)),
				fmtMachine(machineFigure(e[sideCrmauthz].machine.ok, e[sideCrmauthz].machine.nice)),
				fmtMachine(machineFigure(e[sideFloor].machine.ok, e[sideFloor].machine.steal)),
				fmtMachine(machineFigure(e[sideFloor].machine.ok, e[sideFloor].machine.nice)))
			rows++
		}
	}
	if rows == 0 {
		return nil
	}
	return &t
}
