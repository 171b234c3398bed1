package main

import (
	"testing"
	"time"
)

func TestSliceResults(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, n := range v {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	a := stepResult{side: "crmauthz", sent: 3, ok: 3, lat: ms(1, 2, 3), span: time.Second, cpu: 10 * time.Millisecond,
		rss: memStatus{RSS: 5}, cacheHit: 0.5}
	b := stepResult{side: "crmauthz", sent: 2, ok: 1, errs: 1, firstErr: "boom", lat: ms(100), span: time.Second,
		cpu: 20 * time.Millisecond, rss: memStatus{RSS: 7}, cacheHit: 1}
	got := sliceResults([]stepResult{a, b})
	if got.sent != 5 || got.ok != 4 || got.errs != 1 || got.firstErr != "boom" {
		t.Errorf("counts: %+v", got)
	}
	if got.achieved != 2 { // 4 answers in 2 s of slices
		t.Errorf("achieved = %v, want 2", got.achieved)
	}
	if got.cpu != 30*time.Millisecond || got.rss.RSS != 7 {
		t.Errorf("cpu %v rss %v", got.cpu, got.rss.RSS)
	}
	if got.p50 != 2*time.Millisecond || got.p99 != 100*time.Millisecond || got.max != 100*time.Millisecond {
		t.Errorf("pooled latencies: p50 %v p99 %v max %v", got.p50, got.p99, got.max)
	}
	if got.cacheHit != (0.5*3+1)/4 {
		t.Errorf("cache hits %v", got.cacheHit)
	}
	b.cacheHit = -1
	if got := sliceResults([]stepResult{a, b}); got.cacheHit != -1 {
		t.Errorf("an unknown slice's hits: %v, want -1", got.cacheHit)
	}
	if got := sliceResults([]stepResult{a}); got.p99 != a.p99 || got.ok != 3 {
		t.Errorf("one slice changed: %+v", got)
	}
}

func TestSliceOrder(t *testing.T) {
	order := []int{0, 1, 2}
	for j, want := range [][]int{{0, 1, 2}, {2, 1, 0}, {0, 1, 2}} {
		got := sliceOrder(order, j)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("slice %d: %v, want %v", j, got, want)
			}
		}
	}
	if order[0] != 0 {
		t.Errorf("the step's order was changed: %v", order)
	}
}

func TestCheckCPUList(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"", true}, {"1", true}, {"0,2", true}, {"2-3", true}, {"0,2-3", true},
		{"a", false}, {"1,", false}, {"-1", false}, {"1-", false}, {"1 2", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if err := checkCPUList("server-cpus", tc.in); (err == nil) != tc.ok {
				t.Errorf("checkCPUList(%q) = %v, want ok %v", tc.in, err, tc.ok)
			}
		})
	}
}
