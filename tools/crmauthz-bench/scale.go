package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// scaleConfig configures `crmauthz-bench scale`: the same measurements at
// several world sizes (BENCHMARKS.md, "Scale curve").
type scaleConfig struct {
	run      runConfig // binaries, users, locations, timeout, log; Records is per point
	Sizes    []int     // records of each point
	Rate     int       // the fixed-rate step, requests per second
	Workers  int       // the saturation step: concurrent requests
	OPA      string    // "auto": where it fits in memory (extrapolated); "off"; "on": every size
	OPAShare float64   // auto: start OPA when its extrapolated RSS is below this share of MemAvailable
	// Builds are more crmauthz binaries that serve each size's index in turn with run.Crmauthz
	// (which loads it): two or more builds compared on one loaded index (scaleserve.go).
	Builds []string
	// Rounds is how many times each build serves each index, in the order A B, B A, A B, …
	// (0: load the index only).
	Rounds int
	// IndexDir, if set, keeps each size's data directory under IndexDir/<records> and serves an
	// index already there instead of loading the world again.
	IndexDir string
	// DropCache drops index.db from the page cache before each start (a cold index).
	DropCache bool
}

// scalePoint is what one world size measured.
type scalePoint struct {
	records      int
	reused       bool // the index was already in --index-dir (not loaded by this run)
	snapshotLoad time.Duration
	loadPeak     memPeak // crmauthz while loading the snapshot
	indexBytes   int64
	serves       []scaleServe // each start of a build on the loaded index, in order

	opaRan      bool
	opaNote     string // why OPA did not run, and what it would need
	opaData     int64  // bytes of data.json
	opaReady    time.Duration
	opaIdle     memStatus
	opaLoad     memPeak
	opaFixed    stepResult
	opaSat      stepResult
	opaAnonKiB  int64 // the highest anon RSS OPA reached (idle or under load)
	opaPerRecKB float64
}

// memPeak is the highest anon RSS and VmRSS a process reached while sampled
// (each its own maximum).
type memPeak struct{ Anon, RSS int64 }

type peakSampler struct {
	stop, done chan struct{}
	peak       memPeak
}

func samplePeak(pid int, every time.Duration) *peakSampler {
	s := &peakSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if m, err := readMem(pid); err == nil {
				s.peak.Anon, s.peak.RSS = max(s.peak.Anon, m.Anon), max(s.peak.RSS, m.RSS)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *peakSampler) finish() memPeak {
	close(s.stop)
	<-s.done
	return s.peak
}

// scale measures every size in turn, smallest first, each in its own work
// directory that is removed before the next (a 10,000,000-record index is
// several GB).
func scale(ctx context.Context, cfg scaleConfig) ([]scalePoint, error) {
	rc := cfg.run
	rc.defaults()
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	work := rc.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "crmauthz-scale-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	if rc.Crmauthz == "" {
		rc.logf("building crmauthz")
		if rc.Crmauthz, err = buildCrmauthz(ctx, root, work); err != nil {
			return nil, err
		}
	}
	if cfg.OPA != "off" && rc.OPA == "" {
		if rc.OPA, err = opaBinary(ctx, root, rc.OPACache, rc.Log); err != nil {
			return nil, err
		}
	}
	var points []scalePoint
	var opaPerRec float64 // KiB of anon RSS per record, from the largest size OPA ran at
	for _, n := range cfg.Sizes {
		dir := filepath.Join(work, strconv.Itoa(n))
		if cfg.IndexDir != "" {
			dir = filepath.Join(cfg.IndexDir, strconv.Itoa(n))
		}
		p, err := scaleCrmauthz(ctx, cfg, rc, n, dir)
		if err == nil {
			err = scaleOPA(ctx, cfg, rc, root, dir, &p, opaPerRec)
		}
		if cfg.IndexDir == "" {
			os.RemoveAll(dir)
		}
		if err != nil {
			return points, fmt.Errorf("%d records: %w", n, err)
		}
		if p.opaRan {
			opaPerRec = p.opaPerRecKB
		}
		points = append(points, p)
	}
	return points, nil
}

