package main

import (
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

// `crmauthz-bench soak` (BENCHMARKS.md, "Scale curve", "Session 11:
// `--index-populate` beside replication" and "Session 12: the soak as a
// subcommand"): one crmauthz serve under decisions at a fixed rate while
// replication posts batches of random changes for a while; per window the
// decisions' quantiles, the events applied, the server's page faults,
// memory, CPU and wait for a core, the index file's size. What it is for:
// how a setting (--crmauthz-args, e.g. --index-populate) or a build behaves
// over minutes of writes, the merges of the delta log and the file's
// growth included, which a step of `run` or `scale` never reaches.

// soakConfig configures `crmauthz-bench soak`.
type soakConfig struct {
	run runConfig // Crmauthz, CrmauthzArgs, CrmauthzEnv, Records, Users, Locations, Timeout, WorkDir, ServerLogs, Log
	// Index, if set, is a data directory holding the index of the world
	// (Records, Users, Locations; as `scale --index-dir` leaves it), copied
	// into the work directory before the start; "": the world is loaded
	// through the snapshot API first.
	Index      string
	Duration   time.Duration // the measured time
	Warmup     time.Duration // decisions only, before the measured time
	Window     time.Duration // one row of the table
	Rate       int           // decisions per second
	EventsRate int           // replication events per second; 0: none
	Batch      int           // events per batch
	NewShare   float64       // the share of events that upsert a new record
	Seed       uint64        // of the random changes
}

// soakMaxBatch is the most events a batch may hold (SPEC "Replication API").
const soakMaxBatch = 10_000

// check validates the flags before anything starts.
func (c soakConfig) check() error {
	switch {
	case c.Rate < 1 || c.Rate > 100_000:
		return fmt.Errorf("--rate: %d is not between 1 and 100000 decisions per second", c.Rate)
	case c.Window < time.Second:
		return fmt.Errorf("--window: %s is shorter than 1s", c.Window)
	case c.Duration < c.Window || c.Duration%c.Window != 0:
		return fmt.Errorf("--duration: %s is not a whole number (1 or more) of --window %s", c.Duration, c.Window)
	case c.Warmup < 0:
		return fmt.Errorf("--warmup: %s is negative", c.Warmup)
	case c.EventsRate < 0:
		return fmt.Errorf("--events-rate: %d is negative", c.EventsRate)
	case c.Batch < 1 || c.Batch > soakMaxBatch:
		return fmt.Errorf("--batch: %d is not between 1 and %d events", c.Batch, soakMaxBatch)
	case c.NewShare < 0 || c.NewShare > 1:
		return fmt.Errorf("--new-share: %v is not between 0 and 1", c.NewShare)
	case c.run.Records < 1 || c.run.Users < 1 || c.run.Locations < 1:
		return fmt.Errorf("--records, --users and --locations must be positive")
	}
	if c.EventsRate > 0 {
		if every := c.batchEvery(); every < time.Millisecond || every > c.Window {
			return fmt.Errorf("--batch %d at --events-rate %d is a batch every %s; want one every 1ms to --window %s", c.Batch, c.EventsRate, every, c.Window)
		}
	}
	if c.Index != "" {
		if _, err := os.Stat(filepath.Join(c.Index, "index.db")); err != nil {
			return fmt.Errorf("--index: %w", err)
		}
	}
	return nil
}

// batchEvery is the interval of the batches (0 without replication).
func (c soakConfig) batchEvery() time.Duration {
	if c.EventsRate <= 0 {
		return 0
	}
	return time.Duration(int64(time.Second) * int64(c.Batch) / int64(c.EventsRate))
}

// soakWindow is one row of the soak's table.
type soakWindow struct {
	from, to     time.Duration // since the measured time began, as planned (window × i)
	wall         time.Duration // how long the window took (its requests' answers included)
	dec          stepResult    // the window's decisions
	applied      int64         // events applied by the batches answered in the window
	batchLat     []time.Duration
	minflt       int64
	majflt       int64
	indexBytes   int64
	mem          memStatus // at the window's end
	cpu, runWait time.Duration
}

// eventsPerSec is the applied events per second of wall time.
func (w soakWindow) eventsPerSec() float64 {
	if w.wall <= 0 {
		return 0
	}
	return float64(w.applied) / w.wall.Seconds()
}

func (w soakWindow) row() []string {
	lat := slices.Sorted(slices.Values(w.batchLat))
	return []string{fmt.Sprintf("%.0f–%.0f", w.from.Seconds(), w.to.Seconds()), strconv.Itoa(w.dec.ok), strconv.Itoa(w.dec.errs),
		fmtDur(w.dec.p50), fmtDur(w.dec.p99), fmtDur(w.dec.p999), fmtDur(w.dec.max),
		strconv.FormatInt(w.applied, 10), fmt.Sprintf("%.0f", w.eventsPerSec()), fmtDur(quantile(lat, 0.99)),
		strconv.FormatInt(w.minflt, 10), strconv.FormatInt(w.majflt, 10),
		fmt.Sprintf("%.0f", float64(w.indexBytes)/(1<<20)), fmtMiB(w.mem.File), fmtMiB(w.mem.Anon),
		fmt.Sprintf("%.1f", w.cpu.Seconds()), fmt.Sprintf("%.1f", w.runWait.Seconds())}
}

// soakReport is what a soak measured.
type soakReport struct {
	cfg                soakConfig
	args               string // crmauthz's extra flags
	started, loadStart string
	loadEnd            string
	ready              time.Duration
	windows            []soakWindow
	repl               replStats
}

func printSoak(out io.Writer, r soakReport) {
	fmt.Fprintf(out, "soak: %d records; decisions at %d/s; replication %d events/s in batches of %d (%.0f %% new records); %s windows\n",
		r.cfg.run.Records, r.cfg.Rate, r.cfg.EventsRate, r.cfg.Batch, 100*r.cfg.NewShare, r.cfg.Window)
	fmt.Fprintf(out, "crmauthz args %q; started %s, ready in %s; load average (1/5/15 min) at start %s, at end %s\n\n",
		r.args, r.started, r.ready.Round(time.Millisecond), r.loadStart, r.loadEnd)
	var t table
	t.row("window (s)", "decisions", "errors", "p50", "p99", "p99.9", "max", "events", "events/s", "batch p99",
		"minflt", "majflt", "index.db MiB", "RssFile MiB", "RssAnon MiB", "CPU s", "runq s")
	var parts []stepResult
	var applied int64
	var wall time.Duration
	var batches []time.Duration
	for _, w := range r.windows {
		t.row(w.row()...)
		parts = append(parts, w.dec)
		applied += w.applied
		wall += w.wall
		batches = append(batches, w.batchLat...)
	}
	t.write(out)
	if len(parts) == 0 {
		return
	}
	all := sliceResults(parts)
	slices.Sort(batches)
	fmt.Fprintf(out, "\nwhole: %d decisions, %d errors, p50 %s, p99 %s, p99.9 %s, max %s; %d events applied (%.0f/s) in %d batches, batch p99 %s",
		all.ok, all.errs, fmtDur(all.p50), fmtDur(all.p99), fmtDur(all.p999), fmtDur(all.max),
		applied, float64(applied)/max(wall, time.Nanosecond).Seconds(), len(batches), fmtDur(quantile(batches, 0.99)))
	if r.repl.err != "" {
		fmt.Fprintf(out, "; replication stopped: %s", r.repl.err)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "\nevents: applied by the batches answered in the window; minflt, majflt: the server's page faults in the window;")
	fmt.Fprintln(out, "RssFile, RssAnon: at the window's end; CPU, runq: the server's threads' time on a core and waiting for one.")
}

// soakMain is `crmauthz-bench soak`.
func soakMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg soakConfig
	rc := &cfg.run
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: crmauthz-bench soak --crmauthz BIN [--index DIR] [flags]

One crmauthz serve under decisions at a fixed --rate (vegeta, fresh requests of the mix) while
replication posts a batch of --batch random changes every --batch/--events-rate seconds to
/v1/replication/events (a --new-share of new records, so that the index grows; the rest owner.set,
follower.add and follower.remove on random records of the world, each a real change). After
--warmup (decisions only), one row per --window: the decisions' quantiles, the events applied,
the batches' p99, the server's page faults, index.db's size, RssFile and RssAnon, the server's
CPU time and its wait for a core. --crmauthz-args gives serve the settings to compare (e.g.
--index-populate); run it once per setting, each under the lock, on a fresh --index copy.
BENCHMARKS.md, "How to reproduce".

`)
		fs.PrintDefaults()
	}
	fs.IntVar(&rc.Records, "records", 1_000_000, "records in the world (of --index, or loaded when --index is not given)")
	fs.IntVar(&rc.Users, "users", 10_000, "users in the world")
	fs.IntVar(&rc.Locations, "locations", 5, "locations in the world")
	fs.StringVar(&cfg.Index, "index", "", "a crmauthz data directory `DIR` holding the world's index.db (e.g. X/<records>/crmauthz after \"scale --index-dir X --rounds 0\"), copied into the work directory before the start, never written; \"\": load the world through the snapshot API first")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Minute, "the measured time, a whole number of --window")
	fs.DurationVar(&cfg.Warmup, "warmup", 15*time.Second, "decisions without replication before the measured time (0: none)")
	fs.DurationVar(&cfg.Window, "window", 30*time.Second, "one row of the table (at least 1s)")
	fs.IntVar(&cfg.Rate, "rate", 1000, "decisions per second")
	fs.IntVar(&cfg.EventsRate, "events-rate", 1000, "replication events per second (0: no replication); the batches go one at a time, so a slow commit lowers the rate reached (events/s in the table)")
	fs.IntVar(&cfg.Batch, "batch", 100, "events per batch (1–10000)")
	fs.Float64Var(&cfg.NewShare, "new-share", 0.5, "the share of events that upsert a new record (the index grows); the rest change random records of the world")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the random changes")
	fs.DurationVar(&rc.Timeout, "timeout", 10*time.Second, "timeout of one decision")
	fs.StringVar(&rc.Crmauthz, "crmauthz", "", "crmauthz binary (default: build ./cmd/crmauthz into the work directory)")
	env := fs.String("crmauthz-env", "", "extra environment of crmauthz, comma-separated (e.g. GOGC=200)")
	extra := fs.String("crmauthz-args", "", "extra flags of crmauthz serve, space-separated (e.g. \"--index-populate\"): the setting the soak measures")
	fs.StringVar(&rc.WorkDir, "work-dir", "", "directory for the index copy (default: a temporary one, removed afterwards)")
	fs.StringVar(&rc.ServerLogs, "server-logs", "", "keep crmauthz's output in this directory (created)")
	agNice := fs.String("autogroup-nice", "", "set the nice of this tool's autogroup, which crmauthz shares, for the run (as run's --autogroup-nice; run the tool under setsid)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("soak: unexpected arguments %q", fs.Args())
	}
	if err := cfg.check(); err != nil {
		return err
	}
	var err error
	if rc.AutogroupNice, err = parseAutogroupNice(*agNice); err != nil {
		return err
	}
	if rc.ServerLogs != "" {
		if err := os.MkdirAll(rc.ServerLogs, 0o755); err != nil {
			return fmt.Errorf("--server-logs: %w", err)
		}
	}
	if *env != "" {
		rc.CrmauthzEnv = strings.Split(*env, ",")
	}
	rc.CrmauthzArgs = strings.Fields(*extra)
	rc.Log = stderr
	debug.SetGCPercent(400) // as `run`: the load generator leaves more of the cores to the server
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := soak(ctx, cfg)
	if len(rep.windows) > 0 {
		printSoak(stdout, rep)
	}
	if err == nil && rep.repl.err != "" {
		err = fmt.Errorf("replication stopped: %s", rep.repl.err)
	}
	return err
}

// soak prepares the index, starts crmauthz on it and runs the decisions
// and the replication.
func soak(ctx context.Context, cfg soakConfig) (soakReport, error) {
	rc := cfg.run
	rc.defaults()
	rep := soakReport{cfg: cfg, args: strings.Join(rc.CrmauthzArgs, " "), loadStart: loadAvg()}
	w := dataset.New(dataset.Config{Records: rc.Records, Users: rc.Users, Locations: rc.Locations})
	work := rc.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "crmauthz-soak-"); err != nil {
			return rep, err
		}
		defer os.RemoveAll(work)
	}
	if rc.Crmauthz == "" {
		root, err := repoRoot()
		if err != nil {
			return rep, err
		}
		rc.logf("building crmauthz")
		if rc.Crmauthz, err = buildCrmauthz(ctx, root, work); err != nil {
			return rep, err
		}
	}
	if rc.AutogroupNice != nil {
		name, before, restore, err := setAutogroupNice(*rc.AutogroupNice)
		if err != nil {
			return rep, err
		}
		defer restore()
		rc.logf("autogroup %s: nice %d (was %d)", name, *rc.AutogroupNice, before)
	}
	dataDir := filepath.Join(work, "soak-crmauthz")
	if err := os.RemoveAll(dataDir); err != nil {
		return rep, err
	}
	if cfg.Index != "" {
		rc.logf("copying the index of %s", cfg.Index)
		if err := copyDataDir(cfg.Index, dataDir); err != nil {
			return rep, err
		}
	} else {
		loading := rc
		loading.CrmauthzArgs = nil // the settings measured are the soak's, not the load's
		if err := scaleLoad(ctx, loading, w, dataDir, &scalePoint{records: rc.Records}); err != nil {
			return rep, err
		}
	}
	crm, srv, err := startCrmauthz(ctx, rc, dataDir)
	if err != nil {
		return rep, err
	}
	defer crm.stop(30 * time.Second)
	rep.started, rep.ready = time.Now().UTC().Format("15:04:05"), srv.ready
	rc.logf("crmauthz (pid %d, args %q) ready in %s", crm.pid(), rep.args, srv.ready)
	s := &srv.side
	s.pool = newConnLog(false)
	defer s.pool.close()

	var next uint64 // the next request of the mix
	if cfg.Warmup > 0 {
		res := runStep(ctx, s, stepSpec{name: "warmup", rate: cfg.Rate}, w, cfg.Warmup, rc.Timeout, false)
		next += uint64(res.sent)
		rc.logf("warm-up: %d decisions, p99 %s, errors %d", res.ok, fmtDur(res.p99), res.errs)
	}
	repl := newReplicator(srv.admin, newSoakEvents(w, cfg.NewShare, cfg.Seed), cfg.Batch, cfg.batchEvery())
	replCtx, stopRepl := context.WithCancel(ctx)
	replDone := make(chan struct{})
	if cfg.EventsRate > 0 {
		go func() { defer close(replDone); repl.run(replCtx) }()
	} else {
		close(replDone)
	}
	defer func() { stopRepl(); <-replDone }()

	idx := filepath.Join(dataDir, "index.db")
	pid := crm.pid()
	minflt0, majflt0, _ := faults(pid)
	run0, wait0, _ := schedTimes(pid)
	for i := range int(cfg.Duration / cfg.Window) {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		t0 := time.Now()
		spec := stepSpec{name: fmt.Sprintf("window %d", i+1), rate: cfg.Rate, base: next}
		res := runStep(ctx, s, spec, w, cfg.Window, rc.Timeout, false)
		next += uint64(res.sent)
		win := soakWindow{from: time.Duration(i) * cfg.Window, to: time.Duration(i+1) * cfg.Window, wall: time.Since(t0), dec: res}
		win.applied, win.batchLat = repl.take()
		minflt, majflt, _ := faults(pid)
		run, wait, _ := schedTimes(pid)
		win.minflt, win.majflt, minflt0, majflt0 = minflt-minflt0, majflt-majflt0, minflt, majflt
		win.cpu, win.runWait, run0, wait0 = time.Duration(run-run0), time.Duration(wait-wait0), run, wait
		if fi, err := os.Stat(idx); err == nil {
			win.indexBytes = fi.Size()
		}
		win.mem, _ = readMem(pid)
		rep.windows = append(rep.windows, win)
		rc.logf("%s–%s s: p99 %s, %d events applied, majflt %d", fmt.Sprint(win.from.Seconds()), fmt.Sprint(win.to.Seconds()),
			fmtDur(res.p99), win.applied, win.majflt)
	}
	stopRepl()
	<-replDone
	rep.repl = repl.stats()
	rep.loadEnd = loadAvg()
	return rep, crm.stop(30 * time.Second)
}

// copyDataDir copies the regular files of a crmauthz data directory (its
// index; not a LOCK file) into dst, which it creates.
func copyDataDir(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("--index: %w", err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == "LOCK" {
			continue
		}
		if err := copyIndex(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return fmt.Errorf("--index: %w", err)
		}
	}
	return nil
}
