package main

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

func TestNextProcs(t *testing.T) {
	cases := []struct {
		name     string
		cur, max int
		util     float64
		want     int
	}{
		{"one P at most", 1, 1, 3, 1},
		{"idle: down to one", 4, 4, 0, 1},
		{"under the lower bound: down", 2, 2, 0.39, 1},
		{"between the bounds: stays at max", 2, 2, 0.45, 2},
		{"between the bounds: stays at one", 1, 2, 0.45, 1},
		{"at the upper bound: stays at one", 1, 2, 0.5, 1},
		{"over the upper bound: up to max", 1, 8, 0.51, 8},
		{"busy: stays at max", 8, 8, 3, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := nextProcs(c.cur, c.max, c.util); got != c.want {
				t.Errorf("nextProcs(%d, %d, %v) = %d, want %d", c.cur, c.max, c.util, got, c.want)
			}
		})
	}
}

// The controller sets the P count from the CPU used between two samples:
// not at the first sample (no interval yet), once per change.
func TestProcsControllerObserve(t *testing.T) {
	var cpu time.Duration
	var sets []int
	c := &procsController{max: 2, cur: 2, cpu: func() time.Duration { return cpu }, set: func(n int) { sets = append(sets, n) }}
	at := time.Unix(1000, 0)
	step := func(used time.Duration) {
		cpu += used
		at = at.Add(100 * time.Millisecond)
		c.observe(at)
	}
	c.observe(at)               // first sample: no interval
	step(10 * time.Millisecond) // 0.1 core: down
	step(30 * time.Millisecond) // 0.3: stays
	step(45 * time.Millisecond) // 0.45: stays
	step(80 * time.Millisecond) // 0.8: up
	step(45 * time.Millisecond) // 0.45: stays
	step(20 * time.Millisecond) // 0.2: down
	saved := cpu
	cpu = -1 - 100*time.Millisecond // unreadable (step adds 100ms back): no sample
	step(100 * time.Millisecond)
	cpu = saved
	step(80 * time.Millisecond) // 0.4 over two intervals: stays
	if want := []int{1, 2, 1}; !equalInts(sets, want) {
		t.Fatalf("P counts set %v, want %v", sets, want)
	}
	if c.cur != 1 {
		t.Fatalf("cur = %d, want 1", c.cur)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// runAdaptiveProcs, idle, goes down to one P within a few samples, and gives
// the runtime its P count back when its context ends. The CPU time it reads
// is the test's (never advancing: idle), not the test process's, which other
// tests may keep busy.
func TestRunAdaptiveProcs(t *testing.T) {
	start := runtime.GOMAXPROCS(0)
	if start < 2 {
		t.Skip("needs GOMAXPROCS >= 2")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runAdaptiveProcs(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Duration { return time.Second })
	}()
	deadline := time.Now().Add(time.Minute)
	for runtime.GOMAXPROCS(0) != 1 {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("GOMAXPROCS still %d after a minute of an idle process", runtime.GOMAXPROCS(0))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != start {
		t.Fatalf("GOMAXPROCS %d after the controller ended, want %d", got, start)
	}
}
