package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseCPULines(t *testing.T) {
	stat := "cpu  10 1 20 300 4 0 2 7 0 0\ncpu0 5 1 10 150 2 0 1 3 0 0\ncpu1 5 0 10 150 2 0 1 x 0 0\nintr 1 2\nctxt 99\n"
	got := map[string]int64{}
	for _, c := range parseCPULines([]byte(stat)) {
		got[c.series] = c.value
	}
	want := map[string]int64{"cpu.user": 10, "cpu.nice": 1, "cpu.idle": 300, "cpu.steal": 7, "cpu0.system": 10, "cpu0.steal": 3}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != 16 { // cpu and cpu0; cpu1's malformed line left out
		t.Errorf("%d counters, want 16: %v", len(got), got)
	}
}

func TestParsePressureSome(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"some avg10=0.12 avg60=0.00 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=9\n", 123456, true},
		{"full avg10=0.00 total=9\n", 0, false},
		{"some avg10=0.00 total=x\n", 0, false},
	} {
		v, ok := parsePressureSome([]byte(tc.in))
		if v != tc.want || ok != tc.ok {
			t.Errorf("parsePressureSome(%q) = %d, %v; want %d, %v", tc.in, v, ok, tc.want, tc.ok)
		}
	}
}

// TestSampler samples this process for a moment: the file holds its pid and
// start, and rows of /proc/stat and of its own run time, growing.
func TestSampler(t *testing.T) {
	path := filepath.Join(t.TempDir(), "samples.csv")
	s, err := startSampler(path, 10*time.Millisecond, []sampledProc{{"generator", os.Getpid(), 42}})
	if err != nil {
		t.Fatal(err)
	}
	// Some run time of this process to sample, until the sampler has
	// taken two samples (stop takes a third). Until session 12 the loop
	// ran 60 ms, six ticks; with -race beside CPU hogs the sampler's
	// goroutine got one turn in them and the test two samples.
	deadline := time.Now().Add(time.Minute)
	for s.taken.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d samples in a minute of every 10ms", s.taken.Load())
		}
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("a second stop: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if lines[0] != "mono_ns,series,value" {
		t.Fatalf("header %q", lines[0])
	}
	series := map[string][]int64{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) != 3 {
			t.Fatalf("line %q: want 3 fields", l)
		}
		v, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		series[f[1]] = append(series[f[1]], v)
	}
	if got := series["pid.generator"]; len(got) != 1 || got[0] != int64(os.Getpid()) {
		t.Errorf("pid.generator %v, want [%d]", got, os.Getpid())
	}
	if got := series["start.generator"]; len(got) != 1 || got[0] != 42 {
		t.Errorf("start.generator %v, want [42]", got)
	}
	run := series["generator.run_ns"]
	if len(run) < 3 || run[len(run)-1] <= run[0] {
		t.Errorf("generator.run_ns %v: want at least 3 samples, growing", run)
	}
	if len(series["cpu.idle"]) != len(run) || len(series["gen.gc_cycles"]) != len(run) {
		t.Errorf("%d samples of cpu.idle, %d of gen.gc_cycles, %d of the run time: want one of each per sample",
			len(series["cpu.idle"]), len(series["gen.gc_cycles"]), len(run))
	}
}

// TestServerLogs: with a log directory a started process's output is kept
// whole in NAME-PID.log after the header with its start.
func TestServerLogs(t *testing.T) {
	dir := t.TempDir()
	before := monotonicNow()
	p, err := startProc("echoer", "/bin/sh", []string{"-c", "echo gc 1 @0.010s >&2"}, nil, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	<-p.done
	b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("echoer-%d.log", p.pid())))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[1] != "gc 1 @0.010s" {
		t.Fatalf("log %q: want the header and the output", b)
	}
	var mono int64
	if _, err := fmt.Sscanf(lines[0], "# echoer started mono_ns=%d", &mono); err != nil || mono < before.Nanoseconds() || mono != p.mono.Nanoseconds() {
		t.Errorf("header %q (%v): want the start on CLOCK_MONOTONIC, %d", lines[0], err, p.mono.Nanoseconds())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "echoer-*.log")); len(left) != 1 {
		t.Errorf("logs %v: want one", left)
	}
}
