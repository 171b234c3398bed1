package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// Serving one loaded index with several builds (`scale --vs-crmauthz B --rounds N`): a
// 10,000,000-record load takes three of a run's four minutes, and runs of one build on
// different loads (and hours) differ by more than builds do (BENCHMARKS.md, "Scale curve",
// session 10). So each build restarts in turn on the same index file, A B, B A, A B, …, each
// start with its own warm-up and steps.

// scaleServe is one start of one build on a loaded index.
type scaleServe struct {
	build        string // the build's label (scaleLabels)
	round        int    // 1-based
	readyRestart time.Duration
	cached       float64   // share of index.db in the page cache before the start; -1 unknown
	idle         memStatus // after the start, before any request
	underLoad    memPeak   // during the fixed-rate and saturation steps
	fixed, sat   stepResult
	ev           stepEvidence // what the fixed-rate step cost the server
}

// scaleBuilds are the binaries serving each index: --crmauthz first (it loads the index), then
// each --vs-crmauthz.
func scaleBuilds(cfg scaleConfig) []string {
	return append([]string{cfg.run.Crmauthz}, cfg.Builds...)
}

// scaleLabels names each build in the tables: "crmauthz" when it is alone, else its file name
// (with "#2", "#3", … when two have the same name).
func scaleLabels(bins []string) []string {
	if len(bins) == 1 {
		return []string{"crmauthz"}
	}
	seen := map[string]int{}
	out := make([]string, len(bins))
	for i, b := range bins {
		l := filepath.Base(b)
		seen[l]++
		if seen[l] > 1 {
			l += "#" + strconv.Itoa(seen[l])
		}
		out[i] = l
	}
	return out
}

// scaleOrder is the order of the builds in round r (0-based): forwards in even rounds,
// backwards in odd ones, so that no build always goes first after the load.
func scaleOrder(builds, r int) []int {
	o := make([]int, builds)
	for i := range o {
		o[i] = i
	}
	if r%2 == 1 {
		slices.Reverse(o)
	}
	return o
}

