package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/trace"
	"syscall"
	"time"
)

// benchTraceEnv names a directory: when it is set in a server's environment,
// the server keeps the last seconds of its execution trace in memory
// (runtime/trace's flight recorder) and writes them to DIR/PID-N.trace on
// each SIGUSR1 (BENCHMARKS.md, "Against the floor": what the slowest 1 %
// wait for). The floor does so here; crmauthz through the build-tagged copy
// testdata/benchtrace.go, never in a default build.
const benchTraceEnv = "CRMAUTHZ_BENCH_TRACE"

// startFlightRecorder starts the flight recorder when benchTraceEnv is set;
// stop ends it.
func startFlightRecorder() (stop func(), err error) {
	dir := os.Getenv(benchTraceEnv)
	if dir == "" {
		return func() {}, nil
	}
	fr := trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: 20 * time.Second, MaxBytes: 256 << 20})
	if err := fr.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", benchTraceEnv, err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for n := 1; ; n++ {
			select {
			case <-done:
				return
			case <-sig:
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
	return func() {
		signal.Stop(sig)
		close(done)
		fr.Stop()
	}, nil
}
