package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseAutogroup(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		nice int
		ok   bool
	}{
		{"/autogroup-1189 nice 0\n", "/autogroup-1189", 0, true},
		{"/autogroup-7 nice -10", "/autogroup-7", -10, true},
		{"/autogroup-7 nice x", "", 0, false},
		{"/autogroup-7 0", "", 0, false},
		{"", "", 0, false},
		{"/cgroup-7 nice 0", "", 0, false},
	} {
		name, nice, err := parseAutogroup(tc.in)
		if (err == nil) != tc.ok || name != tc.name || nice != tc.nice {
			t.Errorf("parseAutogroup(%q) = %q, %d, %v; want %q, %d, ok %v", tc.in, name, nice, err, tc.name, tc.nice, tc.ok)
		}
	}
}

// TestAutogroupNiceFlag: a nice out of range is refused before anything
// starts.
func TestAutogroupNiceFlag(t *testing.T) {
	for _, n := range []string{"-21", "20"} {
		var out bytes.Buffer
		err := mainErr([]string{"run", "--autogroup-nice", n}, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "--autogroup-nice") {
			t.Errorf("--autogroup-nice %s: %v, want an error about it", n, err)
		}
	}
}

// TestReportAutogroup: the report names the tool's autogroup and its nice
// when the run knew them, and says nothing of it otherwise.
func TestReportAutogroup(t *testing.T) {
	rep := &report{cfg: runConfig{Duration: time.Second, Runs: 1, NoOPA: true}, reasons: map[string]int{}}
	var b bytes.Buffer
	if err := printReport(&b, rep); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "autogroup") {
		t.Errorf("an autogroup line without one:\n%s", b.String())
	}
	rep.autogroup = "/autogroup-7, nice -15 (was 0)"
	b.Reset()
	if err := printReport(&b, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "the tool's autogroup (its servers' too): /autogroup-7, nice -15 (was 0)\n") {
		t.Errorf("no autogroup line in\n%s", b.String())
	}
}
