package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// printReport writes the run's one table: every load step for the three
// sides with the ratios crmauthz/opa and crmauthz/floor, then readiness and
// idle memory, then the ratios to the floor in one line.
func printReport(out io.Writer, rep *report) error {
	c := rep.cfg
	fmt.Fprintf(out, "crmauthz vs opa run --server (%s) vs the floor (bare net/http, constant answer), %d records, %d users, %d locations; %s per step and side\n",
		rep.opaVersion, c.Records, c.Users, c.Locations, c.Duration)
	if c.Runs > 1 {
		fmt.Fprintf(out, "%d runs of the load steps over the same servers: medians over the runs (ratios: the median of each run's ratio; errors: the sum)\n", c.Runs)
	}
	fmt.Fprintf(out, "load average (1/5/15 min) at start %s, at end %s\n", rep.loadStart, rep.loadEnd)
	if rep.autogroup != "" {
		fmt.Fprintf(out, "the tool's autogroup (its servers' too): %s\n", rep.autogroup)
	}
	agree := "identical"
	if rep.disagree > 0 {
		agree = fmt.Sprintf("%d DISAGREE (the first below)", rep.disagree)
	}
	reasons := make([]string, 0, len(rep.reasons))
	for r, n := range rep.reasons {
		reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
	}
	slices.Sort(reasons)
	if c.vs() {
		what := "crmauthz"
		if c.VsCrmauthz != "" {
			what = c.VsCrmauthz
		}
		if len(c.VsArgs) > 0 {
			what += " with " + strings.Join(c.VsArgs, " ")
		}
		fmt.Fprintf(out, "crmauthz-b in OPA's place: %s on a copy of the index (crmauthz/crmauthz-b below 1 in achieved/s: crmauthz-b answers more)\n", what)
	}
	if c.VsFloor {
		fmt.Fprintln(out, "floor-b in OPA's place: a second floor server, started as the floor is (floor/floor-b: the method's spread between identical servers)")
	}
	if c.Slices > 1 {
		fmt.Fprintf(out, "each step of each side in %d slices of %s, interleaved with the other sides' (A B A B …; each after %s of untimed load; latencies pooled, CPU and the machine's counters summed per side)\n",
			c.Slices, c.Duration/time.Duration(c.Slices), c.SliceWarmup)
	}
	if c.ServerCPUs != "" || c.GeneratorCPUs != "" {
		fmt.Fprintf(out, "pinned: the servers to CPUs %q, the load generator to CPUs %q (\"\": not pinned)\n", c.ServerCPUs, c.GeneratorCPUs)
	}
	if isGateway(c.Endpoint) {
		fmt.Fprintf(out, "requests: the mix as a gateway asks (%s, BENCHMARKS.md \"Method\"); the floor answers each with its constant allow\n", gatewayWhat(c.Endpoint))
		fmt.Fprintf(out, "gateway check: %d requests of the mix asked of each crmauthz as %s and as POST /v1/decision, %s; reasons: %s\n",
			c.Check, c.Endpoint, agree, strings.Join(reasons, ", "))
	} else if c.NoOPA {
		fmt.Fprintln(out, "agreement: not checked (OPA left out)")
	} else {
		fmt.Fprintf(out, "agreement: %d decisions of the mix asked of both, %s; reasons: %s\n", rep.checked, agree, strings.Join(reasons, ", "))
	}
	for _, m := range rep.mismatches {
		fmt.Fprintf(out, "  %s\n", m)
	}
	fmt.Fprintln(out)

	var t table
	t.row("step", "side", "achieved/s", "p50", "p90", "p99", "p99.9", "errors", "CPU/decision", "RSS MiB", "cache hits")
	var spread table
	spread.row("step", "side", "achieved/s", "p50", "p90", "p99", "p99.9", "CPU/decision")
	for _, runs := range rep.steps {
		if len(runs) == 0 {
			continue
		}
		name := runs[0][sideCrmauthz].spec.name
		for k := range nSides {
			if runs[0][k].side == "" {
				continue // a side left out (--no-opa)
			}
			med := func(f func(stepResult) float64) float64 {
				return median(runs, func(p [nSides]stepResult) float64 { return f(p[k]) })
			}
			var errs int
			for _, p := range runs {
				errs += p[k].errs
			}
			hits := ""
			if h := medianAll(runs, func(p [nSides]stepResult) float64 { return p[k].cacheHit }); h >= 0 {
				hits = fmt.Sprintf("%.1f%%", 100*h)
			}
			t.row(name, runs[0][k].side, fmt.Sprintf("%.0f", med(achieved)), fmtDur(dur(med(p50))), fmtDur(dur(med(p90))),
				fmtDur(dur(med(p99))), fmtDur(dur(med(p999))), fmt.Sprint(errs), fmtDur(dur(med(cpuPer))),
				fmtMiB(int64(med(func(r stepResult) float64 { return float64(r.rss.RSS) }))), hits)
			cells := []string{name, runs[0][k].side}
			for i, f := range spreadFigures {
				lo, hi := minMax(runs, func(p [nSides]stepResult) float64 { return f(p[k]) })
				if i == 0 { // achieved/s
					cells = append(cells, span(fmt.Sprintf("%.0f", lo), fmt.Sprintf("%.0f", hi)))
				} else {
					cells = append(cells, span(fmtDur(dur(lo)), fmtDur(dur(hi))))
				}
			}
			spread.row(cells...)
		}
		for _, pr := range c.ratioPairs() {
			a, k := pr[0], pr[1]
			if runs[0][k].side == "" || runs[0][a].side == "" {
				continue
			}
			// The median over the runs of each run's ratio (both sides of
			// a ratio measured in the same run, one after the other).
			r := func(f func(stepResult) float64) string {
				return fmtRatio(median(runs, func(p [nSides]stepResult) float64 { return ratioOf(f(p[a]), f(p[k])) }))
			}
			vs := runs[0][a].side + "/" + runs[0][k].side
			t.row(name, vs, r(achieved), r(p50), r(p90), r(p99), r(p999), "", r(cpuPer),
				r(func(r stepResult) float64 { return float64(r.rss.RSS) }), "")
			cells := []string{name, vs}
			for _, f := range spreadFigures {
				lo, hi := minMax(runs, func(p [nSides]stepResult) float64 { return ratioOf(f(p[a]), f(p[k])) })
				cells = append(cells, span(fmtRatio(lo), fmtRatio(hi)))
			}
			spread.row(cells...)
		}
	}
	t.row()
	t.row("start and memory", "side", "ready", "", "", "", "", "", "", "RSS MiB", "")
	t.row("start, empty index", "crmauthz", fmtDur(rep.readyEmpty), "", "", "", "", "", "", "", "")
	t.row("snapshot load via API", "crmauthz", fmtDur(rep.snapshotLoad), "", "", "", "", "", "", fmtMiB(rep.snapshotPeak.HWM),
		"peak (VmHWM); index.db "+fmtMiB(rep.indexBytes>>10)+" MiB")
	t.row("restart on the index", "crmauthz", fmtDur(rep.readyRestart), "", "", "", "", "", "", fmtMiB(rep.crmauthzIdle.RSS), "idle")
	if !c.NoOPA {
		t.row("start with data.json", "opa", fmtDur(rep.opaReady), "", "", "", "", "", "", fmtMiB(rep.opaIdle.RSS),
			"idle; data.json "+fmtMiB(rep.opaDataBytes>>10)+" MiB")
	}
	t.row("start", "floor", fmtDur(rep.floorReady), "", "", "", "", "", "", fmtMiB(rep.floorIdle.RSS), "idle")
	if !c.NoOPA {
		t.row("ready / idle RSS", "crmauthz/opa", ratioDur(rep.readyRestart, rep.opaReady), "", "", "", "", "", "",
			ratio(float64(rep.crmauthzIdle.RSS), float64(rep.opaIdle.RSS)), "")
	}
	t.row("after the run", "crmauthz", "", "", "", "", "", "", "", fmtMiB(rep.crmauthzFinal.RSS),
		"anon "+fmtMiB(rep.crmauthzFinal.Anon)+", file "+fmtMiB(rep.crmauthzFinal.File))
	if c.vs() {
		t.row("after the run", "crmauthz-b", "", "", "", "", "", "", "", fmtMiB(rep.opaFinal.RSS),
			"anon "+fmtMiB(rep.opaFinal.Anon)+", file "+fmtMiB(rep.opaFinal.File))
	}
	if !c.NoOPA {
		t.row("after the run", "opa", "", "", "", "", "", "", "", fmtMiB(rep.opaFinal.RSS),
			"anon "+fmtMiB(rep.opaFinal.Anon)+", file "+fmtMiB(rep.opaFinal.File))
	}
	t.write(out)
	if c.Runs > 1 {
		fmt.Fprintf(out, "\nspread over the %d runs, min–max of each figure (ratios: each run's own)\n", c.Runs)
		spread.write(out)
	}
	if len(rep.evidence) > 0 {
		fmt.Fprintln(out, "\nthe tail's candidates, per step and side (medians over the runs; see BENCHMARKS.md, \"The tail\")")
		evidenceTable(rep).write(out)
		if t := fixedRateRuns(rep); t != nil {
			fmt.Fprintln(out, "\nthe fixed rate run by run: each side's p99 with the machine's steal and the rest of the machine's CPU during its step")
			t.write(out)
		}
	}
	if s := floorSummary(rep); s != "" {
		fmt.Fprintf(out, "\ncrmauthz ÷ floor: %s\n", s)
	}
	for _, line := range pairRuns(rep) {
		fmt.Fprintln(out, line)
	}
	fmt.Fprintln(out, "\nachieved/s: decisions answered (200 with a decision) per second; latencies from vegeta (request written → body read), of answered requests;")
	fmt.Fprintln(out, "CPU/decision: the server's user+system CPU time (/proc/PID/stat) during the step over the decisions answered;")
	fmt.Fprintln(out, "RSS: VmRSS of /proc/PID/status, peak sampled every 50 ms during the step; ratios: crmauthz/opa (below 1: crmauthz is faster or smaller,")
	fmt.Fprintln(out, "above 1 for achieved/s: crmauthz answers more). The load generator runs on the same cores as the server under test.")
	fmt.Fprintln(out, "floor: a bare net/http server (this tool, `crmauthz-bench floor`) that reads the body and answers a constant decision:")
	fmt.Fprintln(out, "the limit of these cores for a decision over HTTP; crmauthz/floor is how far crmauthz is from it (max rps: 1 is the")
	fmt.Fprintln(out, "limit; p99 at a fixed rate: 1 is the limit, above 1 is what crmauthz's work adds to the tail).")
	return nil
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func fmtMiB(kib int64) string {
	if kib <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(kib)/1024)
}

