// Package policy evaluates the crmauthz Rego policy.
//
// An Engine loads the policy sources (an fs.FS, by default the embedded
// policies, or a directory), compiles them with the built-in functions
// crm.user and crm.record, and prepares the query data.crmauthz.decision once
// per policy revision. The built-ins read the facts of a decision from a
// Facts (an index read transaction) carried by the evaluation's context, and
// convert the JSON they get straight to ast values.
//
// Every failure is an error, never a silent allow: an index read error aborts
// the evaluation (rego.StrictBuiltinErrors), and an undefined decision, more
// than one result or a result that is not {"allow": bool, "reason": string}
// is an error the server answers with a deny.
package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/crmauthz/crmauthz/internal/policy/irvm"
	"github.com/crmauthz/crmauthz/internal/policy/source"
)

// maxCachedQueries bounds the prepared Data API queries kept per revision.
const maxCachedQueries = 64

// Input is one decision request (regovalue.Input).
type Input = regovalue.Input

// Decision is the policy's answer.
type Decision struct {
	Allow  bool
	Reason string
}

// ReloadStatus describes the policy in service.
type ReloadStatus struct {
	Revision   string    // revision in service
	LastReload time.Time // when the revision in service was loaded (New, or the Reload that applied it)
	LastError  error     // error of the last Reload; nil after a good one
}

// Engine evaluates the policy. It is safe for concurrent use.
type Engine struct {
	cfg Config
	cur atomic.Pointer[prepared]

	reloadMu sync.Mutex // one Reload at a time
	// lastSeen fingerprints the sources (tests included) of the last load
	// attempt; a reload of the same sources repeats its outcome without
	// compiling again. Guarded by reloadMu.
	lastSeen string

	statusMu   sync.Mutex
	lastReload time.Time
	lastErr    error

	cacheHits, cacheMisses atomic.Uint64
}

// New loads, compiles and prepares the policy. The error of a policy that does
// not compile has one "file:line:col: code: message" line per problem. With
// Config.RequireTests, the policy's tests must pass too.
func New(cfg Config) (*Engine, error) {
	switch {
	case cfg.EvalTimeout < 0:
		return nil, fmt.Errorf("policy: Config.EvalTimeout is negative (%s)", cfg.EvalTimeout)
	case cfg.EvalTimeout == 0:
		cfg.EvalTimeout = DefaultEvalTimeout
	}
	files, err := readSources(cfg)
	if err != nil {
		return nil, err
	}
	p, err := build(context.Background(), cfg, files, nil)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, lastReload: time.Now(), lastSeen: fingerprintOf(files)}
	e.cur.Store(p)
	return e, nil
}

// Dir is the policy directory the engine loads from; "" for an fs.FS.
func (e *Engine) Dir() string { return e.cfg.Dir }

// Revision returns the revision in service: the first 16 hex digits of a
// SHA-256 over the sorted names and contents of the served sources.
func (e *Engine) Revision() string {
	return e.cur.Load().revision
}

// Reload re-reads the sources (Config.Dir or Config.FS) and compiles them. On
// success the new policy replaces the old one atomically (evaluations in
// flight finish on the old one); on failure the old one stays in service and
// the error is returned and kept for Status.
//
// With Config.RequireTests the tests run first, and a failure is an error
// like a compile error. Sources identical to those of the previous attempt
// are not compiled (nor tested) again: the outcome of that attempt stands.
func (e *Engine) Reload() error {
	_, err := e.reload(context.Background())
	return err
}

// ReloadSources is Reload for a source.Watcher (source.Reloader): it also
// says what the attempt did and which evaluator a new revision runs on.
func (e *Engine) ReloadSources(ctx context.Context) source.Reload {
	prev := e.Revision()
	outcome, err := e.reload(ctx)
	r := source.Reload{Outcome: outcome, Revision: e.Revision(), Previous: prev, Err: err}
	if outcome == source.Applied {
		evaluator, whyNot := e.Evaluator()
		r.Attrs = []any{"policy_evaluator", string(evaluator)}
		if whyNot != nil {
			r.Attrs = append(r.Attrs, "why_not_ir", whyNot.Error())
		}
		if gw, whyNot := e.HTTPEvaluator(); gw != evaluator {
			r.Attrs = append(r.Attrs, "gateway_evaluator", string(gw))
			if whyNot != nil {
				r.Attrs = append(r.Attrs, "gateway_why_not_ir", whyNot.Error())
			}
		}
	}
	return r
}

