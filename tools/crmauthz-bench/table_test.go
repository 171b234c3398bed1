package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestReportRuns prints a report of three runs of two steps and checks the
// medians, the spread and the ratios to the floor.
func TestReportRuns(t *testing.T) {
	rate := stepSpec{name: "5000/s", rate: 5000}
	sat := stepSpec{name: "max, 32 conn", workers: 32}
	res := func(spec stepSpec, side string, rps float64, p99 time.Duration) stepResult {
		return stepResult{spec: spec, side: side, sent: 100, ok: 100, achieved: rps,
			p50: p99 / 4, p90: p99 / 2, p99: p99, p999: 2 * p99, max: 3 * p99, cacheHit: -1}
	}
	run := func(spec stepSpec, crm, floor time.Duration, crmRPS, floorRPS float64) [nSides]stepResult {
		return [nSides]stepResult{
			res(spec, "crmauthz", crmRPS, crm),
			res(spec, "opa", crmRPS/4, 4*crm),
			res(spec, "floor", floorRPS, floor),
		}
	}
	rep := &report{
		cfg:     runConfig{Records: 100, Users: 10, Locations: 5, Duration: time.Second, Runs: 3},
		reasons: map[string]int{"owner": 1},
		steps: [][][nSides]stepResult{
			{ // p99 ratios 1.5, 3.0, 1.0: median 1.5, spread 1.0–3.0
				run(rate, 3*time.Millisecond, 2*time.Millisecond, 5000, 5000),
				run(rate, 6*time.Millisecond, 2*time.Millisecond, 5000, 5000),
				run(rate, 2*time.Millisecond, 2*time.Millisecond, 5000, 5000),
			},
			{ // rps ratios 0.8, 0.5, 0.9: median 0.8, spread 0.5–0.9
				run(sat, time.Millisecond, time.Millisecond, 8000, 10000),
				run(sat, time.Millisecond, time.Millisecond, 5000, 10000),
				run(sat, time.Millisecond, time.Millisecond, 9000, 10000),
			},
		},
	}
	var b bytes.Buffer
	if err := printReport(&b, rep); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{
		"crmauthz ÷ floor: p99 at 5000/s 1.50 (1.00–3.00); rps at max, 32 conn 0.80 (0.50–0.90)",
		"3 runs of the load steps over the same servers",
		"spread over the 3 runs",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && (f[0] == "5000/s" || f[0] == "max,") {
			if f[0] == "max," {
				f = append([]string{strings.Join(f[:3], " ")}, f[3:]...)
			}
			rows[f[0]+" "+f[1]] = append(rows[f[0]+" "+f[1]], strings.Join(f[2:], " "))
		}
	}
	for key, want := range map[string][]string{
		// median p99 3ms (of 2, 3, 6), p99.9 6ms, errors 0; then the spread row
		// (achieved/s, p50, p90, p99, p99.9, CPU/decision; the CPU not measured here)
		"5000/s crmauthz":             {"5000 750µs 1.50ms 3.00ms 6.00ms 0 - -", "5000–5000 500µs–1.50ms 1.00ms–3.00ms 2.00ms–6.00ms 4.00ms–12.0ms -"},
		"5000/s crmauthz/floor":       {"1.00 1.50 1.50 1.50 1.50 - -", "1.00–1.00 1.00–3.00 1.00–3.00 1.00–3.00 1.00–3.00 -"},
		"5000/s crmauthz/opa":         {"4.00 0.25 0.25 0.25 0.25 - -", "4.00–4.00 0.25–0.25 0.25–0.25 0.25–0.25 0.25–0.25 -"},
		"max, 32 conn floor":          {"10000 250µs 500µs 1.00ms 2.00ms 0 - -", "10000–10000 250µs–250µs 500µs–500µs 1.00ms–1.00ms 2.00ms–2.00ms -"},
		"max, 32 conn crmauthz/floor": {"0.80 1.00 1.00 1.00 1.00 - -", "0.50–0.90 1.00–1.00 1.00–1.00 1.00–1.00 1.00–1.00 -"},
	} {
		if got := rows[key]; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("%s: rows %q, want %q\n%s", key, got, want, out)
		}
	}
}

func TestMedian(t *testing.T) {
	mk := func(xs ...float64) [][nSides]stepResult {
		var runs [][nSides]stepResult
		for _, x := range xs {
			runs = append(runs, [nSides]stepResult{{achieved: x}})
		}
		return runs
	}
	f := func(p [nSides]stepResult) float64 { return p[0].achieved }
	for _, c := range []struct {
		name        string
		xs          []float64
		med, lo, hi float64
	}{
		{"one", []float64{3}, 3, 3, 3},
		{"odd", []float64{5, 1, 3}, 3, 1, 5},
		{"even", []float64{4, 1, 3, 2}, 2.5, 1, 4},
		{"unmeasured left out", []float64{0, 2, 4}, 3, 2, 4},
		{"none measured", []float64{0, 0}, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			runs := mk(c.xs...)
			lo, hi := minMax(runs, f)
			if m := median(runs, f); m != c.med || lo != c.lo || hi != c.hi {
				t.Fatalf("median %v, min–max %v–%v; want %v, %v–%v", m, lo, hi, c.med, c.lo, c.hi)
			}
		})
	}
}