// span is "lo–hi", or "-" when neither was measured.
func span(lo, hi string) string {
	if lo == "-" && hi == "-" {
		return "-"
	}
	return lo + "–" + hi
}

func ratio(a, b float64) string { return fmtRatio(ratioOf(a, b)) }

// ratioOf is a/b, or 0 when either is not positive (not measured).
func ratioOf(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

func fmtRatio(r float64) string {
	if r <= 0 {
		return "-"
	}
	if r < 0.1 {
		return fmt.Sprintf("%.3f", r)
	}
	return fmt.Sprintf("%.2f", r)
}

func ratioDur(a, b time.Duration) string { return ratio(float64(a), float64(b)) }

// table aligns rows of cells: the first two columns and the last to the
// left, the others (numbers) to the right.
type table struct{ rows [][]string }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(out io.Writer) {
	var w []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(w) {
				w = append(w, 0)
			}
			w[i] = max(w[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", w[i]-utf8.RuneCountInString(c))
			switch {
			case i < 2 || i == len(w)-1:
				b.WriteString(c + pad)
			default:
				b.WriteString(pad + c)
			}
			if i < len(r)-1 {
				b.WriteString("  ")
			}
		}
		fmt.Fprintln(out, strings.TrimRight(b.String(), " "))
	}
}

// evidenceTable gives, for every step and side, the medians over the runs
// of the page faults of the server, the time its threads waited for a core
// per decision, crmauthz's garbage collections per second and the load
// generator's CPU time per decision, and the connections the generator
// opened to the side.
func evidenceTable(rep *report) *table {
	var t table
	t.row("step", "side", "minflt", "majflt", "run-queue wait/decision", "GC/s", "generator CPU/decision", "connections opened", "steal", "niced CPU")
	for i, runs := range rep.steps {
		if len(runs) == 0 || i >= len(rep.evidence) {
			continue
		}
		evs := rep.evidence[i]
		for k := range nSides {
			if runs[0][k].side == "" {
				continue
			}
			med := func(f func(stepResult, stepEvidence) float64) float64 {
				v := make([]float64, 0, len(runs))
				for j := range runs {
					if j < len(evs) {
						v = append(v, f(runs[j][k], evs[j][k]))
					}
				}
				return medianOf(v)
			}
			perDecision := func(d func(stepEvidence) time.Duration) string {
				return fmtDur(dur(med(func(r stepResult, e stepEvidence) float64 {
					if r.ok == 0 {
						return 0
					}
					return float64(d(e)) / float64(r.ok)
				})))
			}
			gc := "-"
			if g := med(func(r stepResult, e stepEvidence) float64 { return e.gcCycles }); g >= 0 {
				gc = fmt.Sprintf("%.1f", g/rep.cfg.Duration.Seconds())
			}
			t.row(runs[0][k].spec.name, runs[0][k].side,
				fmt.Sprintf("%.0f", med(func(_ stepResult, e stepEvidence) float64 { return float64(e.minflt) })),
				fmt.Sprintf("%.0f", med(func(_ stepResult, e stepEvidence) float64 { return float64(e.majflt) })),
				perDecision(func(e stepEvidence) time.Duration { return e.runWait }), gc,
				perDecision(func(e stepEvidence) time.Duration { return e.genCPU }),
				fmt.Sprintf("%.0f", med(func(_ stepResult, e stepEvidence) float64 { return float64(e.conns) })),
				fmtMachine(med(func(_ stepResult, e stepEvidence) float64 { return machineFigure(e.machine.ok, e.machine.steal) })),
				fmtMachine(med(func(_ stepResult, e stepEvidence) float64 { return machineFigure(e.machine.ok, e.machine.nice) })))
		}
	}
	return &t
}

// medianOf is the median of v (the mean of the two middle values for an
// even count); 0 for none.
func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// floorSummary is the ratios crmauthz ÷ floor the targets are
// stated in: max rps at each saturation step, p99 at each fixed rate; with
// several runs, the median of each run's ratio and the spread (min–max).
func floorSummary(rep *report) string {
	var parts []string
	for _, runs := range rep.steps {
		if len(runs) == 0 {
			continue
		}
		spec := runs[0][sideCrmauthz].spec
		f, what := achieved, "rps at "+spec.name
		if spec.rate > 0 {
			f, what = p99, "p99 at "+spec.name
		}
		r := func(p [nSides]stepResult) float64 { return ratioOf(f(p[sideCrmauthz]), f(p[sideFloor])) }
		part := what + " " + fmtRatio(median(runs, r))
		if len(runs) > 1 {
			lo, hi := minMax(runs, r)
			part += " (" + fmtRatio(lo) + "–" + fmtRatio(hi) + ")"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "; ")
}

// Figures of a step result, as numbers for median and minMax.
func achieved(r stepResult) float64 { return r.achieved }
func p50(r stepResult) float64      { return float64(r.p50) }
func p90(r stepResult) float64      { return float64(r.p90) }
func p99(r stepResult) float64      { return float64(r.p99) }
func p999(r stepResult) float64     { return float64(r.p999) }
func cpuPer(r stepResult) float64   { return float64(r.cpuPerDecision()) }
func dur(f float64) time.Duration   { return time.Duration(f) }

// spreadFigures are the figures of the spread table, in its column order.
var spreadFigures = []func(stepResult) float64{achieved, p50, p90, p99, p999, cpuPer}

// median of f over the runs (the mean of the two middle values for an even
// count); values ≤ 0 (not measured) are left out unless all are, then it is
// the first of them (so -1, "unknown", stays -1).
func median(runs [][nSides]stepResult, f func([nSides]stepResult) float64) float64 {
	var v []float64
	for _, p := range runs {
		if x := f(p); x > 0 {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		if len(runs) == 0 {
			return 0
		}
		return f(runs[0])
	}
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// medianAll is the median of f over all the runs (the lower middle value
// for an even count).
func medianAll(runs [][nSides]stepResult, f func([nSides]stepResult) float64) float64 {
	if len(runs) == 0 {
		return 0
	}
	v := make([]float64, 0, len(runs))
	for _, p := range runs {
		v = append(v, f(p))
	}
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

// minMax of f over the runs, values ≤ 0 (not measured) left out.
func minMax(runs [][nSides]stepResult, f func([nSides]stepResult) float64) (lo, hi float64) {
	for _, p := range runs {
		if x := f(p); x > 0 {
			if lo == 0 || x < lo {
				lo = x
			}
			hi = max(hi, x)
		}
	}
	return lo, hi
}
