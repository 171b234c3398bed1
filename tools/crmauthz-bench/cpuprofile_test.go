package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCPUProfileFlag: a step longer than one profile can take is refused
// before anything starts.
func TestCPUProfileFlag(t *testing.T) {
	var out, errOut bytes.Buffer
	err := mainErr([]string{"run", "--cpu-profile", filepath.Join(t.TempDir(), "p"), "--duration", "30s"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--cpu-profile") {
		t.Fatalf("err = %v, want one naming --cpu-profile", err)
	}
	if out.Len() != 0 {
		t.Fatalf("printed %q", out.String())
	}
}

// TestCPUProfile: with --cpu-profile, the real crmauthz is started with
// --pprof and the profiles of its steps (two steps, two slices each) are
// merged into one that go tool pprof reads, with samples of the decision
// handler in it.
func TestCPUProfile(t *testing.T) {
	crm := testCrmauthz(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cpu.pprof")
	var log bytes.Buffer
	rep, err := run(t.Context(), runConfig{
		Records: 3000, Users: 120, Locations: 5,
		// Steps long and busy enough for the decision handler to be sampled (100 Hz) even
		// when this test's load generator runs under -race on a busy machine: with 400 ms
		// steps at 500/s and 4 workers, CI's run once held 100 ms of samples, none in it.
		Duration: time.Second, Rates: []int{2000}, SatWorkers: []int{8}, Slices: 2,
		Timeout: 10 * time.Second, NoOPA: true, Crmauthz: crm, CPUProfile: file,
		WorkDir: t.TempDir(), Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "CPU profile of 4 steps saved to "+file) {
		t.Errorf("the log does not say 4 step profiles were saved:\n%s", log.String())
	}
	for _, runs := range rep.steps {
		if r := runs[0][sideCrmauthz]; r.ok == 0 || r.errs != 0 {
			t.Errorf("%s: crmauthz answered %d, errors %d (%s)", r.spec.name, r.ok, r.errs, r.firstErr)
		}
	}
	if fi, err := os.Stat(file); err != nil || fi.Size() == 0 {
		t.Fatalf("the profile: %v", err)
	}
	top, err := goCmd(t.Context(), root, nil, "tool", "pprof", "-top", "-cum", file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(top), "serveDecision") {
		t.Errorf("the profile has no sample in the decision handler:\n%.3000s", top)
	}
}
