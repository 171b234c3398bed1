package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// runConfig configures one benchmark run (the flags of `crmauthz-bench run`).
type runConfig struct {
	Records, Users, Locations int

	Duration   time.Duration // per step and side
	Warmup     time.Duration // per side, at WarmupRate, before the first step
	WarmupRate int
	Pause      time.Duration // between two attacks (lets the previous one's connections and garbage go)
	Rates      []int         // fixed-rate steps
	SatWorkers []int         // one saturation step per entry: that many concurrent requests
	HotSet     int           // > 0: a saturation step over that many distinct requests (decision cache hits)
	Runs       int           // the steps are run that many times over the same servers (medians and spread)
	Check      int           // requests of the mix both sides must agree on
	Timeout    time.Duration // per request
	// Endpoint is how the load asks crmauthz and the floor (gateway.go):
	// "decision" (POST /v1/decision, the default), or a gateway's request,
	// "forward-auth", "ext-authz-http" or "ext-authz-grpc" (grpc.go), which
	// OPA does not serve.
	Endpoint string

	Crmauthz     string   // crmauthz binary; "" builds ./cmd/crmauthz
	CrmauthzEnv  []string // extra environment of crmauthz (GOGC=…, GOMEMLIMIT=…)
	CrmauthzArgs []string // extra flags of crmauthz serve
	OPA          string   // opa binary; "" builds the version of go.mod into OPACache
	OPACache     string
	OPAPolicy    []string // Rego files OPA serves
	NoOPA        bool     // leave OPA out: crmauthz and the floor only (no agreement check)
	// VsArgs, if set, puts in OPA's place a second crmauthz, "crmauthz-b",
	// serving a copy of the index with CrmauthzArgs and these flags (e.g.
	// "--decision-log FILE"): the cost of a setting, measured in one run.
	VsArgs []string
	// VsCrmauthz, if set, is crmauthz-b's binary (default: Crmauthz): two
	// builds measured in one run, alone or with VsArgs.
	VsCrmauthz string
	// VsFloor puts in OPA's place a second floor server, "floor-b": the
	// floor measured against itself (an A/A series, BENCHMARKS.md "Session
	// 11"), so that the spread the method gives identical servers can be
	// read beside crmauthz ÷ floor. Not with VsArgs or VsCrmauthz.
	VsFloor bool
	// Slices > 1 cuts each step of each side into that many slices, run
	// interleaved with the other sides', each after an untimed lead-in of
	// SliceWarmup (slices.go).
	Slices      int
	SliceWarmup time.Duration
	// Settle is the most each slice (each step with --slices 1) waits, after
	// its pause, for every server to be idle (settle.go); 0: no wait.
	Settle time.Duration
	// ServerCPUs and GeneratorCPUs, when set, pin the servers and this
	// tool to those CPUs (taskset lists, slices.go).
	ServerCPUs, GeneratorCPUs string
	// RequestsOut, if set, is a CSV file every request of every step is
	// written to (requests.go).
	RequestsOut string
	// ServerLogs, if set, is a directory each server's output (with
	// GODEBUG=gctrace=1 in the environment, its collections) is kept in,
	// NAME-PID.log (procs.go).
	ServerLogs string
	// SampleOut, if set, is a CSV file the machine is sampled into every
	// SampleEvery during the load steps (sampler.go).
	SampleOut   string
	SampleEvery time.Duration
	// AutogroupNice, if set, is the nice this tool's autogroup (and so its
	// servers') gets for the run (autogroup.go).
	AutogroupNice *int
	// started is when this tool started, on CLOCK_MONOTONIC: the origin of
	// its own gctrace lines (--sample-out).
	started time.Duration
	// procName is the name of the crmauthz started with this configuration
	// in logs ("" = crmauthz; crmauthz-b's is crmauthz-b).
	procName string
	// CPUProfile, if set, is a file crmauthz's CPU profile across the load
	// steps is saved to; crmauthz runs with --pprof (cpuprofile.go).
	CPUProfile string
	// ColdConnections gives every step (and slice) of every side its own
	// client, so that each starts without a connection (the method before
	// session 5); by default each side has one warm pool for the run.
	ColdConnections bool
	Floor           string // executable of this tool, started as `floor`; "" = os.Executable()
	WorkDir         string // "" = a new temporary directory, removed at the end
	Log             io.Writer
}

