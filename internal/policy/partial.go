package policy

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
)

// FilterInput is the input of the data filter's entry point,
// data.crmauthz.view_filter (filter.rego): may Subject view a record of Type in
// LocationID? The record itself is the unknown.
type FilterInput struct {
	Subject, Type, LocationID string
}

// Partial is what partial evaluation of data.crmauthz.view_filter leaves: the
// record may be viewed when one of Queries holds (each a conjunction of
// expressions over the unknowns). No query: never; an empty query: always.
// Support holds the rules partial evaluation could not inline (a filter
// cannot use them). Unknowns are the references that were unknown.
type Partial struct {
	Queries  []ast.Body
	Support  []*ast.Module
	Unknowns []ast.Ref
}

// ViewFilterPath is the path of the data filter's entry point.
var ViewFilterPath = []string{"crmauthz", "view_filter"}

// DefaultFilterUnknown is the unknown of the data filter when the entry point
// declares none in its METADATA (compile: unknowns).
var DefaultFilterUnknown = ast.MustParseRef("input.record")

// ErrNoViewFilter is the error of PartialView for a policy without
// data.crmauthz.view_filter.
var ErrNoViewFilter = errors.New("the policy defines no data.crmauthz.view_filter (the data filter's entry point, docs/filtering.md)")

// partialPlan is the prepared partial evaluation of one revision.
type partialPlan struct {
	once     sync.Once
	pq       rego.PreparedPartialQuery
	unknowns []*ast.Term
	refs     []ast.Ref
	err      error
	cache    *partialCache
}

// PartialView partially evaluates data.crmauthz.view_filter for in: the
// subject's facts are read from facts (crm.user, crm.record are bound as for
// decisions), the record is unknown. It returns the revision that evaluated.
//
// Results are cached per revision like decisions (when the decision cache is
// on): an entry holds the facts the evaluation read, and is used only when
// re-reading them in facts gives the same bytes.
func (e *Engine) PartialView(ctx context.Context, facts Facts, in FilterInput) (*Partial, string, error) {
	p := e.cur.Load()
	pl := p.partialPlan(ctx)
	if pl.err != nil {
		return nil, p.revision, pl.err
	}
	if err := ctx.Err(); err != nil {
		return nil, p.revision, err
	}
	if p.cache == nil || facts == nil {
		r, err := p.partialView(ctx, pl, facts, in)
		return r, p.revision, err
	}
	// Lengths first: ids may hold any byte, and two inputs never share a key.
	key := strconv.Itoa(len(in.Subject)) + ":" + strconv.Itoa(len(in.Type)) + ":" + in.Subject + in.Type + in.LocationID
	if r := pl.cache.lookup(key, facts); r != nil {
		return r, p.revision, nil
	}
	rec := &depRecorder{Facts: facts, seed: pl.cache.seed, deps: make([]factDep, 0, 2)}
	r, err := p.partialView(ctx, pl, rec, in)
	if err == nil && !rec.err {
		pl.cache.store(key, rec.deps, r)
	}
	return r, p.revision, err
}

func (p *prepared) partialView(ctx context.Context, pl *partialPlan, facts Facts, in FilterInput) (*Partial, error) {
	input := ast.NewObject(
		[2]*ast.Term{p.keys.subject, ast.StringTerm(in.Subject)},
		[2]*ast.Term{p.keys.action, ast.StringTerm("view")},
		[2]*ast.Term{p.keys.typ, ast.StringTerm(in.Type)},
		[2]*ast.Term{ast.StringTerm("location_id"), ast.StringTerm(in.LocationID)},
	)
	pqs, err := pl.pq.Partial(WithFacts(ctx, facts),
		rego.EvalParsedInput(input),
		rego.EvalParsedUnknowns(pl.unknowns),
		rego.EvalMetrics(metrics.NoOp()),
		rego.EvalRuleIndexing(false),
	)
	if err != nil {
		return nil, fmt.Errorf("partially evaluating data.crmauthz.view_filter: %w", err)
	}
	return &Partial{Queries: pqs.Queries, Support: pqs.Support, Unknowns: pl.refs}, nil
}

// maxPartialEntries bounds the partial evaluation cache of one revision.
const maxPartialEntries = 4096

// partialCache holds partial evaluation results with the facts they read.
// The results are shared: callers only read them.
type partialCache struct {
	seed    maphash.Seed
	mu      sync.Mutex
	entries map[string]partialEntry
}

type partialEntry struct {
	deps []factDep
	r    *Partial
}

func (c *partialCache) lookup(key string, facts Facts) *Partial {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok {
		return nil
	}
	for _, d := range e.deps {
		var js []byte
		var err error
		if d.record {
			js, err = facts.RecordJSON(d.typ, d.id)
		} else {
			js, err = facts.UserJSON(d.id)
		}
		if err != nil || (js != nil) != d.present || len(js) != d.n || (js != nil && maphash.Bytes(c.seed, js) != d.sum) {
			return nil
		}
	}
	return e.r
}

func (c *partialCache) store(key string, deps []factDep, r *Partial) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxPartialEntries {
		for k := range c.entries { // evict one entry at random
			delete(c.entries, k)
			break
		}
	}
	c.entries[key] = partialEntry{deps: deps, r: r}
}

// partialPlan prepares the partial evaluation once per revision.
func (p *prepared) partialPlan(ctx context.Context) *partialPlan {
	pl := &p.partial
	pl.once.Do(func() {
		ref := refOf(ViewFilterPath)
		rules := p.compiler.GetRulesExact(ref)
		if len(rules) == 0 {
			pl.err = ErrNoViewFilter
			return
		}
		pl.refs = unknownsOf(p.compiler, rules[0])
		if len(pl.refs) == 0 {
			pl.refs = []ast.Ref{DefaultFilterUnknown}
		}
		for _, r := range pl.refs {
			pl.unknowns = append(pl.unknowns, ast.NewTerm(r))
		}
		opts := append([]func(*rego.Rego){
			rego.Compiler(p.compiler),
			rego.Store(p.store),
			rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
			rego.StrictBuiltinErrors(true),
			rego.SetRegoVersion(ast.RegoV1),
		}, p.builtins...)
		pl.cache = &partialCache{seed: maphash.MakeSeed(), entries: map[string]partialEntry{}}
		pl.pq, pl.err = rego.New(opts...).PrepareForPartial(ctx)
		if pl.err != nil {
			pl.err = fmt.Errorf("preparing data.crmauthz.view_filter: %w", pl.err)
		}
	})
	return pl
}

// unknownsOf reads the unknowns a rule's METADATA declares (compile:
// unknowns), as OPA's Compile API does.
func unknownsOf(c *ast.Compiler, rule *ast.Rule) []ast.Ref {
	as := c.GetAnnotationSet()
	if as == nil {
		return nil
	}
	var refs []ast.Ref
	for _, ar := range as.Chain(rule) {
		if a := ar.Annotations; a != nil && a.Compile != nil {
			refs = append(refs, a.Compile.Unknowns...)
		}
	}
	return refs
}

// UnknownsOf returns the unknowns the METADATA of the rules at data.<path>
// declares (compile: unknowns), for OPA's Compile API; nil when none.
func (e *Engine) UnknownsOf(path []string) []ast.Ref {
	p := e.cur.Load()
	rules := p.compiler.GetRulesExact(refOf(path))
	if len(rules) == 0 {
		return nil
	}
	return unknownsOf(p.compiler, rules[0])
}
