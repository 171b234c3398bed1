package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
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

func TestSliceSequence(t *testing.T) {
	for _, tc := range []struct {
		name  string
		order []int
		n     int
		want  []int
	}{
		{"one slice: the step's order", []int{0, 2}, 1, []int{0, 2}},
		{"one slice, reversed", []int{2, 0}, 1, []int{2, 0}},
		{"two sides", []int{0, 2}, 4, []int{0, 2, 0, 2, 0, 2, 0, 2}},
		{"two sides, the floor first", []int{2, 0}, 3, []int{2, 0, 2, 0, 2, 0}},
		{"three sides", []int{0, 1, 2}, 2, []int{0, 1, 2, 0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			order := slices.Clone(tc.order)
			if got := sliceSequence(order, tc.n); !slices.Equal(got, tc.want) {
				t.Errorf("sliceSequence(%v, %d) = %v, want %v", tc.order, tc.n, got, tc.want)
			}
			if !slices.Equal(order, tc.order) {
				t.Errorf("the step's order was changed: %v", order)
			}
		})
	}
}

// timedSpans lays out a step's slices in time as the step runner does: each
// slice after the pause and the lead-in, then its timed part. It returns the
// side of each timed part and its start (from the step's start).
func timedSpans(seq []int, cut slicing) (side []int, start []time.Duration) {
	slot := cut.pause + cut.leadIn + cut.dur
	for i, k := range seq {
		side = append(side, k)
		start = append(start, time.Duration(i)*slot+cut.pause+cut.leadIn)
	}
	return side, start
}

// episodeShares is how much of each side's timed time an episode of the
// machine from from to to covers.
func episodeShares(side []int, start []time.Duration, dur, from, to time.Duration) [nSides]time.Duration {
	var got [nSides]time.Duration
	for i, k := range side {
		lo, hi := max(start[i], from), min(start[i]+dur, to)
		if hi > lo {
			got[k] += hi - lo
		}
	}
	return got
}

// TestSliceSequenceSpreadsEpisodes checks the reason for the order on the
// step's real timeline (8 slices of 500 ms, 125 ms pause, 100 ms lead-in):
// an episode of the machine of any length starting anywhere covers no
// side's timed time by more than one slice beyond any other side's, so it
// cannot fall on two slices of one side and miss the other (A B B A … let
// it cover two of B's slices, 1 s of B's 4 s, and nothing of A's).
func TestSliceSequenceSpreadsEpisodes(t *testing.T) {
	cut := (&runConfig{Slices: 8, Duration: 4 * time.Second, Pause: time.Second, SliceWarmup: 100 * time.Millisecond}).slicing()
	for _, order := range [][]int{{sideCrmauthz, sideFloor}, {sideFloor, sideCrmauthz}, {sideCrmauthz, sideOPA, sideFloor}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			side, start := timedSpans(sliceSequence(order, cut.n), cut)
			end := start[len(start)-1] + cut.dur
			const step = 5 * time.Millisecond
			worst := time.Duration(0)
			for from := time.Duration(0); from < end; from += step {
				for to := from + step; to <= end; to += step {
					sh := episodeShares(side, start, cut.dur, from, to)
					for _, a := range order {
						for _, b := range order {
							worst = max(worst, sh[a]-sh[b])
						}
					}
				}
			}
			if worst > cut.dur {
				t.Errorf("an episode covered one side's timed time by %s more than another's, more than one slice (%s)", worst, cut.dur)
			}
			if worst < cut.dur {
				t.Errorf("the worst episode covered one side by only %s more than another: the model is off", worst)
			}
		})
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