func (e *Engine) reload(ctx context.Context) (source.Outcome, error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	old := e.cur.Load()
	files, err := readSources(e.cfg)
	var fp string
	if err == nil {
		fp = fingerprintOf(files)
	} else {
		fp = "error: " + err.Error()
	}
	if fp == e.lastSeen {
		e.statusMu.Lock()
		defer e.statusMu.Unlock()
		return source.Same, e.lastErr
	}
	e.lastSeen = fp
	p := old
	if err == nil {
		p, err = build(ctx, e.cfg, files, old)
	}
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	if err != nil {
		e.lastErr = err
		return source.Failed, err
	}
	e.lastErr = nil
	if p == old {
		return source.Unchanged, nil
	}
	e.cur.Store(p)
	e.lastReload = time.Now()
	return source.Applied, nil
}

// Status returns the revision in service and the outcome of the last reload.
func (e *Engine) Status() ReloadStatus {
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	return ReloadStatus{Revision: e.cur.Load().revision, LastReload: e.lastReload, LastError: e.lastErr}
}

// Decide evaluates data.crmauthz.decision for in with the facts. It returns
// the revision that decided. Any error means no decision: deny.
//
// Decisions are cached exactly (see cache.go): an input decided before with
// the same facts is answered without evaluating again.
func (e *Engine) Decide(ctx context.Context, facts Facts, in Input) (Decision, string, error) {
	p := e.cur.Load()
	if p.cache == nil || facts == nil {
		d, err := p.decide(ctx, facts, in)
		return d, p.revision, err
	}
	if err := ctx.Err(); err != nil {
		return Decision{}, p.revision, p.stopped(ctx, err)
	}
	d, ok, slot := p.cache.lookup(facts, &in)
	if ok {
		e.cacheHits.Add(1)
		return d, p.revision, nil
	}
	e.cacheMisses.Add(1)
	if slot == nil { // not recorded: the cache is sampling (cache.go)
		d, err := p.decide(ctx, facts, in)
		return d, p.revision, err
	}
	rec := p.cache.recorder(facts)
	d, err := p.decide(ctx, rec, in)
	if err == nil && !rec.err {
		p.cache.store(slot, &in, rec.deps, d)
	}
	p.cache.release(rec)
	return d, p.revision, err
}

func (p *prepared) decide(ctx context.Context, facts Facts, in Input) (Decision, error) {
	if pl := p.vm.Load(); pl != nil && pl.prog != nil {
		if err := ctx.Err(); err != nil {
			return Decision{}, p.stopped(ctx, err)
		}
		d, fallback, err := p.decideVM(ctx, pl, facts, in)
		if !fallback {
			return d, err
		}
		// The interpreter failed, not the policy: topdown decides (the
		// reference).
	}
	td, err := p.topdown(ctx)
	if err != nil {
		return Decision{}, err
	}
	rs, err := p.eval(ctx, td.decision, p.decisionOpts, facts, p.input(in))
	if err != nil {
		return Decision{}, fmt.Errorf("evaluating data.crmauthz.decision: %w", err)
	}
	return p.decisionOf(rs)
}

// isVMBug tells whether err is the interpreter's own failure
// (irvm.InternalError). The target of errors.As is declared only for an
// error, where it escapes to the heap, not on every decision.
func isVMBug(err error) bool {
	if err == nil {
		return false
	}
	var bug *irvm.InternalError
	return errors.As(err, &bug)
}

// Evaluator tells how the revision in service evaluates decisions:
// EvaluatorIR or EvaluatorTopdown (see Config.Evaluator), and why not the
// IR interpreter when it is topdown by default.
func (e *Engine) Evaluator() (Evaluator, error) {
	if pl := e.cur.Load().vm.Load(); pl.prog == nil {
		return EvaluatorTopdown, pl.err
	}
	return EvaluatorIR, nil
}