// scaleCrmauthz loads a world of n records into a new crmauthz (unless --index-dir holds its
// index already), then serves it with each build, Rounds times (scaleserve.go).
func scaleCrmauthz(ctx context.Context, cfg scaleConfig, rc runConfig, n int, dir string) (scalePoint, error) {
	p := scalePoint{records: n}
	w := dataset.New(dataset.Config{Records: n, Users: rc.Users, Locations: rc.Locations})
	dataDir := filepath.Join(dir, "crmauthz")
	indexFile := filepath.Join(dataDir, "index.db")
	if _, err := os.Stat(indexFile); err == nil && cfg.IndexDir != "" {
		p.reused = true
		rc.logf("%d records: serving the index already in %s", n, dataDir)
	} else if err := scaleLoad(ctx, rc, w, dataDir, &p); err != nil {
		return p, err
	}
	if fi, err := os.Stat(indexFile); err == nil {
		p.indexBytes = fi.Size()
	}
	err := scaleServes(ctx, cfg, rc, w, dataDir, &p)
	return p, err
}

// scaleLoad starts crmauthz on an empty data directory, loads the world through the snapshot
// API (its time and peak memory into p) and stops it.
func scaleLoad(ctx context.Context, rc runConfig, w dataset.World, dataDir string, p *scalePoint) error {
	// The upload of a large world may take longer than the server's default --snapshot-timeout
	// on a busy machine (10,000,000 records: over 15 minutes at a load average of 25).
	loading := rc
	loading.CrmauthzArgs = append(slices.Clip(rc.CrmauthzArgs), "--snapshot-timeout", "3h")
	crm, side, err := startCrmauthz(ctx, loading, dataDir)
	if err != nil {
		return err
	}
	rc.logf("%d records: loading the snapshot", p.records)
	peak := samplePeak(crm.pid(), 20*time.Millisecond)
	t0 := time.Now()
	err = putSnapshot(ctx, side.admin+"/v1/replication/snapshot", w)
	p.snapshotLoad = time.Since(t0)
	p.loadPeak = peak.finish()
	if m, merr := readMem(crm.pid()); merr == nil {
		p.loadPeak.RSS = max(p.loadPeak.RSS, m.HWM)
	}
	if err != nil {
		err = fmt.Errorf("%w; crmauthz's output ends: %s", err, crm.stderr.String())
	}
	if serr := crm.stop(60 * time.Second); err == nil {
		err = serr
	}
	if err == nil {
		rc.logf("%d records: loaded in %s (peak anon %s MiB)", p.records, p.snapshotLoad.Round(time.Millisecond), fmtMiB(p.loadPeak.Anon))
	}
	return err
}

// scaleSteps runs the warm-up, the fixed-rate step and the saturation step
// against one side, sampling its memory throughout; ev is what the fixed-rate
// step cost the server in page faults, run-queue wait and collections.
func scaleSteps(ctx context.Context, cfg scaleConfig, rc runConfig, s *side, w dataset.World) (fixed, sat stepResult, peak memPeak, ev stepEvidence) {
	ps := samplePeak(s.pid, 50*time.Millisecond)
	if rc.Warmup > 0 {
		runStep(ctx, s, stepSpec{name: "warmup", rate: rc.WarmupRate, base: 50_000_000}, w, rc.Warmup, rc.Timeout, false)
	}
	time.Sleep(rc.Pause)
	before := sampleProc(ctx, s)
	fixed = runStep(ctx, s, stepSpec{name: fmt.Sprintf("%d/s", cfg.Rate), rate: cfg.Rate, base: 100_000_000}, w, rc.Duration, rc.Timeout, false)
	ev = before.to(sampleProc(ctx, s))
	rc.logf("%-8s %d records  %d/s: p50 %s p99 %s p99.9 %s max %s errors %d; minflt %d majflt %d gc %.0f",
		s.name, w.Config().Records, cfg.Rate, fmtDur(fixed.p50), fmtDur(fixed.p99), fmtDur(fixed.p999), fmtDur(fixed.max), fixed.errs,
		ev.minflt, ev.majflt, ev.gcCycles)
	time.Sleep(rc.Pause)
	sat = runStep(ctx, s, stepSpec{name: "max", workers: cfg.Workers, base: 200_000_000}, w, rc.Duration, rc.Timeout, false)
	rc.logf("%-8s %d records  max, %d conn: %.0f/s errors %d", s.name, w.Config().Records, cfg.Workers, sat.achieved, sat.errs)
	return fixed, sat, ps.finish(), ev
}

