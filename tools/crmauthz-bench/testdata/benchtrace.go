//go:build benchtrace

// A measuring hook for crmauthz, never in a default build (BENCHMARKS.md,
// "Against the floor", session 5): copied into cmd/crmauthz and built with
// -tags benchtrace, crmauthz keeps the last 20 s of its execution trace in
// memory when CRMAUTHZ_BENCH_TRACE names a directory and writes them to
// DIR/PID-N.trace on each SIGUSR1, as the floor does (flightrec.go), and
// its live heap (pprof, after a collection) to DIR/PID-N.heap on each
// SIGUSR2.
//
//	cp tools/crmauthz-bench/testdata/benchtrace.go cmd/crmauthz/zz_benchtrace.go
//	go build -tags benchtrace -o /tmp/crmauthz-trace ./cmd/crmauthz
//	rm cmd/crmauthz/zz_benchtrace.go

package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
	"time"
)

func init() {
	dir := os.Getenv("CRMAUTHZ_BENCH_TRACE")
	if dir == "" {
		return
	}
	fr := trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: 20 * time.Second, MaxBytes: 256 << 20})
	if err := fr.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for n := 1; ; n++ {
			if <-sig == syscall.SIGUSR2 {
				runtime.GC()
				f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d-%d.heap", os.Getpid(), n)))
				if err == nil {
					pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
				continue
			}
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d-%d.trace", os.Getpid(), n)))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				continue
			}
			if _, err := fr.WriteTo(f); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
			f.Close()
		}
	}()
}