// vmPlan is the outcome of planning a revision for the IR interpreter.
type vmPlan struct {
	prog *irvm.Program // nil: topdown, for the reason in err
	err  error
	// factsInPlace: the program's strings may be cut from the facts' JSON
	// itself (see factsInPlace)
	factsInPlace bool
	// http decides gateway requests (data.crmauthz.http_decision,
	// httpvm.go)
	http httpPlan
}

// CacheStats returns the decision cache's hits and misses since New.
func (e *Engine) CacheStats() (hits, misses uint64) {
	return e.cacheHits.Load(), e.cacheMisses.Load()
}

// Query evaluates data.<path...> (the Data API) with input; a nil input means
// no input. defined is false when the document is undefined. The result is a
// JSON-compatible Go value. Prepared queries are cached per revision.
func (e *Engine) Query(ctx context.Context, facts Facts, path []string, input ast.Value) (result any, defined bool, revision string, err error) {
	p := e.cur.Load()
	pq, err := p.query(ctx, path)
	if err != nil {
		return nil, false, p.revision, err
	}
	rs, err := p.eval(ctx, pq, p.queryOpts, facts, input)
	if err != nil {
		return nil, false, p.revision, fmt.Errorf("evaluating %v: %w", refOf(path), err)
	}
	switch {
	case len(rs) == 0:
		return nil, false, p.revision, nil
	case len(rs) > 1 || len(rs[0].Expressions) != 1:
		return nil, false, p.revision, fmt.Errorf("evaluating %v: %d results", refOf(path), len(rs))
	}
	return rs[0].Expressions[0].Value, true, p.revision, nil
}

// prepared is one compiled revision of the policy with its prepared queries.
type prepared struct {
	revision string
	// served are the sources of the revision (tests left out), from which
	// topdown's side is built at its first use (topdown.go)
	served   []source.File
	store    storage.Store
	builtins []func(*rego.Rego)

	// td is topdown's side of the revision (OPA's compiler, the parsed
	// modules, the prepared decision): set by build when topdown decides,
	// else at its first use (topdown.go); tdMu serialises that build, and
	// tdBuilds counts them.
	td       atomic.Pointer[topdownState]
	tdMu     sync.Mutex
	tdBuilds atomic.Uint32
	// vm runs the plan of data.crmauthz.decision (decisionvm.go, internal/policy/irvm), or says why
	// topdown decides. Set before the revision is in service.
	vm atomic.Pointer[vmPlan]
	// vmFaults counts decisions the interpreter failed on (its own error,
	// never the policy's), which topdown then made.
	vmFaults atomic.Uint64
	// vmInputs pools the interpreter's input and fact storage (*vmInput,
	// vminput.go).
	vmInputs sync.Pool
	// cache holds decisions with the facts they read; nil when off or when
	// the policy is not deterministic.
	cache *decisionCache
	// decisionOpts are the evaluation options of every decision that do not
	// depend on the request (no metrics, result as ast.Value).
	decisionOpts []rego.EvalOption
	queryOpts    []rego.EvalOption
	// evalTimeout bounds each evaluation; limits counts the stopped ones
	// (shared by the revisions of one Engine). See limits.go.
	evalTimeout time.Duration
	limits      *limitCounters

	// terms of the input and the result, shared and never modified
	keys   inputKeys
	intern internTable

	mu      sync.Mutex
	queries map[string]rego.PreparedEvalQuery

	// partial is the data filter's partial evaluation (partial.go),
	// prepared at its first use.
	partial partialPlan
}

type inputKeys struct {
	subject, action, resource, typ, id, target, allow, reason *ast.Term
	// of the gateway's input and decision (prepared.httpInput,
	// httpDecisionFromValue)
	method, path, segments, body, targets, message *ast.Term
}