// report is everything a run measured.
type report struct {
	cfg        runConfig
	loadStart  string
	loadEnd    string
	autogroup  string // the tool's autogroup and its nice (--autogroup-nice); "": autogroups off
	opaVersion string

	// crmauthz
	readyEmpty    time.Duration // start on an empty index → /health/ready 200
	snapshotLoad  time.Duration // PUT /v1/replication/snapshot of the world
	snapshotPeak  memStatus     // VmHWM after the load
	indexBytes    int64         // size of index.db
	readyRestart  time.Duration // restart on the loaded index → ready
	crmauthzIdle  memStatus
	crmauthzFinal memStatus
	// opa
	opaDataWrite time.Duration // writing data.json (not OPA's time)
	opaDataBytes int64
	opaReady     time.Duration // start with data.json → /health 200 (includes loading the data)
	opaIdle      memStatus
	opaFinal     memStatus
	// floor
	floorReady time.Duration
	floorIdle  memStatus
	floorFinal memStatus

	checked    int
	disagree   int
	mismatches []string // the first disagreements
	reasons    map[string]int

	steps    [][][nSides]stepResult   // per step, per run: [crmauthz, opa, floor]
	evidence [][][nSides]stepEvidence // the same shape: the tail's candidates (evidence.go)
}

const (
	sideCrmauthz = 0
	sideOPA      = 1
	sideFloor    = 2
	nSides       = 3
)

