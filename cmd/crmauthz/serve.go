package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/cliflags"
	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/filter"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/policy/source"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/server"
	"github.com/crmauthz/crmauthz/internal/tracing"
	"github.com/crmauthz/crmauthz/policies"
)

type serveOptions struct {
	configFile       string // --config (internal/cliflags)
	addr, adminAddr  string
	dataDir          string
	policiesDir      string
	tokenFile        string
	loadSnapshot     string
	consistencyWait  time.Duration
	maxBatchBytes    int64
	readyMinSeq      uint64
	shutdownTimeout  time.Duration
	logLevel         string
	indexLockTimeout time.Duration
	indexMergeBytes  int64
	indexPopulate    bool
	snapshotTimeout  time.Duration
	maxSnapshotBytes int64
	maxDecisionBytes int64
	maxBatchEvents   int
	dataAPIPaths     []string
	filterMapping    string
	maxInFlight      int
	readHeaderTO     time.Duration
	readTO           time.Duration
	adminMaxInFlight int
	evalTimeout      time.Duration // --eval-timeout (docs/policies.md "What is bounded")
	bodyTimeout      time.Duration // --body-timeout (docs/operations.md "Bounds")
	mem              memoryOptions // --memory-limit (memlimit.go)
	procs            procsOptions  // --adaptive-procs (procs.go)

	policiesRequireTests bool
	decisionCacheSlots   int
	policyEvaluator      string
	decisionLog          string
	decisionLogSample    float64
	decisionLogMask      []string
	decisionLogErase     []string
	decisionLogBuffer    int

	gw gatewayOptions // --grpc-addr, --subject-header, --jwt-* (gateway.go)

	nats natsServeOptions // --replication-source, --nats-* (natsflags.go)

	tracing tracingOptions // --otlp-*, --trace-sampling-ratio (tracingflags.go)

	pprof bool // --pprof (pprof.go)
}

func newServeCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve decisions (--addr) and the replication and admin API (--admin-addr)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validateServe(cmd.Flags(), &o); err != nil {
				return err
			}
			return serve(cmd.Context(), o)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

