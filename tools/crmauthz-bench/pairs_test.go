package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestRatioTally: ratios above the bound and under its mirror are counted,
// unmeasured ones (≤ 0) left out; exactly 2 or 0.5 is within.
func TestRatioTally(t *testing.T) {
	for _, tc := range []struct {
		name            string
		ratios          []float64
		above, below, n int
	}{
		{"none", nil, 0, 0, 0},
		{"within", []float64{1, 0.9, 1.4, 2, 0.5}, 0, 0, 5},
		{"above and below", []float64{2.01, 3.3, 0.49, 1}, 2, 1, 4},
		{"unmeasured left out", []float64{0, -1, 2.5}, 1, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			above, below, n := ratioTally(tc.ratios, pairBound)
			if above != tc.above || below != tc.below || n != tc.n {
				t.Errorf("ratioTally(%v) = %d above, %d below of %d; want %d, %d of %d", tc.ratios, above, below, n, tc.above, tc.below, tc.n)
			}
		})
	}
}

// pairReport is a report of four runs of a fixed-rate step and a
// saturation step with three sides named as given.
func pairReport(cfg runConfig, names [nSides]string, p99s [][nSides]time.Duration) *report {
	rate := stepSpec{name: "5000/s", rate: 5000}
	sat := stepSpec{name: "max, 32 conn", workers: 32}
	rep := &report{cfg: cfg, reasons: map[string]int{}, steps: make([][][nSides]stepResult, 2)}
	for _, run := range p99s {
		var r, s [nSides]stepResult
		for k := range nSides {
			r[k] = stepResult{spec: rate, side: names[k], sent: 100, ok: 100, achieved: 5000, p50: run[k] / 4, p99: run[k], cacheHit: -1}
			s[k] = stepResult{spec: sat, side: names[k], sent: 100, ok: 100, achieved: 9000, p50: time.Millisecond, p99: 40 * time.Millisecond, cacheHit: -1}
		}
		rep.steps[0] = append(rep.steps[0], r)
		rep.steps[1] = append(rep.steps[1], s)
	}
	return rep
}

// TestPairRuns: with --vs-floor the report gives floor/floor-b in the table
// and floor ÷ floor-b run by run with the runs beyond 2× counted; with
// --vs-crmauthz crmauthz ÷ crmauthz-b; with OPA no such line.
func TestPairRuns(t *testing.T) {
	ms := time.Millisecond
	// [crmauthz, B side, floor] per run: floor ÷ B 1.00, 2.50, 0.40, 1.20;
	// crmauthz ÷ B 2.00, 1.00, 1.00, 3.00.
	runs := [][nSides]time.Duration{{2 * ms, ms, ms}, {5 * ms, 5 * ms, 12500 * time.Microsecond}, {ms, ms, 400 * time.Microsecond}, {3 * ms, ms, 1200 * time.Microsecond}}
	base := runConfig{Records: 100, Users: 10, Locations: 5, Duration: time.Second, Runs: 4, NoOPA: true}
	for _, tc := range []struct {
		name  string
		cfg   func(runConfig) runConfig
		names [nSides]string
		want  []string
		not   []string
	}{
		{"vs-floor", func(c runConfig) runConfig { c.VsFloor = true; return c }, [nSides]string{"crmauthz", "floor-b", "floor"},
			[]string{
				"floor ÷ floor-b, p99 at 5000/s: 1.10 (0.40–2.50); above 2 in 1 of 4 runs, under 0.5 in 1; by run: 1.00 2.50 0.40 1.20",
				"floor-b in OPA's place",
			},
			[]string{"crmauthz/floor-b", "max, 32 conn: "}},
		{"vs-crmauthz", func(c runConfig) runConfig { c.VsCrmauthz = "/bin/crmauthz"; return c }, [nSides]string{"crmauthz", "crmauthz-b", "floor"},
			[]string{"crmauthz ÷ crmauthz-b, p99 at 5000/s: 1.50 (1.00–3.00); above 2 in 1 of 4 runs, under 0.5 in 0; by run: 2.00 1.00 1.00 3.00"},
			[]string{"floor ÷"}},
		{"opa", func(c runConfig) runConfig { c.NoOPA = false; return c }, [nSides]string{"crmauthz", "opa", "floor"},
			nil, []string{" ÷ opa", "by run:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := pairReport(tc.cfg(base), tc.names, runs)
			var b bytes.Buffer
			if err := printReport(&b, rep); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("no %q in\n%s", w, out)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(out, w) {
					t.Errorf("%q in\n%s", w, out)
				}
			}
		})
	}
	// The table's ratio rows: floor/floor-b as a row of its own with --vs-floor.
	rep := pairReport(runConfig{Duration: time.Second, Runs: 4, NoOPA: true, VsFloor: true}, [nSides]string{"crmauthz", "floor-b", "floor"}, runs)
	var b bytes.Buffer
	if err := printReport(&b, rep); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(b.String(), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[0] == "5000/s" && f[1] == "floor/floor-b" && !found {
			found = true        // the table's row; the spread's comes later
			if f[5] != "1.10" { // the median p99 ratio
				t.Errorf("floor/floor-b p99 %s, want 1.10: %q", f[5], line)
			}
		}
	}
	if !found {
		t.Errorf("no floor/floor-b row in\n%s", b.String())
	}
}

// TestPairFlags: --vs-floor with a crmauthz-b, and --sample-every out of
// range, are refused before anything starts.
func TestPairFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"vs-floor and vs-crmauthz", []string{"--vs-floor", "--vs-crmauthz", "/bin/true"}, "--vs-floor"},
		{"vs-floor and vs-crmauthz-args", []string{"--vs-floor", "--vs-crmauthz-args", "--decision-log /tmp/x"}, "--vs-floor"},
		{"sample-every too short", []string{"--sample-out", "x.csv", "--sample-every", "1ms"}, "--sample-every"},
		{"sample-every too long", []string{"--sample-out", "x.csv", "--sample-every", "11s"}, "--sample-every"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := mainErr(append([]string{"run"}, tc.args...), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run %v: %v, want an error about %s", tc.args, err, tc.want)
			}
		})
	}
	if _, err := run(t.Context(), runConfig{VsFloor: true, VsCrmauthz: "/bin/true", Log: &bytes.Buffer{}}); err == nil || !strings.Contains(err.Error(), "--vs-floor") {
		t.Errorf("run with VsFloor and VsCrmauthz: %v, want an error about --vs-floor", err)
	}
}
