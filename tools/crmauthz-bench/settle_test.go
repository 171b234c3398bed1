package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestWaitIdle: an idle process settles in the first window; a process
// that keeps using CPU does not, and the wait ends at its bound; one that
// stops settles in the window after; no bound, no wait.
//
// The busy processes are CPU counters the test advances, not a goroutine
// spinning in this process as until session 12: with -race beside CPU hogs
// (load average 12) the spinning goroutine got less than 10 ms of CPU in a
// window of 100 ms and read as idle. The idle case reads a real process
// (sleep), whose CPU time does not move however loaded the machine is.
func TestWaitIdle(t *testing.T) {
	idle := exec.Command("sleep", "30")
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idle.Process.Kill(); _ = idle.Wait() })
	waited, ok := waitIdle(t.Context(), []int{idle.Process.Pid}, time.Minute)
	if !ok || waited >= time.Minute {
		t.Errorf("a sleeping process: idle = %v after %s, want idle in the first window", ok, waited)
	}
	if waited, ok := waitIdle(t.Context(), []int{os.Getpid()}, 0); !ok || waited != 0 {
		t.Errorf("no bound: idle = %v after %s, want no wait", ok, waited)
	}

	// busyFor is a process that uses a core's worth of CPU in each of its
	// first n windows (counted by reads), then none.
	busyFor := func(n int) func() time.Duration {
		var reads int
		var used time.Duration
		return func() time.Duration {
			if reads > 0 && reads <= n {
				used += settleWindow
			}
			reads++
			return used
		}
	}
	for _, tc := range []struct {
		name     string
		busy     int // windows
		max      time.Duration
		wantIdle bool
	}{
		{"busy throughout", 1 << 30, 400 * time.Millisecond, false},
		{"busy for three windows", 3, time.Minute, true},
		{"idle", 0, time.Minute, true},
		{"busy for one window", 1, time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waited, ok := waitIdleOf(t.Context(), busyFor(tc.busy), tc.max)
			if ok != tc.wantIdle {
				t.Fatalf("idle = %v after %s, want %v", ok, waited, tc.wantIdle)
			}
			if !ok && waited < tc.max {
				t.Errorf("gave up after %s, before its bound %s", waited, tc.max)
			}
			if want := time.Duration(tc.busy+1) * settleWindow; ok && waited < want {
				t.Errorf("idle after %s, before %d windows", waited, tc.busy+1)
			}
		})
	}
	t.Run("just over the idle CPU", func(t *testing.T) {
		var used time.Duration
		waited, ok := waitIdleOf(t.Context(), func() time.Duration { used += idleCPU + time.Millisecond; return used }, 300*time.Millisecond)
		if ok {
			t.Errorf("%s of CPU per window read as idle after %s", idleCPU+time.Millisecond, waited)
		}
	})
}