// addFlags registers serve's flags; validateServe checks them
// (validate.go). Every default is a component's DefaultConfig
// (TestServeFlagDefaults).
func (o *serveOptions) addFlags(f *pflag.FlagSet) {
	sd, ld := server.DefaultConfig(), server.DefaultConfig().Listeners
	ixd, rd, dld, pd := index.DefaultConfig(), replication.DefaultConfig(), decisionlog.DefaultConfig(), defaultPolicyConfig()
	cliflags.AddConfigFlag(f, &o.configFile)
	f.StringVar(&o.addr, "addr", ld.Addr, "listen address of the decision API")
	f.StringVar(&o.adminAddr, "admin-addr", ld.AdminAddr, "listen address of the replication API, /metrics, health and status")
	f.StringVar(&o.dataDir, "data-dir", ixd.Dir, "directory of the bbolt index file (index.db)")
	f.StringVar(&o.policiesDir, "policies", pd.Dir, "directory of Rego policies to serve instead of the built-in ones; watched, and reloaded when it changes")
	f.BoolVar(&o.policiesRequireTests, "policies-require-tests", pd.RequireTests, "refuse a policy (at start and on reload) whose Rego tests fail, or that has none")
	f.IntVar(&o.decisionCacheSlots, "decision-cache-slots", pd.DecisionCacheSlots, "slots of the exact decision cache (0: 65536; negative: no cache)")
	f.StringVar(&o.policyEvaluator, "policy-evaluator", evaluatorName(pd.Evaluator), "how decisions are evaluated: auto (OPA's plan of the policy by the IR interpreter, topdown for what it cannot run), ir (refuse such a policy), topdown")
	f.StringVar(&o.decisionLog, "decision-log", decisionLogOff, "decision log: off, stdout, or a file to append JSON lines to")
	f.Float64Var(&o.decisionLogSample, "decision-log-sample", dld.SampleRate, "fraction of decisions logged, from 0 (none) to 1 (all)")
	f.StringSliceVar(&o.decisionLogMask, "decision-log-mask", dld.Mask, "fields replaced by \""+decisionlog.Redacted+"\" in the decision log, e.g. input.target,input.subject")
	f.StringSliceVar(&o.decisionLogErase, "decision-log-erase", dld.Erase, "fields removed from the decision log, e.g. input.subject")
	f.IntVar(&o.decisionLogBuffer, "decision-log-buffer", dld.BufferSize, "decision log entries queued for the writer; when full, entries are dropped and counted")
	f.StringVar(&o.tokenFile, "replication-token-file", "", "file holding the replication bearer token (or set CRMAUTHZ_REPLICATION_TOKEN); without a token only loopback clients may replicate")
	f.StringVar(&o.loadSnapshot, "load-snapshot", "", "NDJSON snapshot file loaded at start when the index is empty (applied_seq 0)")
	f.DurationVar(&o.consistencyWait, "consistency-wait", sd.ConsistencyWait, "how long a decision with min_seq waits for the index before 503 index_behind")
	f.Int64Var(&o.maxBatchBytes, "max-batch-bytes", sd.MaxBatchBytes, "largest replication batch body in bytes (413 above)")
	f.IntVar(&o.maxBatchEvents, "max-batch-events", rd.MaxEvents, "most events in one replication batch (413 above)")
	f.Int64Var(&o.maxSnapshotBytes, "max-snapshot-bytes", sd.MaxSnapshotBytes, "largest snapshot body in bytes (413 above)")
	f.Int64Var(&o.maxDecisionBytes, "max-decision-bytes", sd.MaxDecisionBytes, "largest decision request body in bytes (413 above); 1 KiB to 64 MiB")
	f.DurationVar(&o.snapshotTimeout, "snapshot-timeout", sd.SnapshotTimeout, "time allowed to upload or download one snapshot")
	f.Uint64Var(&o.readyMinSeq, "ready-min-seq", sd.ReadyMinSeq, "/health/ready answers 503 until the index has applied this seq")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", ld.ShutdownTimeout, "time allowed for in-flight requests to finish on SIGTERM")
	f.DurationVar(&o.indexLockTimeout, "index-lock-timeout", ixd.Timeout, "how long to wait for the data directory's lock (<data-dir>/LOCK) at start")
	f.Int64Var(&o.indexMergeBytes, "index-merge-bytes", ixd.MergeBytes, "heap the index's overlay of recent replication batches may take before they are merged into the index file; more is faster for changes spread over a large index")
	f.BoolVar(&o.indexPopulate, "index-populate", false, "after the start, map the whole index file into memory in the background (reading it from disk where the page cache lacks it): no page faults on the file in decisions; VmRSS grows by the file's size (docs/operations.md)")
	f.DurationVar(&o.readHeaderTO, "read-header-timeout", ld.ReadHeaderTimeout, "time a client has to send the request headers (slowloris guard)")
	f.DurationVar(&o.readTO, "read-timeout", ld.ReadTimeout, "time a client has to send a whole request; snapshot uploads get --snapshot-timeout")
	f.IntVar(&o.maxInFlight, "max-in-flight", ld.MaxInFlight, "most requests the decision listener serves at once, up to 1000000; beyond, 503 overloaded (0: no limit)")
	f.IntVar(&o.adminMaxInFlight, "admin-max-in-flight", ld.AdminMaxInFlight, "most requests the admin listener serves at once; beyond, 503 overloaded (0: no limit)")
	f.DurationVar(&o.evalTimeout, "eval-timeout", pd.EvalTimeout, "time one policy evaluation may take; past it the request is denied (evaluation_timeout)")
	f.DurationVar(&o.bodyTimeout, "body-timeout", ld.BodyTimeout, "time a client has to send the first --max-decision-bytes of a request body, before the request takes an in-flight slot (408 after)")
	f.StringSliceVar(&o.dataAPIPaths, "data-api-paths", sd.DataPaths, "data paths the Data API (POST /v1/data/{path}) may evaluate; \"*\" for all (which lets callers read facts through the policy); empty: none")
	f.StringVar(&o.filterMapping, "filter-mapping", "", "YAML table mapping of the app's database for GET /v1/subjects/{id}/filter (docs/filtering.md); default: the default schema")
	f.StringVar(&o.logLevel, "log-level", defaultLogLevel, "log level: debug, info, warn, error")
	o.gw.addFlags(f)
	addMemoryFlags(f, &o.mem)
	addProcsFlags(f, &o.procs)
	addNATSServeFlags(f, &o.nats)
	addTracingFlags(f, &o.tracing)
	addPprofFlag(f, &o.pprof)
}

// defaultLogLevel is every command's --log-level default.
const defaultLogLevel = "info"

// decisionLogOff is --decision-log's value (and default) for no decision log.
const decisionLogOff = "off"

// defaultPolicyConfig is policy.Config's defaults as the flags show them
// (internal/policy has no DefaultConfig: a zero field is its default).
func defaultPolicyConfig() policy.Config {
	return policy.Config{Evaluator: policy.EvaluatorAuto, EvalTimeout: policy.DefaultEvalTimeout}
}

