package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSampleProc reads this process's own counters: faults and run-queue
// wait only grow, and a side without metrics has no GC count.
func TestSampleProc(t *testing.T) {
	s := &side{name: "self", pid: os.Getpid()}
	a := sampleProc(context.Background(), s)
	buf := make([]byte, 64<<20) // touches new pages: minor faults
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	b := sampleProc(context.Background(), s)
	e := a.to(b)
	if e.minflt <= 0 || e.majflt < 0 || e.runWait < 0 || e.genCPU < 0 {
		t.Errorf("evidence %+v: want minor faults > 0, nothing negative", e)
	}
	if e.gcCycles != -1 {
		t.Errorf("gcCycles %v without metrics, want -1", e.gcCycles)
	}
}

// TestEvidenceTable prints the medians of the tail's candidates per step.
func TestEvidenceTable(t *testing.T) {
	spec := stepSpec{name: "5000/s", rate: 5000}
	res := [nSides]stepResult{{spec: spec, side: "crmauthz", ok: 1000}, {}, {spec: spec, side: "floor", ok: 1000}}
	ev := func(minflt int64, wait time.Duration, gc float64) [nSides]stepEvidence {
		return [nSides]stepEvidence{
			{minflt: minflt, runWait: wait, gcCycles: gc, genCPU: 50 * time.Millisecond},
			{},
			{minflt: 1, runWait: wait / 2, gcCycles: -1, genCPU: 40 * time.Millisecond},
		}
	}
	rep := &report{
		cfg:      runConfig{Duration: 10 * time.Second, Runs: 3},
		steps:    [][][nSides]stepResult{{res, res, res}},
		evidence: [][][nSides]stepEvidence{{ev(10, 100*time.Millisecond, 5), ev(30, 300*time.Millisecond, 15), ev(20, 200*time.Millisecond, 10)}},
	}
	var b bytes.Buffer
	evidenceTable(rep).write(&b)
	out := b.String()
	for _, want := range []string{
		// median minflt 20, run-queue wait 200ms/1000 decisions, 10 GC in 10 s, 50ms/1000 of the generator
		"5000/s  crmauthz      20       0                    200µs   1.0                    50µs",
		"5000/s  floor          1       0                    100µs     -                    40µs",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "opa") {
		t.Errorf("a side left out is printed:\n%s", out)
	}
}
