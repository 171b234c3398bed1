package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// The candidates for the tail at a fixed rate (BENCHMARKS.md, "The tail"),
// measured around every step of every side: the server's page faults (the
// memory-mapped index after a restart), the time its threads waited on a
// run queue for a core (the scheduler), crmauthz's garbage collections, and
// the load generator's own CPU time (it shares the cores), and the machine's
// own share: the time the hypervisor took the cores away (steal) and the CPU
// the rest of the machine used (machine.go).

// procSample is a server's counters at one moment.
type procSample struct {
	minflt, majflt int64
	runWait        time.Duration // sum over its threads of the time spent runnable, waiting for a core
	gcCycles       float64       // crmauthz: go_gc_duration_seconds_count; -1 unknown
	genCPU         time.Duration // this tool's CPU time (the load generator)
	machine        machineTimes
}

// stepEvidence is the difference of two samples: what one step cost.
type stepEvidence struct {
	minflt, majflt int64
	runWait        time.Duration
	gcCycles       float64 // -1 unknown
	genCPU         time.Duration
	conns          int // connections the generator opened to the side (runStep)
	machine        machineTimes
}

func sampleProc(ctx context.Context, s *side) procSample {
	p := procSample{gcCycles: -1}
	p.minflt, p.majflt, _ = faults(s.pid)
	p.runWait = runQueueWait(s.pid)
	p.genCPU, _ = cpuTime(os.Getpid())
	p.machine, _ = readMachine()
	if s.metricsURL != "" {
		if v, ok := scrapeMetric(ctx, s.metricsURL, "go_gc_duration_seconds_count"); ok {
			p.gcCycles = v
		}
	}
	return p
}

func (a procSample) to(b procSample) stepEvidence {
	e := stepEvidence{minflt: b.minflt - a.minflt, majflt: b.majflt - a.majflt, runWait: b.runWait - a.runWait,
		genCPU: b.genCPU - a.genCPU, gcCycles: -1, machine: a.machine.to(b.machine)}
	if a.gcCycles >= 0 && b.gcCycles >= 0 {
		e.gcCycles = b.gcCycles - a.gcCycles
	}
	return e
}

// faults are the minor and major page faults of a process, from
// /proc/PID/stat (fields 10 and 12).
func faults(pid int) (minflt, majflt int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')') // the command name (field 2) may hold spaces
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 10 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	minflt, err1 := strconv.ParseInt(f[7], 10, 64)
	majflt, err2 := strconv.ParseInt(f[9], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return minflt, majflt, nil
}

// runQueueWait is the time the threads of a process have spent runnable but
// waiting for a core: the second field of /proc/PID/task/TID/schedstat (ns),
// summed over the threads alive now (schedTimes, sampler.go).
func runQueueWait(pid int) time.Duration {
	_, wait, _ := schedTimes(pid)
	return time.Duration(wait)
}

// scrapeMetric reads one unlabelled sample from a Prometheus text endpoint.
func scrapeMetric(ctx context.Context, url, name string) (float64, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