// evaluatorName is --policy-evaluator's name of e.
func evaluatorName(e policy.Evaluator) string {
	if e == policy.EvaluatorAuto {
		return "auto"
	}
	return string(e)
}

// policyConfig is the policy engine's configuration from the flags.
func (o *serveOptions) policyConfig() (policy.Config, error) {
	pcfg := policy.Config{FS: policies.FS, Dir: o.policiesDir, RequireTests: o.policiesRequireTests,
		DecisionCacheSlots: o.decisionCacheSlots, EvalTimeout: o.evalTimeout}
	if o.policiesDir != "" {
		pcfg.FS = nil
	}
	switch o.policyEvaluator {
	case evaluatorName(policy.EvaluatorAuto):
		pcfg.Evaluator = policy.EvaluatorAuto
	case string(policy.EvaluatorIR), string(policy.EvaluatorTopdown):
		pcfg.Evaluator = policy.Evaluator(o.policyEvaluator)
	default:
		return pcfg, fmt.Errorf("--policy-evaluator %q: want auto, ir or topdown", o.policyEvaluator)
	}
	return pcfg, nil
}

// indexConfig is the index's configuration from the flags.
func (o *serveOptions) indexConfig() index.Config {
	return index.Config{Dir: o.dataDir, Timeout: o.indexLockTimeout, MergeBytes: o.indexMergeBytes}
}

// replicationConfig is the replicator's configuration from the flags (Index unset).
func (o *serveOptions) replicationConfig() replication.Config {
	return replication.Config{MaxEvents: o.maxBatchEvents}
}

// serverConfig is the server's configuration from the flags, without its
// collaborators (Index, Engine, …).
func (o *serveOptions) serverConfig() server.Config {
	l := server.DefaultConfig().Listeners // write and idle timeouts, header limit: no flags
	l.Addr, l.AdminAddr, l.GRPCAddr = o.addr, o.adminAddr, o.gw.grpcAddr
	l.ReadHeaderTimeout, l.ReadTimeout, l.BodyTimeout = o.readHeaderTO, o.readTO, o.bodyTimeout
	l.MaxInFlight, l.AdminMaxInFlight, l.ShutdownTimeout = o.maxInFlight, o.adminMaxInFlight, o.shutdownTimeout
	return server.Config{
		MaxDecisionBytes: o.maxDecisionBytes, MaxBatchBytes: o.maxBatchBytes,
		MaxSnapshotBytes: o.maxSnapshotBytes, SnapshotTimeout: o.snapshotTimeout,
		ConsistencyWait: o.consistencyWait, ReadyMinSeq: o.readyMinSeq, DataPaths: o.dataAPIPaths,
		Pprof: o.pprof, Listeners: l,
	}
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// readToken returns the replication token from the file or the environment.
func readToken(file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--replication-token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return nil, fmt.Errorf("--replication-token-file %s is empty", file)
		}
		if _, set := os.LookupEnv(replicationTokenEnv); set {
			return nil, fmt.Errorf("both --replication-token-file and %s are set: give the token one way", replicationTokenEnv)
		}
		return []byte(tok), nil
	}
	env, set := os.LookupEnv(replicationTokenEnv)
	if !set {
		return nil, nil
	}
	// Set but blank is refused like a blank token file: it is a token that
	// went missing (an empty Secret), not a wish for no token
	// (docs/operations.md, "What it trusts").
	tok := strings.TrimSpace(env)
	if tok == "" {
		return nil, fmt.Errorf("%s is set but blank: give the token, or unset it (without a token only loopback clients may replicate)", replicationTokenEnv)
	}
	return []byte(tok), nil
}

// replicationTokenEnv holds the replication token itself (not a file).
const replicationTokenEnv = "CRMAUTHZ_REPLICATION_TOKEN"