// fakeSide serves decisions from an httptest server in this process, after
// sleeping delay, and counts the requests it answered.
func fakeSide(t testing.TB, name string, delay time.Duration) (*side, *atomic.Int64) {
	t.Helper()
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(delay)
		served.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"allow":true,"reason":"owner"}`))
	}))
	t.Cleanup(srv.Close)
	s := &side{name: name, url: srv.URL + "/v1/decision", root: srv.URL, pid: os.Getpid(), pool: newConnLog(false)}
	t.Cleanup(func() { s.pool.close() })
	return s, &served
}

// runSliced runs one step of spec on crmauthz and the floor (fake sides
// delayed as given), cut as cut says.
func runSliced(t testing.TB, cut slicing, spec stepSpec, order []int, crmDelay, floorDelay time.Duration) ([nSides][]stepResult, [nSides]stepEvidence, [nSides]*atomic.Int64) {
	t.Helper()
	crm, crmServed := fakeSide(t, "crmauthz", crmDelay)
	floor, floorServed := fakeSide(t, "floor", floorDelay)
	r := &stepRunner{sides: [nSides]*side{crm, nil, floor}, w: dataset.New(dataset.Config{Records: 1000, Users: 50, Locations: 5}),
		timeout: 10 * time.Second, cut: cut}
	parts, ev, err := r.run(t.Context(), spec, order)
	if err != nil {
		t.Fatal(err)
	}
	return parts, ev, [nSides]*atomic.Int64{crmServed, nil, floorServed}
}

// TestStepRunnerSlices checks the sliced step: the sides take turns A B A B
// …, each side gets the same slices (as many, as long, at the same
// rate), no slice sends more than its own share (nothing carried over from
// the slice before), every slice after a lead-in whose requests are not
// counted, and each side's evidence summed over its slices.
func TestStepRunnerSlices(t *testing.T) {
	const rate, n = 400, 4
	cut := slicing{n: n, dur: 150 * time.Millisecond, pause: 20 * time.Millisecond, leadIn: 50 * time.Millisecond}
	for _, tc := range []struct {
		name  string
		order []int
		want  []string // the sides in the order their slices ran
	}{
		{"crmauthz first", []int{sideCrmauthz, sideOPA, sideFloor}, []string{"crmauthz", "floor", "crmauthz", "floor", "crmauthz", "floor", "crmauthz", "floor"}},
		{"floor first", []int{sideFloor, sideOPA, sideCrmauthz}, []string{"floor", "crmauthz", "floor", "crmauthz", "floor", "crmauthz", "floor", "crmauthz"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := stepSpec{name: "400/s", rate: rate, base: 100_000_000}
			parts, ev, served := runSliced(t, cut, spec, tc.order, 0, 0)
			if len(parts[sideOPA]) != 0 {
				t.Fatalf("a side left out ran %d slices", len(parts[sideOPA]))
			}
			var all []stepResult
			perSlice := rate * int(cut.dur) / int(time.Second) // 60
			for _, k := range []int{sideCrmauthz, sideFloor} {
				if len(parts[k]) != n {
					t.Fatalf("%s ran %d slices, want %d", parts[k][0].side, len(parts[k]), n)
				}
				sent := 0
				for j, p := range parts[k] {
					if p.spec.base != spec.base+uint64(j)*sliceStride {
						t.Errorf("%s slice %d asked from %d, want fresh requests from %d", p.side, j, p.spec.base, spec.base+uint64(j)*sliceStride)
					}
					// vegeta sends one at 0 and one every 1/rate up to the
					// slice's end: at most perSlice+1, never a catch-up of
					// requests owed by the slice before.
					if p.sent > perSlice+1 || p.sent < perSlice/2 || p.errs != 0 {
						t.Errorf("%s slice %d: sent %d, errors %d (%s); want about %d", p.side, j, p.sent, p.errs, p.firstErr, perSlice)
					}
					sent += p.sent
				}
				// the lead-ins were served too, but not counted
				if got := served[k].Load(); got <= int64(sent) {
					t.Errorf("%s served %d requests, the timed slices sent %d: no lead-in", parts[k][0].side, got, sent)
				}
				if !ev[k].machine.ok || ev[k].genCPU <= 0 {
					t.Errorf("%s: evidence not summed: %+v", parts[k][0].side, ev[k])
				}
				all = append(all, parts[k]...)
			}
			// Both sides got the same share: as many slices' worth of
			// requests, within less than half a slice (vegeta's last tick of
			// a slice may fall either side of its end, and on a loaded
			// machine its ticks fall behind by a few per slice, on either
			// side: under a load average of 15 the sides differed by 8 and
			// 9 of ~230); a slice more or less on one side is 60.
			sentOf := func(k int) int { return sliceResults(parts[k]).sent }
			if d := sentOf(sideCrmauthz) - sentOf(sideFloor); d < -perSlice/2 || d > perSlice/2 {
				t.Errorf("crmauthz sent %d, the floor %d", sentOf(sideCrmauthz), sentOf(sideFloor))
			}
			slices.SortFunc(all, func(a, b stepResult) int { return cmp.Compare(a.mono, b.mono) })
			var got []string
			for _, p := range all {
				got = append(got, p.side)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("slices ran %v, want %v", got, tc.want)
			}
		})
	}
}

// TestStepRunnerOneSlice: --slices 1 is each side's whole step in one go,
// with no lead-in.
func TestStepRunnerOneSlice(t *testing.T) {
	cut := (&runConfig{Slices: 1, Duration: 200 * time.Millisecond, Pause: 10 * time.Millisecond, SliceWarmup: time.Second}).slicing()
	if cut != (slicing{n: 1, dur: 200 * time.Millisecond, pause: 10 * time.Millisecond}) {
		t.Fatalf("--slices 1 cut as %+v", cut)
	}
	parts, _, served := runSliced(t, cut, stepSpec{name: "300/s", rate: 300, base: 100_000_000}, []int{sideCrmauthz, sideOPA, sideFloor}, 0, 0)
	for _, k := range []int{sideCrmauthz, sideFloor} {
		if len(parts[k]) != 1 || int64(parts[k][0].sent) != served[k].Load() {
			t.Errorf("side %d: %d parts, sent %d, served %d; want one part and no lead-in", k, len(parts[k]), parts[k][0].sent, served[k].Load())
		}
	}
}

// TestSlicing checks how --slices, --pause and --slice-warmup cut a step.
func TestSlicing(t *testing.T) {
	got := (&runConfig{Slices: 8, Duration: 4 * time.Second, Pause: time.Second, SliceWarmup: 100 * time.Millisecond}).slicing()
	want := slicing{n: 8, dur: 500 * time.Millisecond, pause: 125 * time.Millisecond, leadIn: 100 * time.Millisecond}
	if got != want {
		t.Errorf("8 slices of 4s: %+v, want %+v", got, want)
	}
	if got := (&runConfig{Slices: 4, Duration: time.Second, Pause: 0}).slicing(); got.pause != 100*time.Millisecond || got.dur != 250*time.Millisecond {
		t.Errorf("the pause of a slice is at least 100ms: %+v", got)
	}
}

// TestSliceResultsExact: pooling slices loses nothing. Every quantile of the
// pooled slices is the one of all their latencies in one list, however the
// latencies were cut and in whichever order the slices come.
func TestSliceResultsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{2, 3, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var all []time.Duration
			parts := make([]stepResult, n)
			for i := 0; i < 5000; i++ {
				// a long tail: most below 1 ms, some up to 400 ms
				d := time.Duration(rng.ExpFloat64()*float64(200*time.Microsecond)) + 1
				if rng.IntN(100) == 0 {
					d = time.Duration(rng.Int64N(int64(400 * time.Millisecond)))
				}
				all = append(all, d)
				j := rng.IntN(n)
				parts[j].lat = append(parts[j].lat, d)
				parts[j].ok++
			}
			for j := range parts {
				slices.Sort(parts[j].lat)
				parts[j].span = time.Second
			}
			rng.Shuffle(n, func(a, b int) { parts[a], parts[b] = parts[b], parts[a] })
			slices.Sort(all)
			got := sliceResults(parts)
			for _, q := range []struct {
				name string
				got  time.Duration
				p    float64
			}{{"p50", got.p50, 0.5}, {"p90", got.p90, 0.9}, {"p99", got.p99, 0.99}, {"p99.9", got.p999, 0.999}, {"max", got.max, 1}} {
				if want := quantile(all, q.p); q.got != want {
					t.Errorf("%s of the pooled slices %v, of all latencies %v", q.name, q.got, want)
				}
			}
			if !slices.Equal(got.lat, all) || got.ok != len(all) {
				t.Errorf("pooled %d latencies (%d answered), want all %d", len(got.lat), got.ok, len(all))
			}
		})
	}
}

// TestSlicedSlowSide: a side slower in every slice is slower in the pooled
// figures. crmauthz's fake sleeps 20 ms per request, the floor's answers at
// once; so every latency of crmauthz is at least 20 ms, and its p99 and
// the ratio to the floor's show it, at a fixed rate and at saturation.
func TestSlicedSlowSide(t *testing.T) {
	const delay = 20 * time.Millisecond
	cut := slicing{n: 4, dur: 200 * time.Millisecond, pause: 10 * time.Millisecond, leadIn: 50 * time.Millisecond}
	for _, spec := range []stepSpec{
		{name: "200/s", rate: 200, base: 100_000_000},
		{name: "max, 4 conn", workers: 4, base: 200_000_000},
	} {
		t.Run(spec.name, func(t *testing.T) {
			parts, _, _ := runSliced(t, cut, spec, []int{sideFloor, sideOPA, sideCrmauthz}, delay, 0)
			crm, floor := sliceResults(parts[sideCrmauthz]), sliceResults(parts[sideFloor])
			if crm.ok == 0 || floor.ok == 0 || crm.errs+floor.errs != 0 {
				t.Fatalf("answered %d and %d, errors %d (%s) and %d", crm.ok, floor.ok, crm.errs, crm.firstErr, floor.errs)
			}
			if crm.p50 < delay || crm.p99 < delay || crm.lat[0] < delay {
				t.Errorf("crmauthz's p50 %v, p99 %v, fastest %v: below the handler's sleep of %v", crm.p50, crm.p99, crm.lat[0], delay)
			}
			// The pooled p99 is the p99 of every slice's latencies together.
			var all []time.Duration
			for _, p := range parts[sideCrmauthz] {
				all = append(all, p.lat...)
			}
			slices.Sort(all)
			if crm.p99 != quantile(all, 0.99) {
				t.Errorf("pooled p99 %v, of all slices' latencies %v", crm.p99, quantile(all, 0.99))
			}
			if r := ratioOf(float64(crm.p99), float64(floor.p99)); !(r > 1) {
				t.Errorf("p99 crmauthz ÷ floor = %v (%v ÷ %v), want > 1", r, crm.p99, floor.p99)
			}
			if spec.rate == 0 && !(crm.achieved < floor.achieved) {
				t.Errorf("at saturation crmauthz answered %.0f/s, the floor %.0f/s; want fewer", crm.achieved, floor.achieved)
			}
		})
	}
}

// TestSliceFlags: --slices and --slice-warmup out of range are refused
// before anything starts.
func TestSliceFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no slices", []string{"--slices", "0"}, "--slices"},
		{"too many slices", []string{"--slices", "11"}, "--slices"},
		{"slices shorter than 100ms", []string{"--slices", "8", "--duration", "400ms"}, "--slices"},
		{"negative lead-in", []string{"--slices", "8", "--slice-warmup", "-1ms"}, "--slice-warmup"},
		{"lead-in too long", []string{"--slices", "8", "--slice-warmup", "11s"}, "--slice-warmup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := mainErr(append([]string{"run"}, tc.args...), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run %v: %v, want an error about %s", tc.args, err, tc.want)
			}
		})
	}
}

// TestAutoSlices: without --slices, 8 slices of at least 500 ms, fewer for
// shorter steps, one with --cpu-profile.
func TestAutoSlices(t *testing.T) {
	for _, tc := range []struct {
		dur      time.Duration
		profiled bool
		want     int
	}{
		{4 * time.Second, false, 8}, {10 * time.Second, false, 8}, {2 * time.Second, false, 4},
		{time.Second, false, 2}, {300 * time.Millisecond, false, 1}, {4 * time.Second, true, 1},
	} {
		if got := autoSlices(tc.dur, tc.profiled); got != tc.want {
			t.Errorf("autoSlices(%v, profiled %v) = %d, want %d", tc.dur, tc.profiled, got, tc.want)
		}
	}
}

// TestLogSlicesStampsEachSlice: each slice's p99 in the log is followed by
// the wall-clock time the slice began, to set beside a server's own log.
func TestLogSlicesStampsEachSlice(t *testing.T) {
	var log bytes.Buffer
	at := time.Date(2026, 12, 7, 7, 43, 46, 256_000_000, time.UTC)
	var parts [nSides][]stepResult
	parts[sideCrmauthz] = []stepResult{
		{side: "crmauthz", p99: 47 * time.Millisecond, began: at},
		{side: "crmauthz", p99: 3 * time.Millisecond, began: at.Add(739 * time.Millisecond)},
	}
	logSlices(runConfig{Log: &log}, 3, "5000/s", parts)
	if want := "crmauthz p99 by slice: 47.0ms@07:43:46.256 3.00ms@07:43:46.995"; !strings.Contains(log.String(), want) {
		t.Errorf("log %q: want %q", log.String(), want)
	}
}
