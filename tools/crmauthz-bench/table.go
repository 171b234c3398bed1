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
	fmt.Fprintf(out, "load average (1/5/15 min) at start %s, at end %s\n", rep.loadStart, rep.loadEnd)
	agree := "identical"
	if rep.disagree > 0 {
		agree = fmt.Sprintf("%d DISAGREE (the first below)", rep.disagree)
	}
	reasons := make([]string, 0, len(rep.reasons))
	for r, n := range rep.reasons {
		reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
	}
	slices.Sort(reasons)
	fmt.Fprintf(out, "agreement: %d decisions of the mix asked of both, %s; reasons: %s\n", rep.checked, agree, strings.Join(reasons, ", "))
	for _, m := range rep.mismatches {
		fmt.Fprintf(out, "  %s\n", m)
	}
	fmt.Fprintln(out)

	var t table
	t.row("step", "side", "achieved/s", "p50", "p90", "p99", "p99.9", "errors", "CPU/decision", "RSS MiB", "cache hits")
	for _, pair := range rep.steps {
		for _, r := range pair {
			hits := ""
			if r.cacheHit >= 0 {
				hits = fmt.Sprintf("%.1f%%", 100*r.cacheHit)
			}
			t.row(r.spec.name, r.side, fmt.Sprintf("%.0f", r.achieved), fmtDur(r.p50), fmtDur(r.p90), fmtDur(r.p99),
				fmtDur(r.p999), fmt.Sprint(r.errs), fmtDur(r.cpuPerDecision()), fmtMiB(r.rss.RSS), hits)
		}
		a := pair[sideCrmauthz]
		for _, k := range []int{sideOPA, sideFloor} {
			o := pair[k]
			t.row(a.spec.name, "crmauthz/"+o.side, ratio(a.achieved, o.achieved), ratioDur(a.p50, o.p50), ratioDur(a.p90, o.p90),
				ratioDur(a.p99, o.p99), ratioDur(a.p999, o.p999), "", ratioDur(a.cpuPerDecision(), o.cpuPerDecision()),
				ratio(float64(a.rss.RSS), float64(o.rss.RSS)), "")
		}
	}
	t.row()
	t.row("start and memory", "side", "ready", "", "", "", "", "", "", "RSS MiB", "")
	t.row("start, empty index", "crmauthz", fmtDur(rep.readyEmpty), "", "", "", "", "", "", "", "")
	t.row("snapshot load via API", "crmauthz", fmtDur(rep.snapshotLoad), "", "", "", "", "", "", fmtMiB(rep.snapshotPeak.HWM),
		"peak (VmHWM); index.db "+fmtMiB(rep.indexBytes>>10)+" MiB")
	t.row("restart on the index", "crmauthz", fmtDur(rep.readyRestart), "", "", "", "", "", "", fmtMiB(rep.crmauthzIdle.RSS), "idle")
	t.row("start with data.json", "opa", fmtDur(rep.opaReady), "", "", "", "", "", "", fmtMiB(rep.opaIdle.RSS),
		"idle; data.json "+fmtMiB(rep.opaDataBytes>>10)+" MiB")
	t.row("start", "floor", fmtDur(rep.floorReady), "", "", "", "", "", "", fmtMiB(rep.floorIdle.RSS), "idle")
	t.row("ready / idle RSS", "crmauthz/opa", ratioDur(rep.readyRestart, rep.opaReady), "", "", "", "", "", "",
		ratio(float64(rep.crmauthzIdle.RSS), float64(rep.opaIdle.RSS)), "")
	t.row("after the run", "crmauthz", "", "", "", "", "", "", "", fmtMiB(rep.crmauthzFinal.RSS),
		"anon "+fmtMiB(rep.crmauthzFinal.Anon)+", file "+fmtMiB(rep.crmauthzFinal.File))
	t.row("after the run", "opa", "", "", "", "", "", "", "", fmtMiB(rep.opaFinal.RSS),
		"anon "+fmtMiB(rep.opaFinal.Anon)+", file "+fmtMiB(rep.opaFinal.File))
	t.write(out)
	if s := floorSummary(rep); s != "" {
		fmt.Fprintf(out, "\ncrmauthz ÷ floor: %s\n", s)
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

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "-"
	}
	r := a / b
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

// floorSummary is the ratios crmauthz ÷ floor the targets are
// stated in: max rps at each saturation step, p99 at each fixed rate.
func floorSummary(rep *report) string {
	var parts []string
	for _, pair := range rep.steps {
		a, f := pair[sideCrmauthz], pair[sideFloor]
		if a.spec.rate > 0 {
			parts = append(parts, fmt.Sprintf("p99 at %s %s", a.spec.name, ratioDur(a.p99, f.p99)))
		} else {
			parts = append(parts, fmt.Sprintf("rps at %s %s", a.spec.name, ratio(a.achieved, f.achieved)))
		}
	}
	return strings.Join(parts, "; ")
}