func serve(ctx context.Context, o serveOptions) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	if unused := o.nats.unusedFlags(); len(unused) > 0 {
		log.Warn("NATS flags without --replication-source do nothing: serve reads NATS only for the replication log", "flags", unused)
	}
	if err := applyMemoryLimit(o.mem, log); err != nil {
		return err
	}
	if o.procs.adaptive {
		go runAdaptiveProcs(ctx, log, processCPU)
	}
	token, err := readToken(o.tokenFile)
	if err != nil {
		return err
	}
	idn, err := o.gw.identity()
	if err != nil {
		return err
	}
	fmap, err := mapping.Load(o.filterMapping)
	if err != nil {
		return fmt.Errorf("--filter-mapping: %w", err)
	}
	ftr, err := filter.New(filter.Config{Mapping: &fmap})
	if err != nil {
		return fmt.Errorf("--filter-mapping: %w", err)
	}

	m := metrics.New(metrics.DefaultConfig())
	pcfg, err := o.policyConfig()
	if err != nil {
		return err
	}
	eng, err := policy.New(pcfg)
	if err != nil {
		m.PolicyReload(false, "")
		return fmt.Errorf("policy: %w", err)
	}
	m.PolicyReload(true, eng.Revision())
	m.PolicyEvaluator(func() (string, bool) {
		ev, _ := eng.Evaluator()
		return string(ev), ev == policy.EvaluatorTopdown && pcfg.Evaluator == policy.EvaluatorAuto
	})
	if o.policiesDir != "" {
		w, err := source.New(source.Config{
			Dir: eng.Dir(), Logger: log,
			OnReload: func(ev source.Reload) { m.PolicyReload(ev.Err == nil, ev.Revision) },
		}, eng)
		if err != nil {
			return fmt.Errorf("watching --policies %s: %w", o.policiesDir, err)
		}
		defer w.Close()
	}

	dlog, err := openDecisionLog(o, m, log)
	if err != nil {
		return err
	}
	defer dlog.close()

	ixcfg := o.indexConfig()
	ix, err := index.Open(ixcfg)
	if err != nil && (errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission)) {
		// A read-only data directory: keep deciding from the last committed
		// index; replication answers 503 index_read_only until a restart on a
		// writable directory.
		log.Warn("the data directory is not writable: serving the last committed index read-only", "data_dir", o.dataDir, "err", err)
		ixcfg.ReadOnly = true
		ix, err = index.Open(ixcfg)
	}
	if err != nil {
		return err // index's errors say "index: …" already
	}
	defer func() {
		if err := ix.Close(); err != nil {
			log.Error("closing the index", "err", err)
		}
	}()
	if o.indexPopulate {
		go populateIndex(ctx, ix, log)
	}

	rcfg := o.replicationConfig()
	rcfg.Index = ix
	repl, err := replication.New(rcfg)
	if err != nil {
		return err
	}
	tr, err := o.tracing.newTracer(ctx, log)
	if err != nil {
		return err
	}
	if tr != nil {
		// after the listeners and the NATS source stopped: their last spans go too
		defer shutdownTracer(tr, log)
	}
	if o.loadSnapshot != "" {
		if err := loadSnapshotFile(ctx, repl, ix, o.loadSnapshot, m, log, tr); err != nil {
			return err
		}
	}

	natsSrc, source, err := o.nats.newSource(ix, repl, m, log, tr)
	if err != nil {
		return err
	}

	scfg := o.serverConfig()
	scfg.Index, scfg.Engine, scfg.Replicator, scfg.Metrics, scfg.Logger, scfg.Version = ix, eng, repl, m, log, version
	scfg.Token, scfg.DecisionLog, scfg.Identity, scfg.Source, scfg.Filter, scfg.Tracer = token, dlog.Logger, idn, source, ftr, tr
	srv, err := server.New(scfg)
	if err != nil {
		return err
	}
	if len(token) == 0 && !server.IsLoopbackAddr(o.adminAddr) {
		log.Warn("no replication token is configured: the replication API accepts loopback clients only", "admin_addr", o.adminAddr)
	}

	lc := scfg.Listeners
	servers := []*http.Server{
		// A body's first --max-decision-bytes are read before a slot is taken
		// (server.Limit): a client trickling its body holds no slot.
		lc.HTTPServer(lc.Addr, server.Limit(srv.DecisionHandler(), server.Limits{MaxInFlight: lc.MaxInFlight,
			OnReject:    func() { m.HTTPRequest("decision", "overloaded", http.StatusServiceUnavailable) },
			OnBodyError: func(code int) { m.HTTPRequest("decision", "body_not_received", code) },
			BodyBytes:   o.maxDecisionBytes, BodyTimeout: lc.BodyTimeout, ReadTimeout: lc.ReadTimeout})),
		lc.HTTPServer(lc.AdminAddr, server.Limit(srv.AdminHandler(), server.Limits{MaxInFlight: lc.AdminMaxInFlight,
			OnReject:    func() { m.HTTPRequest("admin", "overloaded", http.StatusServiceUnavailable) },
			OnBodyError: func(code int) { m.HTTPRequest("admin", "body_not_received", code) },
			BodyBytes:   o.maxDecisionBytes, BodyTimeout: lc.BodyTimeout, ReadTimeout: lc.ReadTimeout})),
	}
	// Bind every listener before serving any, so a port in use fails the start.
	listeners := make([]net.Listener, len(servers))
	for i, hs := range servers {
		ln, err := net.Listen("tcp", hs.Addr)
		if err != nil {
			for _, l := range listeners[:i] {
				l.Close()
			}
			return fmt.Errorf("listen %s: %w", hs.Addr, err)
		}
		listeners[i] = ln
	}
	grpcL, err := listenGRPC(srv, o.gw.grpcAddr)
	if err != nil {
		for _, l := range listeners {
			l.Close()
		}
		return err
	}
	errc := make(chan error, len(servers)+1)
	grpcL.serve(errc)
	for i, hs := range servers {
		go func() {
			if err := hs.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", hs.Addr, err)
			}
		}()
	}
	evaluator, whyNot := eng.Evaluator()
	gwEvaluator, gwWhyNot := eng.HTTPEvaluator()
	log.Info("crmauthz serving", "version", version, "addr", listeners[0].Addr().String(),
		"admin_addr", listeners[1].Addr().String(), "policy_revision", eng.Revision(),
		"applied_seq", ix.AppliedSeq(), "data_dir", o.dataDir, "grpc_addr", grpcL.addr(), "identity", idn.Mode(),
		"policy_evaluator", string(evaluator), "gateway_evaluator", string(gwEvaluator), "pprof", o.pprof)
	if whyNot != nil && pcfg.Evaluator == policy.EvaluatorAuto {
		log.Warn("the policy is evaluated by topdown, not the IR interpreter", "reason", whyNot.Error())
	}
	if gwEvaluator == policy.EvaluatorTopdown && pcfg.Evaluator != policy.EvaluatorTopdown {
		log.Warn("the gateways' decisions (data.crmauthz.http_decision) are evaluated by topdown, not the IR interpreter",
			"reason", fmt.Sprint(gwWhyNot))
	}
	if natsSrc != nil { // stopped before the index is closed (defers run last first)
		go natsSrc.Run(ctx)
		defer natsSrc.Close()
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: draining in-flight requests", "timeout", o.shutdownTimeout)
	case serveErr = <-errc:
		log.Error("listener failed, shutting down", "err", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	for _, hs := range servers {
		if err := hs.Shutdown(sctx); err != nil {
			log.Error("shutdown", "addr", hs.Addr, "err", err)
		}
	}
	grpcL.stop(sctx)
	log.Info("stopped", "applied_seq", ix.AppliedSeq())
	return serveErr
}

// loadSnapshotFile loads --load-snapshot into an empty index; with a Tracer the load is a span
// crmauthz.snapshot.load (source "file"), as a PUT /v1/replication/snapshot is (docs/operations.md,
// "Tracing").
func loadSnapshotFile(ctx context.Context, repl *replication.Replicator, ix *index.Index, file string, m *metrics.Metrics,
	log *slog.Logger, tr *tracing.Tracer) (err error) {
	if ix.AppliedSeq() != 0 {
		log.Info("--load-snapshot skipped: the index is not empty", "applied_seq", ix.AppliedSeq())
		return nil
	}
	var res replication.SnapshotResult
	if tr != nil {
		if _, sp := tr.StartSampled(ctx, tracing.SpanSnapshotLoad, trace.SpanKindInternal); sp != nil {
			defer func() {
				b := tracing.Batch{Source: metrics.SnapshotSourceFile, Users: res.Users, Records: res.Records, AppliedSeq: ix.AppliedSeq()}
				if err != nil {
					b.Error = "load_failed"
				}
				tracing.EndSnapshot(sp, b)
			}()
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("--load-snapshot: %w", err)
	}
	defer f.Close()
	res, err = repl.LoadSnapshot(f)
	m.SnapshotLoad(metrics.SnapshotSourceFile, err == nil)
	if err != nil {
		return fmt.Errorf("--load-snapshot %s: %w", file, err)
	}
	log.Info("snapshot loaded", "file", file, "applied_seq", res.AppliedSeq, "users", res.Users, "records", res.Records)
	return nil
}

// populateIndex maps the index file in the background (--index-populate) and logs what it took.
func populateIndex(ctx context.Context, ix *index.Index, log *slog.Logger) {
	t0 := time.Now()
	n, err := ix.Populate(ctx)
	if err != nil && !errors.Is(err, index.ErrClosed) && ctx.Err() == nil {
		log.Warn("--index-populate: the index file is mapped only in part", "bytes", n, "err", err)
		return
	}
	log.Info("--index-populate: the index file is mapped", "bytes", n, "took", time.Since(t0).Round(time.Millisecond))
}
