package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// printReport writes the run's one table: every load step for both sides
// with the ratio crmauthz/opa, then readiness and idle memory.
func printReport(out io.Writer, rep *report) error {
	c := rep.cfg
	fmt.Fprintf(out, "crmauthz vs opa run --server (%s), %d records, %d users, %d locations; %s per step and side\n",
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

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\tside\tachieved/s\tp50\tp90\tp99\tp99.9\terrors\tRSS MiB\tcache hits\t")
	for _, pair := range rep.steps {
		for _, r := range pair {
			hits := ""
			if r.cacheHit >= 0 {
				hits = fmt.Sprintf("%.1f%%", 100*r.cacheHit)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n", r.spec.name, r.side, r.achieved,
				fmtDur(r.p50), fmtDur(r.p90), fmtDur(r.p99), fmtDur(r.p999), r.errs, fmtMiB(r.rss.RSS), hits)
		}
		a, o := pair[sideCrmauthz], pair[sideOPA]
		fmt.Fprintf(tw, "%s\tcrmauthz/opa\t%s\t%s\t%s\t%s\t%s\t\t%s\t\t\n", a.spec.name,
			ratio(a.achieved, o.achieved), ratioDur(a.p50, o.p50), ratioDur(a.p90, o.p90), ratioDur(a.p99, o.p99),
			ratioDur(a.p999, o.p999), ratio(float64(a.rss.RSS), float64(o.rss.RSS)))
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t\t")
	fmt.Fprintln(tw, "start and memory\tside\tready\t\t\t\t\t\tRSS MiB\t\t")
	fmt.Fprintf(tw, "start, empty index\tcrmauthz\t%s\t\t\t\t\t\t\t\t\n", fmtDur(rep.readyEmpty))
	fmt.Fprintf(tw, "snapshot load via API\tcrmauthz\t%s\t\t\t\t\t\t%s\tpeak (VmHWM)\t\n", fmtDur(rep.snapshotLoad), fmtMiB(rep.snapshotPeak.HWM))
	fmt.Fprintf(tw, "restart on the index\tcrmauthz\t%s\t\t\t\t\t\t%s\tidle\t\n", fmtDur(rep.readyRestart), fmtMiB(rep.crmauthzIdle.RSS))
	fmt.Fprintf(tw, "start with data.json\topa\t%s\t\t\t\t\t\t%s\tidle\t\n", fmtDur(rep.opaReady), fmtMiB(rep.opaIdle.RSS))
	fmt.Fprintf(tw, "ready / idle RSS\tcrmauthz/opa\t%s\t\t\t\t\t\t%s\t\t\n", ratioDur(rep.readyRestart, rep.opaReady),
		ratio(float64(rep.crmauthzIdle.RSS), float64(rep.opaIdle.RSS)))
	fmt.Fprintf(tw, "after the run\tcrmauthz\t\t\t\t\t\t\t%s\tanon %s, file %s\t\n", fmtMiB(rep.crmauthzFinal.RSS), fmtMiB(rep.crmauthzFinal.Anon), fmtMiB(rep.crmauthzFinal.File))
	fmt.Fprintf(tw, "after the run\topa\t\t\t\t\t\t\t%s\tanon %s, file %s\t\n", fmtMiB(rep.opaFinal.RSS), fmtMiB(rep.opaFinal.Anon), fmtMiB(rep.opaFinal.File))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nachieved/s: decisions answered (200 with a decision) per second; latencies from vegeta (request written → body read), of answered requests;")
	fmt.Fprintln(out, "RSS: VmRSS of /proc/PID/status, peak sampled every 50 ms during the step; ratios: crmauthz/opa (below 1: crmauthz is faster or smaller,")
	fmt.Fprintln(out, "above 1 for achieved/s: crmauthz answers more). The load generator runs on the same cores as the server under test.")
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
