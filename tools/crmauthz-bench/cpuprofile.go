package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// --cpu-profile: crmauthz's CPU profile across the load steps, for `make
// pgo` (cmd/crmauthz/default.pgo, docs/operations.md "Profiling"). crmauthz
// is started with --pprof; each of its steps (and slices) runs while
// /debug/pprof/profile samples it, and the step profiles are merged into
// one file with `go tool pprof -proto`.

// maxProfiledStep is the longest step (or slice) --cpu-profile can take:
// one profile request must end before the admin listener's write timeout
// (30 s; net/http/pprof refuses a duration that reaches it).
const maxProfiledStep = 25 * time.Second

// profileLead is how long a profile starts before its step: the request
// must reach crmauthz, which must start profiling, before the load does.
const profileLead = 50 * time.Millisecond

// cpuProfiler takes one profile per step of crmauthz (nil: --cpu-profile
// not given, every method does nothing but run the step).
type cpuProfiler struct {
	url   string // crmauthz's /debug/pprof/profile
	dir   string // the step profiles
	files []string
}

// newCPUProfiler profiles the crmauthz whose admin API is at admin,
// keeping the step profiles in dir.
func newCPUProfiler(admin, dir string) (*cpuProfiler, error) {
	dir, err := filepath.Abs(dir) // go tool pprof runs in the repository
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &cpuProfiler{url: admin + "/debug/pprof/profile", dir: dir}, nil
}

// during runs step, a load step of dur, while a CPU profile of crmauthz is
// taken (when on is set and p is not nil), and keeps that profile.
func (p *cpuProfiler) during(ctx context.Context, on bool, dur time.Duration, step func()) error {
	if p == nil || !on {
		step()
		return nil
	}
	secs := int(math.Ceil((dur + profileLead).Seconds()))
	file := filepath.Join(p.dir, fmt.Sprintf("step-%03d.pprof", len(p.files)+1))
	done := make(chan error, 1)
	go func() { done <- fetchProfile(ctx, fmt.Sprintf("%s?seconds=%d", p.url, secs), file) }()
	time.Sleep(profileLead)
	step()
	if err := <-done; err != nil {
		return fmt.Errorf("--cpu-profile: %w", err)
	}
	p.files = append(p.files, file)
	return nil
}

// fetchProfile saves the profile GET url answers into file.
func fetchProfile(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s %s (is crmauthz started with --pprof?)", url, resp.Status, b)
	}
	return writeFile(file, func(out io.Writer) error {
		_, err := io.Copy(out, resp.Body)
		return err
	})
}

// save merges the step profiles into out (`go tool pprof -proto`, run in
// dir, the repository).
func (p *cpuProfiler) save(ctx context.Context, dir, out string) error {
	if p == nil {
		return nil
	}
	if len(p.files) == 0 {
		return fmt.Errorf("--cpu-profile: no step of crmauthz was profiled")
	}
	merged, err := goCmd(ctx, dir, nil, append([]string{"tool", "pprof", "-proto"}, p.files...)...)
	if err != nil {
		return fmt.Errorf("--cpu-profile: merging the step profiles: %w", err)
	}
	return os.WriteFile(out, merged, 0o644)
}
