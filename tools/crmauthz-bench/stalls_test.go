package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name        string
		in          string
		steal, nice time.Duration
		err         string
	}{
		{name: "kernel 6", in: "cpu  4188242 1519638 937367 2342651 96151 0 103305 148828 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n",
			steal: 148828 * clockTick, nice: 1519638 * clockTick},
		{name: "the aggregate line only, not cpu0", in: "cpu0 9 9 9 9 9 9 9 9\ncpu  1 2 3 4 5 6 7 8\n",
			steal: 8 * clockTick, nice: 2 * clockTick},
		{name: "too few fields", in: "cpu  1 2 3 4 5 6 7\n", err: "at least 9"},
		{name: "not a number", in: "cpu  1 2 x 4 5 6 7 8\n", err: "field 3"},
		{name: "no cpu line", in: "intr 1 2 3\n", err: "no cpu line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseProcStat([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || m.ok {
					t.Fatalf("got %+v, %v; want an error with %q", m, err, tc.err)
				}
				return
			}
			if err != nil || !m.ok || m.steal != tc.steal || m.nice != tc.nice {
				t.Fatalf("got %+v, %v; want steal %v nice %v", m, err, tc.steal, tc.nice)
			}
		})
	}
}

// TestReadMachine reads this machine's counters twice around some work:
// neither goes back, and an unknown delta makes a sum unknown.
func TestReadMachine(t *testing.T) {
	a, err := readMachine()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) { // burn some CPU
	}
	b, err := readMachine()
	if err != nil {
		t.Fatal(err)
	}
	d := a.to(b)
	if !d.ok || d.nice < 0 || d.steal < 0 {
		t.Fatalf("delta %+v: want known and nothing negative", d)
	}
	if got := d.add(machineTimes{}); got.ok {
		t.Errorf("a known delta plus an unknown one is known: %+v", got)
	}
}

// TestFixedRateRuns prints one row per run of a fixed-rate step with each
// side's machine figures, and nothing for a single run or a saturation step.
func TestFixedRateRuns(t *testing.T) {
	rate := stepSpec{name: "5000/s", rate: 5000}
	sat := stepSpec{name: "32 conn", workers: 32}
	res := func(spec stepSpec, crm, floor time.Duration) [nSides]stepResult {
		return [nSides]stepResult{
			{spec: spec, side: "crmauthz", p99: crm},
			{},
			{spec: spec, side: "floor", p99: floor},
		}
	}
	ev := func(steal, nice time.Duration) [nSides]stepEvidence {
		m := machineTimes{steal: steal, nice: nice, ok: true}
		return [nSides]stepEvidence{{genCPU: 100 * time.Millisecond, machine: m}, {}, {genCPU: 100 * time.Millisecond, machine: m}}
	}
	rep := &report{
		cfg: runConfig{Runs: 2},
		steps: [][][nSides]stepResult{
			{res(rate, 2*time.Millisecond, time.Millisecond), res(rate, 6*time.Millisecond, 2*time.Millisecond)},
			{res(sat, time.Millisecond, time.Millisecond), res(sat, time.Millisecond, time.Millisecond)},
		},
		evidence: [][][nSides]stepEvidence{
			{ev(0, 100*time.Millisecond), ev(250*time.Millisecond, 200*time.Millisecond)},
			{ev(0, 0), ev(0, 0)},
		},
	}
	var b bytes.Buffer
	fixedRateRuns(rep).write(&b)
	out := b.String()
	for _, want := range []string{
		// step, run, the two p99s, their ratio, then each side's steal and niced CPU
		"5000/s 1 2.00ms 1.00ms 2.00 0ms 100ms 0ms 100ms",
		"5000/s 2 6.00ms 2.00ms 3.00 250ms 200ms 250ms 200ms",
	} {
		if !strings.Contains(strings.Join(strings.Fields(strings.ReplaceAll(out, "\n", " | ")), " "), want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "32 conn") {
		t.Errorf("a saturation step is printed:\n%s", out)
	}
	rep.cfg.Runs = 1
	if fixedRateRuns(rep) != nil {
		t.Error("a table for a single run")
	}
}