// scaleOPA runs OPA at this size when it fits (or says what it would need).
// perRec is the anon KiB per record OPA took at the largest size so far (0:
// none yet).
func scaleOPA(ctx context.Context, cfg scaleConfig, rc runConfig, root, dir string, p *scalePoint, perRec float64) error {
	switch {
	case cfg.OPA == "off":
		p.opaNote = "not run (--opa off)"
		return nil
	case cfg.OPA == "auto" && perRec > 0:
		need := int64(perRec * float64(p.records))
		avail := memAvailable()
		if avail > 0 && float64(need) > cfg.OPAShare*float64(avail) {
			p.opaNote = fmt.Sprintf("not run: needs ~%.1f GiB of anon RSS (%.2f KiB per record, extrapolated), "+
				"%.1f GiB available", float64(need)/(1<<20), perRec, float64(avail)/(1<<20))
			return nil
		}
	}
	w := dataset.New(dataset.Config{Records: p.records, Users: rc.Users, Locations: rc.Locations})
	data := filepath.Join(dir, "opa", "data.json")
	if err := os.MkdirAll(filepath.Dir(data), 0o755); err != nil {
		return err
	}
	if err := writeFile(data, func(out io.Writer) error {
		bw := bufio.NewWriterSize(out, 1<<20)
		if err := writeOPAData(bw, w); err != nil {
			return err
		}
		return bw.Flush()
	}); err != nil {
		return err
	}
	if fi, err := os.Stat(data); err == nil {
		p.opaData = fi.Size()
	}
	rc.logf("%d records: starting opa on %.0f MB of data.json", p.records, float64(p.opaData)/1e6)
	opa, side, err := startOPA(ctx, rc, root, data)
	if err != nil {
		return err
	}
	defer opa.stop(30 * time.Second)
	p.opaRan = true
	p.opaReady = side.ready
	time.Sleep(time.Second)
	p.opaIdle, _ = readMem(opa.pid())
	p.opaFixed, p.opaSat, p.opaLoad, _ = scaleSteps(ctx, cfg, rc, &side.side, w)
	p.opaAnonKiB = max(p.opaIdle.Anon, p.opaLoad.Anon)
	p.opaPerRecKB = float64(p.opaAnonKiB) / float64(p.records)
	return nil
}

// memAvailable is MemAvailable from /proc/meminfo in KiB (0 if unknown).
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// errNote says how many requests of the two steps failed, if any.
func errNote(a, b stepResult) string {
	if a.errs+b.errs == 0 {
		return ""
	}
	first := a.firstErr
	if first == "" {
		first = b.firstErr
	}
	return fmt.Sprintf("%d errors (%s)", a.errs+b.errs, first)
}

