package main

import (
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitIdle: an idle process settles in the first window; a process
// that keeps a core busy does not, and the wait ends at its bound.
func TestWaitIdle(t *testing.T) {
	idle := exec.Command("sleep", "30")
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idle.Process.Kill(); _ = idle.Wait() })

	for _, tc := range []struct {
		name     string
		busy     bool
		pid      int
		max      time.Duration
		wantIdle bool
	}{
		{name: "an idle process", pid: idle.Process.Pid, max: 2 * time.Second, wantIdle: true},
		{name: "a busy process", busy: true, pid: os.Getpid(), max: 400 * time.Millisecond, wantIdle: false},
		{name: "no bound: no wait", busy: true, pid: os.Getpid(), max: 0, wantIdle: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stop atomic.Bool
			done := make(chan struct{})
			if tc.busy {
				go func() {
					defer close(done)
					for !stop.Load() {
						runtime.Gosched() // stays runnable: a core's worth of CPU
					}
				}()
			} else {
				close(done)
			}
			waited, ok := waitIdle(t.Context(), []int{tc.pid}, tc.max)
			stop.Store(true)
			<-done
			if ok != tc.wantIdle {
				t.Fatalf("idle = %v after %s, want %v", ok, waited, tc.wantIdle)
			}
			if !ok && waited < tc.max {
				t.Errorf("gave up after %s, before its bound %s", waited, tc.max)
			}
			if tc.max == 0 && waited != 0 {
				t.Errorf("waited %s with no bound", waited)
			}
		})
	}
}
