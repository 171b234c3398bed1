package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
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

// TestPrintScale: one row per side and size, OPA's note where it did not run, the p99 ratio of the
// two largest sizes.
func TestPrintScale(t *testing.T) {
	ms := time.Millisecond
	points := []scalePoint{
		{records: 1000, fixed: stepResult{p50: ms, p99: 2 * ms}, sat: stepResult{achieved: 5000},
			idle: memStatus{Anon: 10 << 10, RSS: 40 << 10}, underLoad: memPeak{Anon: 20 << 10, RSS: 60 << 10},
			indexBytes: 5e6, snapshotLoad: 2 * time.Second, readyRestart: 30 * ms,
			opaRan: true, opaFixed: stepResult{p50: 2 * ms, p99: 9 * ms}, opaSat: stepResult{achieved: 1000},
			opaIdle: memStatus{Anon: 100 << 10}, opaReady: time.Second},
		{records: 10000, fixed: stepResult{p50: ms, p99: 3 * ms}, sat: stepResult{achieved: 4000, errs: 2, firstErr: "500"},
			opaNote: "not run: needs ~9 GiB"},
	}
	var out bytes.Buffer
	printScale(&out, scaleConfig{run: runConfig{Users: 10, Locations: 2, Duration: time.Second}, Rate: 100, Workers: 4},
		points, "1 1 1", "2 2 2")
	got := out.String()
	for _, want := range []string{
		"records  side", "1000     crmauthz", "opa", "5000", "not run: needs ~9 GiB",
		"2 errors (500)", "p99 at 10000 records ÷ at 1000: 1.50",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}