// build compiles and prepares files (read from cfg's source); when the
// revision of the served files equals old's, old is returned unchanged. With
// cfg.RequireTests the tests run first and must pass.
func build(ctx context.Context, cfg Config, files []source.File, old *prepared) (*prepared, error) {
	if cfg.RequireTests {
		if err := requireTests(ctx, files); err != nil {
			return nil, err
		}
	}
	served := slices.DeleteFunc(slices.Clone(files), source.File.IsTest)
	if old != nil && len(served) > 0 && source.Revision(served) == old.revision {
		return old, nil
	}
	lp, err := loadFiles(cfg, served, false, false)
	if err != nil {
		return nil, err
	}
	if err := checkEntryPoint(lp.compiler); err != nil {
		return nil, err
	}
	p := &prepared{
		revision:    lp.revision,
		served:      served,
		store:       inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false)),
		builtins:    Builtins(),
		evalTimeout: cfg.EvalTimeout,
		limits:      new(limitCounters),
		intern:      newInternTable(),
		queries:     map[string]rego.PreparedEvalQuery{},
		keys: inputKeys{
			subject: ast.StringTerm("subject"), action: ast.StringTerm("action"),
			resource: ast.StringTerm("resource"), typ: ast.StringTerm("type"),
			id: ast.StringTerm("id"), target: ast.StringTerm("target"),
			allow: ast.StringTerm("allow"), reason: ast.StringTerm("reason"),
			method: ast.StringTerm("method"), path: ast.StringTerm("path"),
			segments: ast.StringTerm("segments"), body: ast.StringTerm("body"),
			targets: ast.StringTerm("targets"), message: ast.StringTerm("message"),
		},
	}
	if old != nil {
		p.limits = old.limits
	}
	noMetrics := rego.EvalMetrics(metrics.NoOp())
	p.decisionOpts = []rego.EvalOption{noMetrics, rego.EvalGenerateJSON(resultAsValue)}
	p.queryOpts = []rego.EvalOption{noMetrics}
	for _, a := range []string{"view", "edit", "delete", "change_owner", "add_follower", "remove_follower"} {
		p.intern.Add(a)
	}
	// Prepared here whatever the evaluator, so that a policy topdown cannot
	// prepare fails now, not at its first topdown use.
	td, err := p.newTopdownState(context.Background(), lp.compiler, lp.modules)
	if err != nil {
		return nil, err
	}
	switch cfg.Evaluator {
	case EvaluatorIR:
		prog, err := newVM(ctx, served, lp.modules, decisionEntry)
		if err != nil {
			return nil, fmt.Errorf("the IR evaluator cannot run this policy: %w", err)
		}
		p.vm.Store(&vmPlan{prog: prog, factsInPlace: factsInPlace(prog), http: planHTTP(ctx, lp, served)})
	case EvaluatorAuto:
		prog, err := newVM(ctx, served, lp.modules, decisionEntry)
		p.vm.Store(&vmPlan{prog: prog, err: err, factsInPlace: prog != nil && factsInPlace(prog), http: planHTTP(ctx, lp, served)})
	case EvaluatorTopdown:
		p.vm.Store(&vmPlan{err: errTopdownChosen, http: httpPlan{err: errTopdownChosen}})
	default:
		return nil, fmt.Errorf("policy: unknown evaluator %q", cfg.Evaluator)
	}
	if cfg.DecisionCacheSlots >= 0 && deterministic(lp.compiler) {
		slots := cfg.DecisionCacheSlots
		if slots == 0 {
			slots = defaultCacheSlots
		}
		p.cache = newDecisionCache(slots)
	}
	// Topdown's side is kept when topdown decides (decisions or gateway
	// requests), or when the revision replaced had used it (the paths that
	// use it are in use: the first request after a reload does not wait for
	// the build); else it is dropped and built at its first use
	// (topdown.go).
	if pl := p.vm.Load(); pl.prog == nil || pl.http.needsTopdown() || (old != nil && old.td.Load() != nil) {
		p.td.Store(td)
	}
	return p, nil
}