func (c *runConfig) defaults() {
	if c.Log == nil {
		c.Log = os.Stderr
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.WarmupRate <= 0 {
		c.WarmupRate = 1000
	}
	if c.Runs <= 0 {
		c.Runs = 1
	}
	if c.Endpoint == "" {
		c.Endpoint = endpointDecision
	}
	if c.SampleEvery <= 0 {
		c.SampleEvery = defaultSampleEvery
	}
}

// vs tells whether crmauthz-b takes OPA's place (VsArgs or VsCrmauthz).
func (c *runConfig) vs() bool { return len(c.VsArgs) > 0 || c.VsCrmauthz != "" }

func (c *runConfig) logf(format string, args ...any) {
	fmt.Fprintf(c.Log, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// run performs a whole benchmark: dataset, the servers (crmauthz, OPA, the
// floor), agreement check of crmauthz and OPA, load steps of all three.
func run(ctx context.Context, cfg runConfig) (*report, error) {
	cfg.defaults()
	vs := cfg.vs()
	if err := checkEndpoint(cfg.Endpoint); err != nil {
		return nil, err
	}
	if cfg.VsFloor && vs {
		return nil, fmt.Errorf("--vs-floor: a second floor takes OPA's place, as crmauthz-b does with --vs-crmauthz or --vs-crmauthz-args: give one of them")
	}
	if cfg.VsFloor {
		cfg.NoOPA = true
	}
	if isGateway(cfg.Endpoint) && !cfg.NoOPA && !vs {
		return nil, fmt.Errorf("--endpoint %s: OPA has no forward-auth or ext_authz endpoint; add --no-opa, or --vs-crmauthz (or --vs-crmauthz-args) for a second crmauthz in its place", cfg.Endpoint)
	}
	if vs {
		cfg.NoOPA = true
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	if err := pinSelf(cfg.GeneratorCPUs); err != nil {
		return nil, err
	}
	rep := &report{cfg: cfg, loadStart: loadAvg(), reasons: map[string]int{}, opaVersion: "OPA"}
	if cfg.AutogroupNice != nil {
		name, before, restore, err := setAutogroupNice(*cfg.AutogroupNice)
		if err != nil {
			return nil, err
		}
		defer restore()
		rep.autogroup = fmt.Sprintf("%s, nice %d (was %d)", name, *cfg.AutogroupNice, before)
		cfg.logf("autogroup %s", rep.autogroup)
	} else if b, err := os.ReadFile(autogroupPath); err == nil && autogroupsOn() {
		if name, nice, err := parseAutogroup(string(b)); err == nil {
			rep.autogroup = fmt.Sprintf("%s, nice %d, left as it was: other sessions' processes, niced or not, weigh as much as this group (--autogroup-nice)", name, nice)
		}
	}
	work := cfg.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "crmauthz-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	if cfg.OPA == "" && !cfg.NoOPA {
		if cfg.OPA, err = opaBinary(ctx, root, cfg.OPACache, cfg.Log); err != nil {
			return nil, err
		}
	}
	if cfg.Crmauthz == "" {
		cfg.logf("building crmauthz")
		if cfg.Crmauthz, err = buildCrmauthz(ctx, root, work); err != nil {
			return nil, err
		}
	}
	if cfg.NoOPA {
		rep.opaVersion = "OPA left out"
	} else if out, err := exec.CommandContext(ctx, cfg.OPA, "version").Output(); err == nil {
		v, _, _ := strings.Cut(string(out), "\n")
		rep.opaVersion = "OPA " + strings.TrimSpace(strings.TrimPrefix(v, "Version:"))
	}
	w := dataset.New(dataset.Config{Records: cfg.Records, Users: cfg.Users, Locations: cfg.Locations})
	wc := w.Config()
	rep.cfg.Records, rep.cfg.Users, rep.cfg.Locations = wc.Records, wc.Users, wc.Locations
	cfg.logf("world: %d records, %d users, %d locations; load average %s", wc.Records, wc.Users, wc.Locations, rep.loadStart)

	// OPA's data file.
	opaData := filepath.Join(work, "opa", "data.json")
	if !cfg.NoOPA {
		if err := os.MkdirAll(filepath.Dir(opaData), 0o755); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := writeFile(opaData, func(out io.Writer) error { return writeOPAData(out, w) }); err != nil {
			return nil, err
		}
		rep.opaDataWrite = time.Since(t0)
		if fi, err := os.Stat(opaData); err == nil {
			rep.opaDataBytes = fi.Size()
		}
	}

	// crmauthz: start empty, load the snapshot through the API, restart on it.
	dataDir := filepath.Join(work, "crmauthz")
	crm, crmSide, err := startCrmauthz(ctx, cfg, dataDir)
	if err != nil {
		return nil, err
	}
	rep.readyEmpty = crmSide.ready
	cfg.logf("crmauthz ready on an empty index in %s; loading the snapshot", rep.readyEmpty)
	t0 := time.Now()
	if err := putSnapshot(ctx, crmSide.admin+"/v1/replication/snapshot", w); err != nil {
		crm.stop(10 * time.Second)
		return nil, err
	}
	rep.snapshotLoad = time.Since(t0)
	rep.snapshotPeak, _ = readMem(crm.pid())
	if err := crm.stop(30 * time.Second); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "index.db")); err == nil {
		rep.indexBytes = fi.Size()
	}
	crm, crmSide, err = startCrmauthz(ctx, cfg, dataDir)
	if err != nil {
		return nil, err
	}
	defer crm.stop(10 * time.Second)
	rep.readyRestart = crmSide.ready
	var prof *cpuProfiler
	if cfg.CPUProfile != "" {
		if prof, err = newCPUProfiler(crmSide.admin, filepath.Join(work, "cpu-profiles")); err != nil {
			return nil, err
		}
	}
	cfg.logf("snapshot loaded in %s; crmauthz restarted and ready in %s", rep.snapshotLoad.Round(time.Millisecond), rep.readyRestart)

	// OPA with the same facts in its store.
	var opa *proc
	var opaSide serverSide
	if vs {
		// crmauthz-b in OPA's place, on a copy of the index.
		dirB := filepath.Join(work, "crmauthz-b")
		if err := copyIndex(filepath.Join(dataDir, "index.db"), filepath.Join(dirB, "index.db")); err != nil {
			return nil, err
		}
		cfgB := cfg
		cfgB.CPUProfile = "" // only crmauthz is profiled
		cfgB.procName = "crmauthz-b"
		cfgB.CrmauthzArgs = append(slices.Clone(cfg.CrmauthzArgs), cfg.VsArgs...)
		if cfg.VsCrmauthz != "" {
			cfgB.Crmauthz = cfg.VsCrmauthz
		}
		if opa, opaSide, err = startCrmauthz(ctx, cfgB, dirB); err != nil {
			return nil, err
		}
		defer opa.stop(10 * time.Second)
		opaSide.name = "crmauthz-b"
		cfg.logf("crmauthz-b (%s %s) ready in %s", cfgB.Crmauthz, strings.Join(cfg.VsArgs, " "), opaSide.ready)
	} else if !cfg.NoOPA {
		if opa, opaSide, err = startOPA(ctx, cfg, root, opaData); err != nil {
			return nil, err
		}
		defer opa.stop(10 * time.Second)
		rep.opaReady = opaSide.ready
		cfg.logf("opa ready with the data in %s", rep.opaReady)
	}

	// The floor: a bare net/http server answering a constant decision.
	floor, floorSide, err := startFloor(ctx, "floor", cfg.Floor, cfg.ServerCPUs, cfg.ServerLogs, cfg.Endpoint == endpointExtAuthzGRPC)
	if err != nil {
		return nil, err
	}
	defer floor.stop(10 * time.Second)
	if cfg.VsFloor {
		// floor-b in OPA's place: the same server, started the same way.
		if opa, opaSide, err = startFloor(ctx, "floor-b", cfg.Floor, cfg.ServerCPUs, cfg.ServerLogs, cfg.Endpoint == endpointExtAuthzGRPC); err != nil {
			return nil, err
		}
		defer opa.stop(10 * time.Second)
		opaSide.endpoint = cfg.Endpoint
		cfg.logf("floor-b ready in %s", opaSide.ready)
	}
	rep.floorReady = floorSide.ready
	floorSide.endpoint = cfg.Endpoint // the floor takes the gateway's requests too
	cfg.logf("floor server ready in %s", rep.floorReady)

	time.Sleep(time.Second)
	rep.crmauthzIdle, _ = readMem(crm.pid())
	rep.floorIdle, _ = readMem(floor.pid())
	sides := [nSides]*side{&crmSide.side, &opaSide.side, &floorSide.side}
	if opa == nil {
		sides[sideOPA] = nil
	} else {
		rep.opaIdle, _ = readMem(opa.pid())
	}

	// Agreement on the first Check requests of the mix: crmauthz and OPA
	// on the decision; with a gateway endpoint, each crmauthz's gateway
	// answer and its /v1/decision (gateway.go).
	client := &http.Client{Timeout: cfg.Timeout}
	if isGateway(cfg.Endpoint) {
		crms := []*side{sides[sideCrmauthz]}
		if vs {
			crms = append(crms, sides[sideOPA])
		}
		floors := []*side{sides[sideFloor]}
		if cfg.VsFloor {
			floors = append(floors, sides[sideOPA])
		}
		closeGRPC, err := prepareGateway(ctx, cfg, client, crms, floors, w, rep)
		if err != nil {
			return nil, err
		}
		defer closeGRPC()
	}
	for i := 0; i < cfg.Check && !cfg.NoOPA; i++ {
		r := w.RequestAt(i)
		a, err := sides[sideCrmauthz].ask(ctx, client, r)
		if err != nil {
			return nil, fmt.Errorf("agreement check, request %d: %w", i, err)
		}
		b, err := sides[sideOPA].ask(ctx, client, r)
		if err != nil {
			return nil, fmt.Errorf("agreement check, request %d: %w", i, err)
		}
		rep.checked++
		rep.reasons[a.Reason]++
		if a != b {
			rep.disagree++
		}
		if a != b && len(rep.mismatches) < 10 {
			rep.mismatches = append(rep.mismatches, fmt.Sprintf("%s: crmauthz %v %s, opa %v %s",
				r.AppendJSON(nil), a.Allow, a.Reason, b.Allow, b.Reason))
		}
	}
	if !cfg.NoOPA {
		cfg.logf("agreement: %d requests, %d disagreements; reasons %v", rep.checked, rep.disagree, rep.reasons)
	}
	for _, k := range []int{sideFloor, sideOPA} {
		if k == sideOPA && !cfg.VsFloor {
			continue
		}
		if v, err := sides[k].ask(ctx, client, w.RequestAt(0)); err != nil || v != (verdict{true, "owner"}) {
			return nil, fmt.Errorf("the floor server (%s) answered %+v (%v), want allow owner", sides[k].name, v, err)
		}
	}

	// Load steps. Every step asks fresh requests of the mix (its own range
	// of indexes), the same ones of every side; the order of the sides
	// alternates (crmauthz, opa, floor; then floor, opa, crmauthz).
	var specs []stepSpec
	base := func() uint64 { return uint64(len(specs)+1) * 100_000_000 }
	for _, r := range cfg.Rates {
		specs = append(specs, stepSpec{name: fmt.Sprintf("%d/s", r), rate: r, base: base()})
	}
	for _, n := range cfg.SatWorkers {
		specs = append(specs, stepSpec{name: fmt.Sprintf("max, %d conn", n), workers: n, base: base()})
	}
	if cfg.HotSet > 0 && len(cfg.SatWorkers) > 0 {
		n := slices.Max(cfg.SatWorkers)
		specs = append(specs, stepSpec{name: fmt.Sprintf("max, %d conn, hot %d", n, cfg.HotSet), workers: n, base: base(), hot: cfg.HotSet})
	}
	// The generator keeps one pool of keep-alive connections per side for
	// the whole run, opened in the warm-up (BENCHMARKS.md, "Method").
	if !cfg.ColdConnections {
		for _, s := range sides {
			if s != nil {
				s.pool = newConnLog(cfg.RequestsOut != "")
				defer s.pool.close()
			}
		}
	}
	if cfg.Warmup > 0 {
		for _, s := range sides {
			if s == nil {
				continue
			}
			runStep(ctx, s, stepSpec{name: "warmup", rate: cfg.WarmupRate, base: 50_000_000}, w, cfg.Warmup, cfg.Timeout, false)
		}
	}
	var reqOut *requestsOut
	if cfg.RequestsOut != "" {
		f, err := os.Create(cfg.RequestsOut)
		if err != nil {
			return nil, err
		}
		reqOut = newRequestsOut(f)
		defer reqOut.close()
	}
	var smp *sampler
	if cfg.SampleOut != "" {
		procs := []sampledProc{{"generator", os.Getpid(), cfg.started}, {"crmauthz", crm.pid(), crm.mono}, {"floor", floor.pid(), floor.mono}}
		if opa != nil {
			procs = append(procs, sampledProc{sides[sideOPA].name, opa.pid(), opa.mono})
		}
		if smp, err = startSampler(cfg.SampleOut, cfg.SampleEvery, procs); err != nil {
			return nil, err
		}
		defer smp.stop()
		cfg.logf("sampling the machine every %s into %s", cfg.SampleEvery, cfg.SampleOut)
	}
	// With --runs N the whole sequence of steps is repeated N times over the
	// same servers, each run with fresh requests, the order of the sides
	// alternating from run to run as well.
	steps := &stepRunner{sides: sides, w: w, timeout: cfg.Timeout, record: reqOut != nil, prof: prof, cut: cfg.slicing()}
	rep.steps = make([][][nSides]stepResult, len(specs))
	rep.evidence = make([][][nSides]stepEvidence, len(specs))
	for run := 0; run < cfg.Runs; run++ {
		for i, spec := range specs {
			spec.base += uint64(run*len(specs)) * 100_000_000
			order := []int{sideCrmauthz, sideOPA, sideFloor}
			if (i+run)%2 == 1 {
				slices.Reverse(order)
			}
			// With --slices, each side's step is cut into slices run in turn
			// with the other sides' (slices.go).
			parts, ev, err := steps.run(ctx, spec, order)
			if err != nil {
				return nil, err
			}
			if reqOut != nil {
				for k := range parts {
					for j := range parts[k] {
						writeRequests(reqOut.w, run+1, j, parts[k][j])
						parts[k][j].reqs = nil
					}
				}
			}
			if len(parts[sideCrmauthz]) > 1 {
				logSlices(cfg, run+1, spec.name, parts)
			}
			var pair [nSides]stepResult
			for _, k := range order {
				if sides[k] == nil {
					continue
				}
				pair[k] = sliceResults(parts[k])
				pair[k].lat = nil
				r := pair[k]
				first := ""
				if r.errs > 0 {
					first = "; the first: " + r.firstErr
				}
				cfg.logf("run %d  %-24s %-8s %8.0f/s  p50 %s  p99 %s  errors %d%s", run+1, spec.name, r.side, r.achieved, fmtDur(r.p50), fmtDur(r.p99), r.errs, first)
			}
			rep.steps[i] = append(rep.steps[i], pair)
			rep.evidence[i] = append(rep.evidence[i], ev)
		}
	}
	if err := smp.stop(); err != nil {
		return nil, fmt.Errorf("--sample-out: %w", err)
	}
	rep.crmauthzFinal, _ = readMem(crm.pid())
	if opa != nil {
		rep.opaFinal, _ = readMem(opa.pid())
	}
	rep.floorFinal, _ = readMem(floor.pid())
	rep.loadEnd = loadAvg()
	if err := prof.save(ctx, root, cfg.CPUProfile); err != nil {
		return nil, err
	}
	if prof != nil {
		cfg.logf("crmauthz's CPU profile of %d steps saved to %s (its figures in this run include the profiling)", len(prof.files), cfg.CPUProfile)
	}
	return rep, nil
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
