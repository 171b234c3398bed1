package main

import (
	"fmt"
	"strings"
)

// The method's own spread (BENCHMARKS.md, "Session 11"): with --vs-floor a
// second floor, and with --vs-crmauthz a second crmauthz (the same binary
// for an A/A series), take OPA's place, and the report gives the ratio of
// the pair's p99 at each fixed rate run by run, with how many runs fall
// beyond the bound of 2 (or under its mirror, 0.5): how often the
// method alone, between identical servers, gives a run above 2×.

// pairBound is the "no run worse than 2×" (issue 17) and its
// mirror 1/pairBound, the same distance the other way.
const pairBound = 2.0

// ratioPairs are the ratios the table gives, each [numerator, denominator]
// side: crmauthz against the second side (OPA, crmauthz-b) and the floor,
// or with --vs-floor crmauthz against the floor and the floor against
// floor-b.
func (c *runConfig) ratioPairs() [][2]int {
	if c.VsFloor {
		return [][2]int{{sideCrmauthz, sideFloor}, {sideFloor, sideOPA}}
	}
	return [][2]int{{sideCrmauthz, sideOPA}, {sideCrmauthz, sideFloor}}
}

// pairSides is the pair of servers of the same kind in a run: the floor and
// floor-b (--vs-floor), or crmauthz and crmauthz-b (--vs-crmauthz,
// --vs-crmauthz-args); ok is false with OPA or no second side.
func (c *runConfig) pairSides() (a, b int, ok bool) {
	switch {
	case c.VsFloor:
		return sideFloor, sideOPA, true
	case c.vs():
		return sideCrmauthz, sideOPA, true
	}
	return 0, 0, false
}

// ratioTally counts the ratios above bound and under 1/bound; ratios ≤ 0
// (not measured) are left out of both and of n.
func ratioTally(ratios []float64, bound float64) (above, below, n int) {
	for _, r := range ratios {
		if r <= 0 {
			continue
		}
		n++
		if r > bound {
			above++
		}
		if r < 1/bound {
			below++
		}
	}
	return above, below, n
}

// pairRuns gives, for every fixed-rate step of a run with a pair of
// servers of the same kind (pairSides), a line with the ratio of the
// pair's p99 run by run, its median and spread, and how many runs fall
// above pairBound or under its mirror; nil without such a pair.
func pairRuns(rep *report) []string {
	a, b, ok := rep.cfg.pairSides()
	if !ok {
		return nil
	}
	var lines []string
	for _, runs := range rep.steps {
		if len(runs) == 0 || runs[0][a].spec.rate <= 0 || runs[0][a].side == "" || runs[0][b].side == "" {
			continue
		}
		ratios := make([]float64, len(runs))
		cells := make([]string, len(runs))
		for j, p := range runs {
			ratios[j] = ratioOf(float64(p[a].p99), float64(p[b].p99))
			cells[j] = fmtRatio(ratios[j])
		}
		r := func(p [nSides]stepResult) float64 { return ratioOf(float64(p[a].p99), float64(p[b].p99)) }
		lo, hi := minMax(runs, r)
		above, below, n := ratioTally(ratios, pairBound)
		lines = append(lines, fmt.Sprintf("%s ÷ %s, p99 at %s: %s (%s–%s); above %.0f in %d of %d runs, under %.1f in %d; by run: %s",
			runs[0][a].side, runs[0][b].side, runs[0][a].spec.name, fmtRatio(median(runs, r)), fmtRatio(lo), fmtRatio(hi),
			pairBound, above, n, 1/pairBound, below, strings.Join(cells, " ")))
	}
	return lines
}