// resultAsValue keeps a result as ast.Value (no conversion to Go values).
func resultAsValue(t *ast.Term, _ *rego.EvalContext) (any, error) {
	return t.Value, nil
}

// prepareWith prepares data.<ref> for topdown on the compiled policy c.
func (p *prepared) prepareWith(ctx context.Context, c *ast.Compiler, ref ast.Ref) (rego.PreparedEvalQuery, error) {
	opts := append([]func(*rego.Rego){
		rego.Compiler(c),
		rego.Store(p.store),
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		rego.StrictBuiltinErrors(true),
		rego.SetRegoVersion(ast.RegoV1),
	}, p.builtins...)
	return rego.New(opts...).PrepareForEval(ctx)
}

// query returns the prepared query of data.<path...>, from the cache if it
// is there.
func (p *prepared) query(ctx context.Context, path []string) (rego.PreparedEvalQuery, error) {
	key := joinPath(path)
	p.mu.Lock()
	pq, ok := p.queries[key]
	p.mu.Unlock()
	if ok {
		return pq, nil
	}
	td, err := p.topdown(ctx)
	if err != nil {
		return pq, err
	}
	pq, err = p.prepareWith(ctx, td.compiler, refOf(path))
	if err != nil {
		return pq, fmt.Errorf("preparing %v: %w", refOf(path), err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queries) >= maxCachedQueries {
		for k := range p.queries { // evict one entry at random
			delete(p.queries, k)
			break
		}
	}
	p.queries[key] = pq
	return pq, nil
}

// eval runs pq with the facts in the context and the given input (nil: none).
func (p *prepared) eval(ctx context.Context, pq rego.PreparedEvalQuery, base []rego.EvalOption, facts Facts, input ast.Value) (rego.ResultSet, error) {
	if err := ctx.Err(); err != nil {
		return nil, p.stopped(ctx, err)
	}
	ctx = WithFacts(ctx, facts)
	// Cancel the evaluation at its deadline (limits.go) or with ctx, without
	// the goroutine rego starts per evaluation otherwise.
	dl := newEvalDeadline(p.evalTimeout)
	defer dl.stop()
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, dl.cancel.Cancel)
		defer stop()
	}
	opts := make([]rego.EvalOption, 0, len(base)+2)
	opts = append(opts, base...)
	opts = append(opts, rego.EvalExternalCancel(dl.cancel))
	if input != nil {
		opts = append(opts, rego.EvalParsedInput(input))
	}
	rs, err := pq.Eval(ctx, opts...)
	if err != nil && dl.expired.Load() {
		err = fmt.Errorf("%w (%s)", ErrEvalTimeout, p.evalTimeout)
	}
	return rs, p.stopped(ctx, err)
}

// input builds the decision input by hand:
// {"subject", "action", "resource": {"type", "id"}, "target"?}.
func (p *prepared) input(in Input) ast.Value {
	k := &p.keys
	ts := new([6]ast.Term) // one allocation for the terms
	ts[0].Value = ast.String(in.Subject)
	action := p.str(in.Action, &ts[1])
	typ := p.str(in.ResourceType, &ts[2])
	ts[3].Value = ast.String(in.ResourceID)
	ts[4].Value = ast.NewObject([2]*ast.Term{k.typ, typ}, [2]*ast.Term{k.id, &ts[3]})
	if in.HasTarget {
		ts[5].Value = ast.String(in.Target)
		return ast.NewObject(
			[2]*ast.Term{k.subject, &ts[0]},
			[2]*ast.Term{k.action, action},
			[2]*ast.Term{k.resource, &ts[4]},
			[2]*ast.Term{k.target, &ts[5]},
		)
	}
	return ast.NewObject(
		[2]*ast.Term{k.subject, &ts[0]},
		[2]*ast.Term{k.action, action},
		[2]*ast.Term{k.resource, &ts[4]},
	)
}

// str returns the shared term of a frequent string (an action, a record
// type), else t set to s.
func (p *prepared) str(s string, t *ast.Term) *ast.Term {
	if shared := p.intern.Get(s); shared != nil {
		return shared
	}
	t.Value = ast.String(s)
	return t
}
