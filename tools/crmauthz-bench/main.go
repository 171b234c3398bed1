// Command crmauthz-bench measures crmauthz side by side with `opa run
// --server` holding the same rules and facts (see BENCHMARKS.md), and
// generates the synthetic datasets and request mixes it uses (see
// internal/dataset).
//
//	crmauthz-bench run [--records 1000000] [--duration 10s] [--rates 1000,5000,10000] [--runs 5] …
//	crmauthz-bench scale [--records 100000,1000000,10000000] …   (the scale curve, scale.go)
//	crmauthz-bench soak --crmauthz BIN [--index DIR] [--crmauthz-args "--index-populate"] …   (decisions beside replication for minutes, soak.go)
//	crmauthz-bench gen --records 1000000 --users 10000 > snapshot.ndjson
//	crmauthz-bench requests --n 100000 > requests.ndjson   (one POST /v1/decision body per line)
//	crmauthz-bench opa-data --records 1000000 > data.json   (the same world as OPA's data document)
//
// `run` generates the world, starts the real crmauthz binary (loading the
// world through PUT /v1/replication/snapshot, then restarting it on the
// index) and a real opa built from the version in go.mod (the world as its
// data.json, the rules of bench/opa/authz.rego), checks that both decide a
// sample of the mix identically, drives both with the same requests at fixed
// rates and at saturation with vegeta, and prints one table. A third server,
// the floor (the tool itself as `crmauthz-bench floor`: a bare net/http
// server that reads the body and answers a constant decision), takes the same
// load in the same run, so that crmauthz's figures read against the limit of
// the machine as well as against OPA. With --endpoint forward-auth,
// ext-authz-http or ext-authz-grpc the load asks crmauthz and the floor as
// a gateway does (gateway.go, grpc.go).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

func main() {
	if err := mainErr(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "crmauthz-bench:", err)
		os.Exit(1)
	}
}

const usage = "usage: crmauthz-bench run|scale|soak|gen|requests|opa-data [flags] (-h for the flags of each)"

