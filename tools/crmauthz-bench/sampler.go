package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// --sample-out: the machine sampled during the load steps, so that the
// slowest requests of --requests-out can be laid over what ran at their
// moment (BENCHMARKS.md, "Session 11: what the slow runs wait for"). Every
// --sample-every (100 ms by default) one row per counter, in long form:
//
//	mono_ns,series,value
//
// mono_ns on CLOCK_MONOTONIC, the clock of --requests-out's mono_ns and of
// the servers' log headers (--server-logs). The counters are cumulative
// (a window's share is the difference of two rows):
//
//   - cpu.FIELD, cpuN.FIELD: /proc/stat's time of the machine and of each
//     core in clock ticks (user nice system idle iowait irq softirq steal);
//   - psi.cpu, psi.memory, psi.io: /proc/pressure/*'s "some" total (µs
//     during which some task waited for a core, memory, I/O), where the
//     kernel has it;
//   - NAME.run_ns, NAME.wait_ns, NAME.threads for each server and the
//     generator (this tool): the time its threads ran, and waited runnable
//     for a core (/proc/PID/task/*/schedstat), and how many threads;
//   - kthread.COMM.run_ns for the kernel's memory threads (kswapd, kdamond,
//     khugepaged, kcompactd): reclaim, DAMON, huge-page collapse and
//     compaction run on the same two cores;
//   - gen.gc_cycles, gen.gc_cpu_ns: the generator's own garbage collections
//     (runtime/metrics) and their CPU.
//
// The first rows (mono_ns 0) are start.NAME (a server's or the generator's
// start on CLOCK_MONOTONIC, the origin of its gctrace "@Ts") and pid.NAME.

// sampledProc is a process the sampler follows.
type sampledProc struct {
	name    string
	pid     int
	started time.Duration // CLOCK_MONOTONIC; 0: unknown
}

// memoryKthreads are the prefixes of the kernel threads sampled.
var memoryKthreads = []string{"kswapd", "kdamond", "khugepaged", "kcompactd"}

// sampler samples until stop.
type sampler struct {
	w        *bufio.Writer
	f        *os.File
	procs    []sampledProc
	kthreads []sampledProc
	metrics  []metrics.Sample
	done     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
	err      error
	taken    atomic.Int64 // samples taken so far (a test waits for some)
}

// startSampler opens path and samples every `every` until stop.
func startSampler(path string, every time.Duration, procs []sampledProc) (*sampler, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	s := &sampler{w: bufio.NewWriterSize(f, 1<<20), f: f, procs: procs, kthreads: findKthreads(memoryKthreads),
		metrics: []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}},
		done:    make(chan struct{})}
	s.w.WriteString("mono_ns,series,value\n")
	for _, p := range append(slices.Clone(procs), s.kthreads...) {
		fmt.Fprintf(s.w, "0,pid.%s,%d\n", p.name, p.pid)
		if p.started > 0 {
			fmt.Fprintf(s.w, "0,start.%s,%d\n", p.name, p.started.Nanoseconds())
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.done:
				s.sample()
				return
			case <-t.C:
			}
		}
	}()
	return s, nil
}

// stop takes a last sample and closes the file; later calls return the
// first's error.
func (s *sampler) stop() error {
	if s == nil {
		return nil
	}
	s.once.Do(func() {
		close(s.done)
		s.wg.Wait()
		if s.err = s.w.Flush(); s.err != nil {
			s.f.Close()
			return
		}
		s.err = s.f.Close()
	})
	return s.err
}

func (s *sampler) sample() {
	defer s.taken.Add(1)
	now := monotonicNow().Nanoseconds()
	row := func(series string, v int64) { fmt.Fprintf(s.w, "%d,%s,%d\n", now, series, v) }
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		for _, c := range parseCPULines(b) {
			row(c.series, c.value)
		}
	}
	for _, r := range []string{"cpu", "memory", "io"} {
		if b, err := os.ReadFile("/proc/pressure/" + r); err == nil {
			if v, ok := parsePressureSome(b); ok {
				row("psi."+r, v)
			}
		}
	}
	for _, p := range s.procs {
		run, wait, n := schedTimes(p.pid)
		row(p.name+".run_ns", run)
		row(p.name+".wait_ns", wait)
		row(p.name+".threads", int64(n))
	}
	for _, k := range s.kthreads {
		run, _, _ := schedTimes(k.pid)
		row("kthread."+k.name+".run_ns", run)
	}
	metrics.Read(s.metrics)
	if v := s.metrics[0].Value; v.Kind() == metrics.KindUint64 {
		row("gen.gc_cycles", int64(v.Uint64()))
	}
	if v := s.metrics[1].Value; v.Kind() == metrics.KindFloat64 {
		row("gen.gc_cpu_ns", int64(v.Float64()*1e9))
	}
}

// cpuCounter is one counter of /proc/stat.
type cpuCounter struct {
	series string
	value  int64
}

// cpuFields are the first eight fields of a cpu line of /proc/stat.
var cpuFields = []string{"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}

// parseCPULines reads every cpu line of /proc/stat ("cpu", "cpu0", …) into
// counters named cpu.user, cpu0.idle, …; a malformed line is left out.
func parseCPULines(b []byte) []cpuCounter {
	var out []cpuCounter
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 1+len(cpuFields) || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		line := make([]cpuCounter, 0, len(cpuFields))
		for i, name := range cpuFields {
			v, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				line = nil
				break
			}
			line = append(line, cpuCounter{f[0] + "." + name, v})
		}
		out = append(out, line...)
	}
	return out
}

// parsePressureSome reads the total (µs) of the "some" line of a
// /proc/pressure file: "some avg10=0.00 avg60=0.00 avg300=0.00 total=123".
func parsePressureSome(b []byte) (int64, bool) {
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "some ")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}

// schedTimes sums over the threads of pid the time they ran and the time
// they waited runnable for a core (ns; /proc/PID/task/TID/schedstat's first
// two fields), and counts the threads.
func schedTimes(pid int) (run, wait int64, threads int) {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		r, err1 := strconv.ParseInt(f[0], 10, 64)
		w, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		run, wait, threads = run+r, wait+w, threads+1
	}
	return run, wait, threads
}

// findKthreads lists the processes whose command name (/proc/PID/comm)
// starts with one of prefixes, named by it.
func findKthreads(prefixes []string) []sampledProc {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	var out []sampledProc
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		comm := strings.TrimSpace(string(b))
		for _, p := range prefixes {
			if strings.HasPrefix(comm, p) {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
				out = append(out, sampledProc{name: strings.ReplaceAll(comm, "/", "_"), pid: pid})
				break
			}
		}
	}
	return out
}
