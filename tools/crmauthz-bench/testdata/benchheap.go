//go:build benchheap

// A measuring hook for crmauthz (BENCHMARKS.md, "Session 6: the collector"),
// never in a default build: copied into cmd/crmauthz and built with -tags
// benchheap.
// With CRMAUTHZ_BENCH_HEAP=DIR it writes, every 250 ms, one line of the
// collector's runtime/metrics and the process's CPU time to DIR/PID.gc, and on
// each SIGUSR2 the live heap (pprof, after a collection) to DIR/PID-N.heap.
// CRMAUTHZ_BENCH_MEMRATE sets runtime.MemProfileRate (bytes per sample);
// CRMAUTHZ_BENCH_HEAP_EVERY (a duration) writes the heap that often as well.
//
// Its first line, "# anchor", ties GODEBUG=gctrace=1's times (seconds since
// the runtime started, "gc N @T s") to CLOCK_MONOTONIC, the clock of
// crmauthz-bench's --requests-out: the hook forces one collection, cycle N at
// @T, between two readings of the clock, so a cycle's start on that clock is
// mono_before + (its @ - T), within the before/after gap and gctrace's 1 ms
// (BENCHMARKS.md, "Session 7: the mark phase"). Send gctrace to a file per
// process: GODEBUG=gctrace=1 ... exec crmauthz "$@" 2>>DIR/gctrace.$$.log
//
//	cp tools/crmauthz-bench/testdata/benchheap.go cmd/crmauthz/zz_benchheap.go
//	go build -tags benchheap -o /tmp/crmauthz-heap ./cmd/crmauthz
//	rm cmd/crmauthz/zz_benchheap.go
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// monoNow is CLOCK_MONOTONIC in nanoseconds.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return -1
	}
	return ts.Nano()
}

func init() {
	dir := os.Getenv("CRMAUTHZ_BENCH_HEAP")
	if dir == "" {
		return
	}
	if r, err := strconv.Atoi(os.Getenv("CRMAUTHZ_BENCH_MEMRATE")); err == nil && r > 0 {
		runtime.MemProfileRate = r
	}
	names := []string{
		"/gc/cycles/total:gc-cycles",
		"/cpu/classes/gc/mark/assist:cpu-seconds",
		"/cpu/classes/gc/mark/dedicated:cpu-seconds",
		"/cpu/classes/gc/mark/idle:cpu-seconds",
		"/cpu/classes/gc/pause:cpu-seconds",
		"/gc/scan/heap:bytes",
		"/gc/scan/stack:bytes",
		"/gc/scan/globals:bytes",
		"/gc/heap/live:bytes",
		"/gc/heap/objects:objects",
		"/gc/heap/goal:bytes",
		"/gc/heap/allocs:bytes",
		"/gc/heap/allocs:objects",
		"/sched/goroutines:goroutines",
	}
	samples := make([]metrics.Sample, len(names))
	for i, n := range names {
		samples[i].Name = n
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d.gc", os.Getpid())))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	cyc := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	before := monoNow()
	runtime.GC()
	after := monoNow()
	metrics.Read(cyc)
	fmt.Fprintf(f, "# anchor mono_ns_before=%d mono_ns_after=%d gc=%d\n", before, after, cyc[0].Value.Uint64())
	fmt.Fprint(f, "unix_ms cpu_user_s cpu_sys_s")
	for _, n := range names {
		fmt.Fprint(f, " ", n)
	}
	fmt.Fprintln(f)
	go func() {
		for range time.Tick(250 * time.Millisecond) {
			metrics.Read(samples)
			var ru syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			fmt.Fprintf(f, "%d %.6f %.6f", time.Now().UnixMilli(),
				float64(ru.Utime.Sec)+float64(ru.Utime.Usec)/1e6, float64(ru.Stime.Sec)+float64(ru.Stime.Usec)/1e6)
			for _, s := range samples {
				switch s.Value.Kind() {
				case metrics.KindUint64:
					fmt.Fprintf(f, " %d", s.Value.Uint64())
				case metrics.KindFloat64:
					fmt.Fprintf(f, " %.6f", s.Value.Float64())
				default:
					fmt.Fprint(f, " -")
				}
			}
			fmt.Fprintln(f)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	if every, err := time.ParseDuration(os.Getenv("CRMAUTHZ_BENCH_HEAP_EVERY")); err == nil && every > 0 {
		go func() {
			for range time.Tick(every) {
				sig <- syscall.SIGUSR2
			}
		}()
	}
	go func() {
		for n := 1; ; n++ {
			<-sig
			runtime.GC()
			h, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d-%d.heap", os.Getpid(), n)))
			if err == nil {
				pprof.Lookup("heap").WriteTo(h, 0)
				h.Close()
			}
		}
	}()
}