func mainErr(args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 {
		return fmt.Errorf("%s", usage)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	records := fs.Int("records", 1_000_000, "records in the world")
	users := fs.Int("users", 10_000, "users in the world")
	locations := fs.Int("locations", 5, "locations in the world")
	world := func() dataset.World {
		return dataset.New(dataset.Config{Records: *records, Users: *users, Locations: *locations})
	}
	switch args[0] {
	case "scale":
		return scaleMain(context.Background(), args[1:], stdout, stderr) // scale.go
	case "soak":
		return soakMain(context.Background(), args[1:], stdout, stderr) // soak.go
	case "gen", "requests", "opa-data":
		seq := fs.Uint64("seq", 1, "gen: applied_seq of the snapshot")
		n := fs.Int("n", 100_000, "requests: how many to write")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		out := bufio.NewWriterSize(stdout, 256<<10)
		var err error
		switch args[0] {
		case "gen":
			err = world().WriteSnapshot(out, *seq)
		case "opa-data":
			err = writeOPAData(out, world())
		case "requests":
			w := world()
			var b []byte
			for i := 0; i < *n && err == nil; i++ {
				b = append(w.RequestAt(i).AppendJSON(b[:0]), '\n')
				_, err = out.Write(b)
			}
		}
		if err != nil {
			return err
		}
		return out.Flush()
	case "floor":
		// Hidden: the floor server `run` starts as a process of its own.
		addr := fs.String("addr", "127.0.0.1:8282", "loopback address to serve on")
		grpcAddr := fs.String("grpc-addr", "", "loopback address of the gRPC floor (Envoy's Authorization/Check); \"\": none")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return serveFloor(ctx, *addr, *grpcAddr)
	case "run":
		cfg := runConfig{started: monotonicNow()}
		fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of each load step, for each side")
		fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "warm-up of each side before the first step (0: none)")
		fs.IntVar(&cfg.WarmupRate, "warmup-rate", 1000, "requests per second of the warm-up")
		fs.DurationVar(&cfg.Pause, "pause", time.Second, "pause before each step (with --slices, shared out: before each slice, at least 100ms)")
		rates := fs.String("rates", "1000,5000,10000", "fixed-rate steps, requests per second, comma-separated (\"\": none)")
		sat := fs.String("saturation", "1,32", "saturation steps: concurrent requests of each, comma-separated (\"\": none)")
		fs.IntVar(&cfg.HotSet, "hot-set", 1000, "distinct requests of the hot-set saturation step, where crmauthz's decision cache hits (0: no such step)")
		fs.IntVar(&cfg.Runs, "runs", 1, "run the load steps that many times over the same servers; the table gives medians and the spread (min–max)")
		fs.IntVar(&cfg.Check, "check", 2000, "requests of the mix both servers must decide identically before the load")
		fs.StringVar(&cfg.Endpoint, "endpoint", endpointDecision, "how the load asks crmauthz and the floor: decision (POST /v1/decision), forward-auth (GET /v1/forward-auth as nginx, Caddy and Traefik ask), ext-authz-http (/v1/ext-authz/… as Envoy asks, with bodies) or ext-authz-grpc (Envoy's Authorization/Check on --grpc-addr); the same requests of the mix, checked against /v1/decision first; a gateway endpoint needs --no-opa or --vs-crmauthz")
		fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "timeout of one request")
		fs.StringVar(&cfg.Crmauthz, "crmauthz", "", "crmauthz binary (default: build ./cmd/crmauthz into the work directory)")
		env := fs.String("crmauthz-env", "", "extra environment of crmauthz, comma-separated (e.g. GOGC=200,GOMEMLIMIT=256MiB)")
		extra := fs.String("crmauthz-args", "", "extra flags of crmauthz serve, space-separated (e.g. \"--decision-cache-slots -1\")")
		fs.BoolVar(&cfg.NoOPA, "no-opa", false, "leave OPA out: crmauthz and the floor only, no agreement check (quicker, for the ratios to the floor)")
		vs := fs.String("vs-crmauthz-args", "", "instead of OPA, a second crmauthz (crmauthz-b) on a copy of the index with these extra flags, e.g. \"--decision-log /tmp/d.log\": the cost of a setting in one run")
		fs.BoolVar(&cfg.VsFloor, "vs-floor", false, "instead of OPA, a second floor server (floor-b), started as the floor is: the floor against itself in one run, an A/A series that says how far the method spreads identical servers (the report adds floor ÷ floor-b run by run); not with --vs-crmauthz or --vs-crmauthz-args (for crmauthz against itself: --vs-crmauthz with crmauthz's own binary)")
		fs.StringVar(&cfg.VsCrmauthz, "vs-crmauthz", "", "instead of OPA, a second crmauthz (crmauthz-b) running this binary on a copy of the index (with --vs-crmauthz-args, if given): two builds in one run")
		fs.IntVar(&cfg.Slices, "slices", defaultSlices, "cut each step of each side into that many slices, run interleaved with the other sides' slices (A B A B …, no two of one side adjacent; latencies pooled per side, CPU and steal summed): the host's steal and other hiccups of the machine land on every side alike; default 8, fewer for a --duration under 4s (slices of at least 500ms), 1 with --cpu-profile; 1: each side's step in one go (the method before session 9)")
		fs.DurationVar(&cfg.Settle, "settle", 2*time.Second, "before each slice (each step with --slices 1), after the pause: wait until every server together used at most 10ms of CPU in 100ms, at most this long, so that a server working off its own slice's backlog does not take the next side's cores (0: no wait)")
		fs.DurationVar(&cfg.SliceWarmup, "slice-warmup", 100*time.Millisecond, "with --slices > 1: untimed load at the step's rate (or concurrency) before each slice's timed part (0: none)")
		fs.StringVar(&cfg.ServerCPUs, "server-cpus", "", "pin the servers (crmauthz, opa, the floor) to these CPUs with taskset, e.g. 1 (\"\": not pinned)")
		fs.StringVar(&cfg.GeneratorCPUs, "generator-cpus", "", "pin this tool, the load generator, to these CPUs, e.g. 0 (\"\": not pinned)")
		fs.StringVar(&cfg.OPA, "opa", "", "opa binary (default: build the version go.mod requires into --opa-cache)")
		fs.StringVar(&cfg.OPACache, "opa-cache", "", "directory of built opa binaries, by version (default: .cache/opa in the repository)")
		policy := fs.String("opa-policy", "bench/opa/authz.rego,policies/crmauthz/config.rego", "Rego files opa serves, relative to the repository")
		fs.StringVar(&cfg.RequestsOut, "requests-out", "", "write every request of every step to this CSV file (time it was due and taken, latency, the connection it went out on; BENCHMARKS.md \"Against the floor\")")
		agNice := fs.String("autogroup-nice", "", "set the nice of this tool's autogroup, which the servers it starts share, to this value for the run (e.g. -10; \"\": leave it): with the kernel's autogroups on, a niced process of another session weighs as much as the whole benchmark (autogroup.go); run the tool under setsid for a group of its own")
		fs.StringVar(&cfg.ServerLogs, "server-logs", "", "keep each server's output in this directory (created), NAME-PID.log after a line with its start on CLOCK_MONOTONIC; with GODEBUG=gctrace=1 in this tool's environment (the servers inherit it) their collections, to lay over --requests-out")
		fs.StringVar(&cfg.SampleOut, "sample-out", "", "sample the machine during the load steps into this CSV file (mono_ns,series,value: /proc/stat, CPU pressure, each server's and this tool's run and run-queue time, the kernel's memory threads, this tool's collections; sampler.go)")
		fs.DurationVar(&cfg.SampleEvery, "sample-every", defaultSampleEvery, "with --sample-out: the interval of the samples (10ms–10s)")
		fs.StringVar(&cfg.CPUProfile, "cpu-profile", "", "start crmauthz with --pprof and save its CPU profile across the load steps (merged) to this file, for `make pgo` (docs/operations.md \"Profiling\"); its figures in that run include the profiling")
		fs.BoolVar(&cfg.ColdConnections, "cold-connections", false, "give every step (and slice) of every side a new client, which starts without connections (the method before session 5); default: one warm pool of keep-alive connections per side for the run")
		fs.StringVar(&cfg.WorkDir, "work-dir", "", "directory for the index and OPA's data file (default: a temporary one, removed afterwards)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		var err error
		if cfg.Rates, err = intList(*rates); err != nil {
			return fmt.Errorf("--rates: %w", err)
		}
		if cfg.SatWorkers, err = intList(*sat); err != nil {
			return fmt.Errorf("--saturation: %w", err)
		}
		if cfg.Runs < 1 || cfg.Runs > 100 {
			return fmt.Errorf("--runs: %d is not between 1 and 100", cfg.Runs)
		}
		sliced := false
		fs.Visit(func(f *flag.Flag) { sliced = sliced || f.Name == "slices" })
		if !sliced {
			cfg.Slices = autoSlices(cfg.Duration, cfg.CPUProfile != "")
		}
		if cfg.Slices < 1 || cfg.Slices > 10 || cfg.Duration/time.Duration(cfg.Slices) < 100*time.Millisecond {
			return fmt.Errorf("--slices: %d is not between 1 and 10, or cuts --duration %s into slices shorter than 100ms", cfg.Slices, cfg.Duration)
		}
		if cfg.Settle < 0 || cfg.Settle > 10*time.Second {
			return fmt.Errorf("--settle: %s is not between 0 and 10s", cfg.Settle)
		}
		if cfg.SliceWarmup < 0 || cfg.SliceWarmup > 10*time.Second {
			return fmt.Errorf("--slice-warmup: %s is not between 0 and 10s", cfg.SliceWarmup)
		}
		if cfg.CPUProfile != "" && cfg.Duration/time.Duration(cfg.Slices) > maxProfiledStep {
			return fmt.Errorf("--cpu-profile: a step (or slice) of %s is longer than %s, the longest one profile can take", cfg.Duration/time.Duration(cfg.Slices), maxProfiledStep)
		}
		if err := checkEndpoint(cfg.Endpoint); err != nil {
			return err
		}
		if cfg.VsFloor && (*vs != "" || cfg.VsCrmauthz != "") {
			return fmt.Errorf("--vs-floor: floor-b takes OPA's place, which --vs-crmauthz and --vs-crmauthz-args give crmauthz-b; give one of them")
		}
		if cfg.AutogroupNice, err = parseAutogroupNice(*agNice); err != nil {
			return err
		}
		if cfg.SampleEvery < 10*time.Millisecond || cfg.SampleEvery > 10*time.Second {
			return fmt.Errorf("--sample-every: %s is not between 10ms and 10s", cfg.SampleEvery)
		}
		if cfg.ServerLogs != "" {
			if err := os.MkdirAll(cfg.ServerLogs, 0o755); err != nil {
				return fmt.Errorf("--server-logs: %w", err)
			}
		}
		if err := checkCPUList("server-cpus", cfg.ServerCPUs); err != nil {
			return err
		}
		if err := checkCPUList("generator-cpus", cfg.GeneratorCPUs); err != nil {
			return err
		}
		cfg.Records, cfg.Users, cfg.Locations = *records, *users, *locations
		cfg.OPAPolicy = strings.Split(*policy, ",")
		if *env != "" {
			cfg.CrmauthzEnv = strings.Split(*env, ",")
		}
		cfg.CrmauthzArgs = strings.Fields(*extra)
		cfg.VsArgs = strings.Fields(*vs)
		if err := defaultOPACache(&cfg.OPACache); err != nil {
			return err
		}
		cfg.Log = stderr
		// The load generator shares the cores with the server under test:
		// a lazier garbage collector leaves more of them to the servers
		// (the same for both sides). The servers keep their defaults.
		debug.SetGCPercent(400)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		rep, err := run(ctx, cfg)
		if err != nil {
			return err
		}
		if err := printReport(stdout, rep); err != nil {
			return err
		}
		if rep.disagree > 0 && isGateway(cfg.Endpoint) {
			return fmt.Errorf("the %s endpoint and /v1/decision disagree on %d of %d decisions", cfg.Endpoint, rep.disagree, rep.checked)
		}
		if rep.disagree > 0 {
			return fmt.Errorf("crmauthz and opa disagree on %d of %d decisions", rep.disagree, rep.checked)
		}
		return nil
	}
	return fmt.Errorf("unknown command %q; %s", args[0], usage)
}

// defaultSampleEvery is --sample-every when not given: five samples in a
// slice of 500 ms.
const defaultSampleEvery = 100 * time.Millisecond

// defaultSlices is --slices when not given: each step in slices of 500 ms
// at the usual 4 s (BENCHMARKS.md, "Method" and "Session 9").
const defaultSlices = 8

// autoSlices is --slices when not given: defaultSlices, or as many slices
// of at least 500 ms as dur holds (at least one); one with --cpu-profile,
// whose profile of a slice would outlast it.
func autoSlices(dur time.Duration, profiled bool) int {
	if profiled {
		return 1
	}
	return max(1, min(defaultSlices, int(dur/(500*time.Millisecond))))
}

// intList parses "1,2,3"; "" is an empty list.
func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}