// scaleMain is `crmauthz-bench scale`.
func scaleMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("records", "100000,1000000,10000000", "world sizes, records, comma-separated")
	var cfg scaleConfig
	rc := &cfg.run
	fs.IntVar(&rc.Users, "users", 10_000, "users in the world")
	fs.IntVar(&rc.Locations, "locations", 5, "locations in the world")
	fs.IntVar(&cfg.Rate, "rate", 1000, "the fixed-rate step, requests per second")
	fs.IntVar(&cfg.Workers, "workers", 32, "the saturation step: concurrent requests")
	fs.DurationVar(&rc.Duration, "duration", 10*time.Second, "length of each step")
	fs.DurationVar(&rc.Warmup, "warmup", 2*time.Second, "warm-up at --rate before the steps (0: none)")
	fs.DurationVar(&rc.Pause, "pause", time.Second, "pause before each step")
	fs.StringVar(&cfg.OPA, "opa", "auto", "run OPA beside crmauthz: auto (where its extrapolated memory fits), on, off")
	fs.Float64Var(&cfg.OPAShare, "opa-mem-share", 0.5, "auto: the share of MemAvailable OPA may take")
	fs.StringVar(&rc.Crmauthz, "crmauthz", "", "crmauthz binary (default: build ./cmd/crmauthz into the work directory)")
	env := fs.String("crmauthz-env", "", "extra environment of crmauthz, comma-separated")
	extra := fs.String("crmauthz-args", "", "extra flags of crmauthz serve, space-separated")
	fs.StringVar(&rc.OPA, "opa-bin", "", "opa binary (default: build the version go.mod requires into --opa-cache)")
	fs.StringVar(&rc.OPACache, "opa-cache", "", "directory of built opa binaries (default: .cache/opa in the repository)")
	policy := fs.String("opa-policy", "bench/opa/authz.rego,policies/crmauthz/config.rego", "Rego files opa serves, relative to the repository")
	fs.StringVar(&rc.WorkDir, "work-dir", "", "directory for the indexes and data files (default: a temporary one, removed afterwards)")
	vs := fs.String("vs-crmauthz", "", "more crmauthz binaries, comma-separated, serving each size's index in turn with --crmauthz (which loads it; "+
		"take the oldest build, whose index every later one reads): builds compared on one loaded index")
	fs.IntVar(&cfg.Rounds, "rounds", 1, "starts of each build on each index, in the order A B, B A, A B, … (0: load the index only, with --index-dir)")
	fs.StringVar(&cfg.IndexDir, "index-dir", "", "keep each size's data directory in DIR/<records> and serve an index already there instead of loading it again")
	fs.BoolVar(&cfg.DropCache, "drop-cache", false, "drop index.db from the page cache before each start of a build (a cold index, as after a reboot)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.Sizes, err = intList(*sizes); err != nil || len(cfg.Sizes) == 0 {
		return fmt.Errorf("--records: %q: need one or more positive sizes (%v)", *sizes, err)
	}
	switch {
	case cfg.OPA != "auto" && cfg.OPA != "on" && cfg.OPA != "off":
		return fmt.Errorf("--opa: %q is not auto, on or off", cfg.OPA)
	case cfg.Rate <= 0 || cfg.Workers <= 0:
		return fmt.Errorf("--rate and --workers must be positive")
	case rc.Duration <= 0:
		return fmt.Errorf("--duration must be positive")
	case cfg.OPAShare <= 0 || cfg.OPAShare > 1:
		return fmt.Errorf("--opa-mem-share: %v is not in (0, 1]", cfg.OPAShare)
	case cfg.Rounds < 0 || cfg.Rounds == 0 && cfg.IndexDir == "":
		return fmt.Errorf("--rounds: %d: need one or more (0, load only, needs --index-dir to keep the index)", cfg.Rounds)
	}
	if *vs != "" {
		cfg.Builds = strings.Split(*vs, ",")
	}
	rc.OPAPolicy = strings.Split(*policy, ",")
	if *env != "" {
		rc.CrmauthzEnv = strings.Split(*env, ",")
	}
	rc.CrmauthzArgs = strings.Fields(*extra)
	if err := defaultOPACache(&rc.OPACache); err != nil {
		return err
	}
	rc.Log = stderr
	debug.SetGCPercent(400) // as `run`: the load generator leaves more of the cores to the servers
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := loadAvg()
	points, err := scale(ctx, cfg)
	if len(points) > 0 {
		printScale(stdout, cfg, points, start, loadAvg())
	}
	return err
}