// scaleServes starts each build on the index in dataDir, Rounds times, and measures each start.
func scaleServes(ctx context.Context, cfg scaleConfig, rc runConfig, w dataset.World, dataDir string, p *scalePoint) error {
	bins := scaleBuilds(cfg)
	labels := scaleLabels(bins)
	for r := 0; r < cfg.Rounds; r++ {
		for _, b := range scaleOrder(len(bins), r) {
			sv := scaleServe{build: labels[b], round: r + 1, cached: -1}
			if cfg.DropCache {
				if err := dropPageCache(filepath.Join(dataDir, "index.db")); err != nil {
					return err
				}
			}
			if c, err := pageCacheShare(filepath.Join(dataDir, "index.db")); err == nil {
				sv.cached = c
			}
			brc := rc
			brc.Crmauthz = bins[b]
			crm, side, err := startCrmauthz(ctx, brc, dataDir)
			if err != nil {
				return fmt.Errorf("%s: %w", labels[b], err)
			}
			sv.readyRestart = side.ready
			time.Sleep(time.Second)
			sv.idle, _ = readMem(crm.pid())
			side.side.name = labels[b]
			rc.logf("%d records: %s (round %d) ready in %s; idle anon %s MiB; index.db %.0f %% in the page cache",
				p.records, labels[b], r+1, sv.readyRestart, fmtMiB(sv.idle.Anon), 100*sv.cached)
			sv.fixed, sv.sat, sv.underLoad, sv.ev = scaleSteps(ctx, cfg, rc, &side.side, w)
			err = crm.stop(30 * time.Second)
			p.serves = append(p.serves, sv)
			if err != nil {
				return fmt.Errorf("%s: %w", labels[b], err)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return nil
}

// dropPageCache asks the kernel to drop the file's clean pages from the page cache
// (POSIX_FADV_DONTNEED; pages another process maps stay): a start on a cold index, as after a
// reboot or when other files pushed it out.
func dropPageCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop %s from the page cache: %w", path, err)
	}
	return nil
}

// pageCacheShare is the share of the file's pages in the page cache (mincore over a mapping
// of it; nothing is read).
func pageCacheShare(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, fmt.Errorf("%s: empty or unreadable (%v)", path, err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return 0, errno
	}
	in := 0
	for _, v := range vec {
		in += int(v & 1)
	}
	return float64(in) / float64(len(vec)), nil
}

func printScale(out io.Writer, cfg scaleConfig, points []scalePoint, loadStart, loadEnd string) {
	rc := cfg.run
	fmt.Fprintf(out, "scale curve: %d users, %d locations; %s per step; fixed rate %d/s, saturation %d connections\n",
		rc.Users, rc.Locations, rc.Duration, cfg.Rate, cfg.Workers)
	fmt.Fprintf(out, "load average (1/5/15 min) at start %s, at end %s; memory in MiB (anon = RssAnon, RSS = VmRSS)\n\n", loadStart, loadEnd)
	var t table
	t.row("records", "side", "round", "p50", "p99", "p99.9", "max rps", "CPU/dec", "runq", "minflt", "majflt", "gc", "cached",
		"anon idle", "anon load", "RSS idle", "RSS load", "index/data MB", "load s", "load peak anon", "load peak RSS", "ready", "note")
	for _, p := range points {
		load := []string{fmt.Sprintf("%.0f", float64(p.indexBytes)/1e6), fmt.Sprintf("%.1f", p.snapshotLoad.Seconds()),
			fmtMiB(p.loadPeak.Anon), fmtMiB(p.loadPeak.RSS)}
		if p.reused {
			load[1], load[2], load[3] = "kept", "-", "-"
		}
		rec := strconv.Itoa(p.records)
		for i, s := range p.serves {
			if i > 0 {
				rec = ""
			}
			t.row(append(append([]string{rec, s.build, strconv.Itoa(s.round), fmtDur(s.fixed.p50), fmtDur(s.fixed.p99), fmtDur(s.fixed.p999),
				fmt.Sprintf("%.0f", s.sat.achieved), fmtDur(s.fixed.cpuPerDecision()), fmtDur(s.ev.runWait), strconv.FormatInt(s.ev.minflt, 10), strconv.FormatInt(s.ev.majflt, 10),
				fmtCount(s.ev.gcCycles), fmtShare(s.cached), fmtMiB(s.idle.Anon), fmtMiB(s.underLoad.Anon), fmtMiB(s.idle.RSS), fmtMiB(s.underLoad.RSS)},
				load...), fmtDur(s.readyRestart), errNote(s.fixed, s.sat))...)
		}
		if len(p.serves) == 0 {
			t.row(append(append([]string{rec, "crmauthz", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"}, load...), "-", "not served (--rounds 0)")...)
		}
		if p.opaRan {
			t.row("", "opa", "-", fmtDur(p.opaFixed.p50), fmtDur(p.opaFixed.p99), fmtDur(p.opaFixed.p999), fmt.Sprintf("%.0f", p.opaSat.achieved),
				"-", "-", "-", "-", "-", "-", fmtMiB(p.opaIdle.Anon), fmtMiB(p.opaLoad.Anon), fmtMiB(p.opaIdle.RSS), fmtMiB(p.opaLoad.RSS),
				fmt.Sprintf("%.0f", float64(p.opaData)/1e6), "-", "-", "-", fmtDur(p.opaReady), errNote(p.opaFixed, p.opaSat))
		} else {
			t.row("", "opa", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", p.opaNote)
		}
	}
	t.write(out)
	fmt.Fprintln(out, "\nindex/data: crmauthz's index.db, OPA's data.json; load: PUT /v1/replication/snapshot (crmauthz; kept: the index of")
	fmt.Fprintln(out, "--index-dir, not loaded by this run); ready: restart on the loaded index until /health/ready (crmauthz), start with")
	fmt.Fprintln(out, "data.json until /health (OPA, which parses and stores it all). During the fixed-rate step: CPU/dec, the server's CPU")
	fmt.Fprintln(out, "time per decision; runq, the time its threads waited for a core; minflt, majflt, gc, its page faults and collections.")
	fmt.Fprintln(out, "cached: the share of index.db in the page cache before the start (--drop-cache: after dropping it).")
	printScaleSummary(out, scaleLabels(scaleBuilds(cfg)), points)
}

// printScaleSummary gives each build's median p99 at the fixed rate (min–max over its starts) and
// max rps at each size, and its p99 at the largest size ÷ at the one before (medians).
func printScaleSummary(out io.Writer, labels []string, points []scalePoint) {
	fmt.Fprintln(out)
	med := map[string][]float64{} // label → median p99 per point
	for _, p := range points {
		for _, l := range labels {
			var p99, p50, rps []float64
			for _, s := range p.serves {
				if s.build == l {
					p99, p50, rps = append(p99, float64(s.fixed.p99)), append(p50, float64(s.fixed.p50)), append(rps, s.sat.achieved)
				}
			}
			med[l] = append(med[l], medianOf(slices.Clone(p99)))
			if len(p99) < 2 {
				continue
			}
			fmt.Fprintf(out, "%d records  %-20s p99 %s (%s–%s), p50 %s, max rps %.0f (%.0f–%.0f) over %d starts\n", p.records, l,
				fmtDur(time.Duration(medianOf(slices.Clone(p99)))), fmtDur(time.Duration(slices.Min(p99))), fmtDur(time.Duration(slices.Max(p99))),
				fmtDur(time.Duration(medianOf(p50))), medianOf(slices.Clone(rps)), slices.Min(rps), slices.Max(rps), len(p99))
		}
	}
	if n := len(points); n > 1 {
		for _, l := range labels {
			last, prev := med[l][n-1], med[l][n-2]
			who := ""
			if len(labels) > 1 {
				who = " (" + l + ")"
			}
			fmt.Fprintf(out, "p99 at %d records ÷ at %d%s: %s\n", points[n-1].records, points[n-2].records, who, ratio(last, prev))
		}
	}
}

// fmtCount is a count, or "-" when unknown (negative).
func fmtCount(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// fmtShare is a share in per cent, or "-" when unknown (negative).
func fmtShare(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}
