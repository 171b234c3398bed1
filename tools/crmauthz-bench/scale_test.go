package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestScaleFlags: bad flags of `scale` are errors naming the flag, before anything starts.
func TestScaleFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--records", ""}, "--records"},
		{[]string{"--records", "1000,-5"}, "--records"},
		{[]string{"--opa", "maybe"}, "--opa"},
		{[]string{"--rate", "0"}, "--rate"},
		{[]string{"--duration", "0s"}, "--duration"},
		{[]string{"--opa-mem-share", "1.5"}, "--opa-mem-share"},
		{[]string{"--rounds", "-1"}, "--rounds"},
		{[]string{"--rounds", "0"}, "--rounds"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := mainErr(append([]string{"scale"}, tc.args...), &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
			if out.Len() != 0 {
				t.Fatalf("printed %q", out.String())
			}
		})
	}
}

// TestPrintScale: one row per start of a build and size, OPA's note where it did not run, the p99
// ratio of the two largest sizes.
func TestPrintScale(t *testing.T) {
	ms := time.Millisecond
	points := []scalePoint{
		{records: 1000, indexBytes: 5e6, snapshotLoad: 2 * time.Second,
			serves: []scaleServe{{build: "crmauthz", round: 1, fixed: stepResult{p50: ms, p99: 2 * ms}, sat: stepResult{achieved: 5000},
				idle: memStatus{Anon: 10 << 10, RSS: 40 << 10}, underLoad: memPeak{Anon: 20 << 10, RSS: 60 << 10},
				readyRestart: 30 * ms, cached: 0.5, ev: stepEvidence{minflt: 1234, majflt: 56, gcCycles: 7}}},
			opaRan: true, opaFixed: stepResult{p50: 2 * ms, p99: 9 * ms}, opaSat: stepResult{achieved: 1000},
			opaIdle: memStatus{Anon: 100 << 10}, opaReady: time.Second},
		{records: 10000, reused: true,
			serves:  []scaleServe{{build: "crmauthz", round: 1, fixed: stepResult{p50: ms, p99: 3 * ms}, sat: stepResult{achieved: 4000, errs: 2, firstErr: "500"}, cached: -1}},
			opaNote: "not run: needs ~9 GiB"},
	}
	var out bytes.Buffer
	printScale(&out, scaleConfig{run: runConfig{Users: 10, Locations: 2, Duration: time.Second}, Rate: 100, Workers: 4},
		points, "1 1 1", "2 2 2")
	got := out.String()
	for _, want := range []string{
		"records  side", "1000     crmauthz", "opa", "5000", "not run: needs ~9 GiB", "1234", "50%", "kept",
		"2 errors (500)", "p99 at 10000 records ÷ at 1000: 1.50",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

// TestPrintScaleBuilds: with two builds, each build's rows, its median p99 and spread over its
// starts, and its own ratio of the two sizes.
func TestPrintScaleBuilds(t *testing.T) {
	ms := time.Millisecond
	serve := func(build string, round int, p99 time.Duration) scaleServe {
		return scaleServe{build: build, round: round, fixed: stepResult{p50: ms / 2, p99: p99}, sat: stepResult{achieved: 1000}, cached: 1}
	}
	points := []scalePoint{
		{records: 1000, serves: []scaleServe{serve("a", 1, ms), serve("b", 1, 2*ms), serve("b", 2, 2*ms), serve("a", 2, 3*ms), serve("a", 3, 2*ms), serve("b", 3, 4*ms)}},
		{records: 10000, serves: []scaleServe{serve("a", 1, 4*ms), serve("b", 1, 3*ms), serve("b", 2, 3*ms), serve("a", 2, 4*ms), serve("a", 3, 9*ms), serve("b", 3, 3*ms)}},
	}
	var out bytes.Buffer
	printScale(&out, scaleConfig{run: runConfig{Crmauthz: "/x/a"}, Builds: []string{"/y/b"}, Rate: 100, Workers: 4}, points, "1", "2")
	got := out.String()
	for _, want := range []string{
		"1000 records  a                    p99 2.00ms (1.00ms–3.00ms)", "1000 records  b                    p99 2.00ms (2.00ms–4.00ms)",
		"10000 records  a                    p99 4.00ms (4.00ms–9.00ms)", "over 3 starts",
		"p99 at 10000 records ÷ at 1000 (a): 2.00", "p99 at 10000 records ÷ at 1000 (b): 1.50",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

// TestScaleOrder: the builds go forwards in even rounds and backwards in odd ones.
func TestScaleOrder(t *testing.T) {
	for _, tc := range []struct {
		builds, round int
		want          []int
	}{
		{1, 0, []int{0}}, {1, 1, []int{0}}, {2, 0, []int{0, 1}}, {2, 1, []int{1, 0}}, {3, 2, []int{0, 1, 2}}, {3, 3, []int{2, 1, 0}},
	} {
		t.Run(fmt.Sprint(tc.builds, tc.round), func(t *testing.T) {
			if got := scaleOrder(tc.builds, tc.round); !slices.Equal(got, tc.want) {
				t.Fatalf("scaleOrder(%d, %d) = %v, want %v", tc.builds, tc.round, got, tc.want)
			}
		})
	}
}

// TestScaleLabels: one build is "crmauthz"; several are named by their files, twins numbered.
func TestScaleLabels(t *testing.T) {
	for _, tc := range []struct {
		bins, want []string
	}{
		{[]string{"/a/crmauthz"}, []string{"crmauthz"}},
		{[]string{"/a/crm-1", "/b/crm-2"}, []string{"crm-1", "crm-2"}},
		{[]string{"/a/crmauthz", "/b/crmauthz", "/c/crmauthz"}, []string{"crmauthz", "crmauthz#2", "crmauthz#3"}},
	} {
		t.Run(strings.Join(tc.bins, ","), func(t *testing.T) {
			if got := scaleLabels(tc.bins); !slices.Equal(got, tc.want) {
				t.Fatalf("scaleLabels(%v) = %v, want %v", tc.bins, got, tc.want)
			}
		})
	}
}

// TestPageCacheShare: a file just written is in the page cache, and not once dropped (after it
// is on disk: dirty pages stay); an empty one is an error.
func TestPageCacheShare(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	if err := writeFile(full, func(w io.Writer) error {
		if _, err := w.Write(bytes.Repeat([]byte("x"), 1<<20)); err != nil {
			return err
		}
		return w.(*os.File).Sync()
	}); err != nil {
		t.Fatal(err)
	}
	if c, err := pageCacheShare(full); err != nil || c <= 0 || c > 1 {
		t.Fatalf("pageCacheShare(just written) = %v, %v; want a share in (0, 1]", c, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil || fs.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs (%v): its pages are the file, nothing to drop", dir, err)
	}
	if err := dropPageCache(full); err != nil {
		t.Fatal(err)
	}
	if c, err := pageCacheShare(full); err != nil || c != 0 {
		t.Fatalf("pageCacheShare(dropped) = %v, %v; want 0", c, err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pageCacheShare(empty); err == nil {
		t.Fatal("pageCacheShare(empty file): no error")
	}
}
