package policy

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
)

// FilterInput is what the data filter asks: may Subject view a record of Type
// in LocationID? The record itself is the unknown.
type FilterInput struct {
	Subject, Type, LocationID string
}

// Branch is one rule of the decision's else chain, partially evaluated with
// the record unknown: the rule applies when one of When holds, and it then
// allows when one of Allow holds (each query a conjunction of expressions over
// the unknown; no query: never, an empty query: always).
type Branch struct {
	When, Allow []ast.Body
}

// Partial is what partial evaluation of the decision leaves for a view: the
// branches of its else chain in order (the first that applies decides; a
// branch that never applies is left out, and so are the branches after one
// that always applies), the rules partial evaluation saved for them (under
// data.partial: negations it could not inline), and the reference that
// stands for the record (data.crmauthz.record).
type Partial struct {
	Branches []Branch
	Support  []*ast.Module
	Unknowns []ast.Ref

	memoMu sync.Mutex
	memo   map[string]any
}

// maxMemo bounds the values memoized per Partial.
const maxMemo = 16

// Memo returns the value memoized under key, computing it with f the first
// time (errors are not kept; beyond maxMemo keys f runs every time). A cached
// Partial is shared by the evaluations it answers, so what is derived from
// it (its translation for one location and dialect) is computed once.
// Callers only read the values.
func (p *Partial) Memo(key string, f func() (any, error)) (any, error) {
	p.memoMu.Lock()
	v, ok := p.memo[key]
	p.memoMu.Unlock()
	if ok {
		return v, nil
	}
	v, err := f()
	if err != nil {
		return nil, err
	}
	p.memoMu.Lock()
	if p.memo == nil {
		p.memo = map[string]any{}
	}
	if len(p.memo) < maxMemo {
		p.memo[key] = v
	}
	p.memoMu.Unlock()
	return v, nil
}

// DecisionPath is the path of the decision the data filter is derived from.
var DecisionPath = []string{"crmauthz", "decision"}

// RecordPath is the path of the rule that reads the decision's record
// (crm.record of the input's resource): the data filter's unknown.
var RecordPath = []string{"crmauthz", "record"}

// ErrNoViewFilter is the error of PartialView for a policy whose decision
// the data filter cannot be derived from.
var ErrNoViewFilter = errors.New("the policy defines no data.crmauthz.decision and data.crmauthz.record to derive the data filter from (docs/filtering.md)")

// ErrFilterUnderivable is the error of PartialView for a decision the data
// filter cannot be derived from (several rules, a value without "allow").
var ErrFilterUnderivable = errors.New("the data filter cannot be derived from the policy")

// partialPlan is the prepared partial evaluation of one revision.
type partialPlan struct {
	once sync.Once
	// evalMu runs one partial evaluation of pq at a time (partial)
	evalMu   sync.Mutex
	pq       rego.PreparedPartialQuery
	branches []partialBranch
	unknowns []*ast.Term
	refs     []ast.Ref
	err      error
	cache    *partialCache
}

// partialBranch is one rule of the chain; allowConst is its "allow" when
// its value is a constant object, nil when partial evaluation decides it.
type partialBranch struct {
	allowConst *bool
}

// PartialView partially evaluates data.crmauthz.decision for a view (input
// {"subject", "action": "view", "resource": {"type"}}, no target) with
// data.crmauthz.record and input.resource.id unknown, every branch of its
// else chain in one evaluation (preparePartial): the subject's facts are read
// from facts (crm.user is bound as for decisions). It returns the revision
// that evaluated.
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
	// The location is not part of the evaluation (the translator uses it).
	key := strconv.Itoa(len(in.Subject)) + ":" + in.Subject + in.Type
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
		[2]*ast.Term{p.keys.resource, ast.NewTerm(ast.NewObject([2]*ast.Term{p.keys.typ, ast.StringTerm(in.Type)}))},
	)
	pqs, err := pl.partial(ctx, facts, input)
	if err != nil {
		return nil, fmt.Errorf("partially evaluating data.crmauthz.decision: %w", err)
	}
	// Each query ends in __crmauthz_branch__ = [i, allow]: group by branch.
	when := make([][]ast.Body, len(pl.branches))
	allow := make([][]ast.Body, len(pl.branches))
	for _, q := range pqs.Queries {
		i, isAllow, rest, err := branchOf(q, len(pl.branches))
		if err != nil {
			return nil, err
		}
		if isAllow {
			allow[i] = append(allow[i], rest)
		} else {
			when[i] = append(when[i], rest)
		}
	}
	out := &Partial{Support: pqs.Support, Unknowns: pl.refs}
	for i, b := range pl.branches {
		if len(when[i]) == 0 {
			continue // never applies
		}
		br := Branch{When: when[i], Allow: allow[i]}
		if b.allowConst != nil {
			br.Allow = nil
			if *b.allowConst {
				br.Allow = br.When
			}
		}
		out.Branches = append(out.Branches, br)
		if slices.ContainsFunc(when[i], func(q ast.Body) bool { return len(q) == 0 }) {
			break // always applies: the branches after it are never reached
		}
	}
	return out, nil
}

// partial runs the partial evaluation for input, one at a time, and returns
// copies of its queries and support modules: OPA's copy propagation rewrites
// terms of the saved queries in place, some of them the compiled chain
// rule's own (its [i, allow] keys), shared by every evaluation and so by
// their results (data races otherwise: TestPartialViewConcurrent under
// -race).
func (pl *partialPlan) partial(ctx context.Context, facts Facts, input ast.Value) (*rego.PartialQueries, error) {
	pl.evalMu.Lock()
	defer pl.evalMu.Unlock()
	pqs, err := pl.pq.Partial(WithFacts(ctx, facts),
		rego.EvalParsedInput(input),
		rego.EvalParsedUnknowns(pl.unknowns),
		rego.EvalMetrics(metrics.NoOp()),
		rego.EvalRuleIndexing(false),
	)
	if err != nil {
		return nil, err
	}
	out := &rego.PartialQueries{Queries: make([]ast.Body, len(pqs.Queries)), Support: make([]*ast.Module, len(pqs.Support))}
	for i, q := range pqs.Queries {
		out.Queries[i] = q.Copy()
	}
	for i, m := range pqs.Support {
		out.Support[i] = m.Copy()
	}
	return out, nil
}

// branchVar is the variable of the filter's query: [branch, allow].
const branchVar = ast.Var("__crmauthz_branch__")

// branchOf splits a query of the filter into its branch and the rest.
func branchOf(q ast.Body, n int) (int, bool, ast.Body, error) {
	rest := make(ast.Body, 0, len(q))
	i, isAllow, found := -1, false, false
	for _, e := range q {
		if !found && e.IsEquality() && !e.Negated && len(e.With) == 0 {
			a, b := e.Operand(0), e.Operand(1)
			if b.Value.Compare(branchVar) == 0 {
				a, b = b, a
			}
			if arr, ok := b.Value.(*ast.Array); ok && a.Value.Compare(branchVar) == 0 && arr.Len() == 2 {
				if num, ok := arr.Elem(0).Value.(ast.Number); ok {
					if k, ok := num.Int(); ok && k >= 0 && k < n {
						if bl, ok := arr.Elem(1).Value.(ast.Boolean); ok {
							i, isAllow, found = k, bool(bl), true
							continue
						}
					}
				}
			}
		}
		rest = append(rest, e)
	}
	if !found {
		return 0, false, nil, fmt.Errorf("partially evaluating data.crmauthz.decision: a query without its branch: %v", q)
	}
	return i, isAllow, rest, nil
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

// partialPlan prepares the partial evaluation once per revision: the rules
// of data.crmauthz.decision (one rule and its else chain, and an optional
// default that applies last), each body prepared as a query of its own.
func (p *prepared) partialPlan(ctx context.Context) *partialPlan {
	pl := &p.partial
	pl.once.Do(func() {
		pl.err = p.preparePartial(ctx, pl)
		if pl.err == nil {
			pl.cache = &partialCache{seed: maphash.MakeSeed(), entries: map[string]partialEntry{}}
		}
	})
	return pl
}

// chainRule is the generated rule of the filter: one element [i, false]
// when branch i of the decision's chain applies, [i, true] when it applies and
// its value allows (for a value that is not a constant object).
const chainRule = "__crmauthz_filter_chain__"

// preparePartial derives the filter's query from the decision's else chain:
// a copy of the module that defines data.crmauthz.decision gets one rule
// chainRule contains [i, …] if { <body of branch i> … } per branch (the
// bodies as written, so that partial evaluation sees through them), and
// partial evaluation of data.crmauthz.chainRule[x] with the record unknown
// gives each branch's conditions in one evaluation.
func (p *prepared) preparePartial(ctx context.Context, pl *partialPlan) error {
	td, err := p.topdown(ctx)
	if err != nil {
		return err
	}
	if len(td.compiler.GetRulesExact(refOf(RecordPath))) == 0 || len(td.compiler.GetRulesExact(refOf(DecisionPath))) == 0 {
		return ErrNoViewFilter
	}
	pkg := refOf(DecisionPath[:len(DecisionPath)-1])
	name := DecisionPath[len(DecisionPath)-1]
	var file string
	var chain, dflt []*ast.Rule
	for f, m := range td.modules {
		if !m.Package.Path.Equal(pkg) {
			continue
		}
		for _, r := range m.Rules {
			if !r.Head.Ref().Equal(ast.Ref{ast.VarTerm(name)}) {
				continue
			}
			if file != "" && file != f {
				return fmt.Errorf("%w: data.crmauthz.decision is defined in two files (%s, %s); it can be derived from one rule and its else chain (docs/filtering.md)", ErrFilterUnderivable, file, f)
			}
			file = f
			if r.Default {
				dflt = append(dflt, r)
			} else {
				chain = append(chain, r)
			}
		}
	}
	if len(chain) > 1 || len(dflt) > 1 || len(chain)+len(dflt) == 0 {
		return fmt.Errorf("%w: data.crmauthz.decision has %d rules; it can be derived from one rule and its else chain (docs/filtering.md)", ErrFilterUnderivable, len(chain)+len(dflt))
	}
	var rules []*ast.Rule
	for _, r := range chain {
		for b := r; b != nil; b = b.Else {
			rules = append(rules, b)
		}
	}
	rules = append(rules, dflt...)
	mod := td.modules[file].Copy()
	for i, r := range rules {
		var b partialBranch
		body := r.Body.Copy()
		if r.Default {
			body = ast.NewBody(ast.NewExpr(ast.BooleanTerm(true)))
		}
		if obj, ok := r.Head.Value.Value.(ast.Object); ok && ast.IsConstant(obj) {
			mod.Rules = append(mod.Rules, chainRuleOf(mod, i, false, body))
			allow := false
			if v := obj.Get(ast.StringTerm("allow")); v != nil {
				allow = v.Equal(ast.BooleanTerm(true))
			}
			b.allowConst = &allow
		} else {
			// A branch whose value is undefined does not apply: the value
			// is part of its condition.
			defined := ast.Equality.Expr(ast.VarTerm(valueVar), r.Head.Value.Copy())
			defined.Location = r.Location
			mod.Rules = append(mod.Rules, chainRuleOf(mod, i, false, append(body.Copy(), defined)))
			allow, err := allowOf(r.Head.Value)
			if err != nil {
				return err
			}
			e := ast.Equal.Expr(allow, ast.BooleanTerm(true))
			e.Location = r.Location
			mod.Rules = append(mod.Rules, chainRuleOf(mod, i, true, append(body.Copy(), e)))
		}
		pl.branches = append(pl.branches, b)
	}
	mods := maps.Clone(td.modules)
	mods[file] = mod
	c, err := compileModules(mods, false)
	if err != nil {
		return fmt.Errorf("%w: compiling its branches: %w", ErrFilterUnderivable, err)
	}
	rec := refOf(RecordPath)
	pl.refs = []ast.Ref{rec}
	// The record's id is unknown as well: a rule that reads it from the
	// input rather than from the record is saved, and the translator
	// refuses it, instead of reading an absent id (never a wrong filter).
	pl.unknowns = []*ast.Term{ast.NewTerm(rec), ast.NewTerm(resourceIDRef)}
	query := ast.NewBody(ast.NewExpr(ast.RefTerm(append(pkg.Copy(), ast.StringTerm(chainRule), ast.VarTerm(string(branchVar)))...)))
	opts := append([]func(*rego.Rego){
		rego.Compiler(c),
		rego.Store(p.store),
		rego.ParsedQuery(query),
		rego.StrictBuiltinErrors(true),
		rego.SetRegoVersion(ast.RegoV1),
	}, p.builtins...)
	pl.pq, err = rego.New(opts...).PrepareForPartial(ctx)
	if err != nil {
		return fmt.Errorf("preparing the data filter of data.crmauthz.decision: %w", err)
	}
	return nil
}

// valueVar holds a branch's value in its generated rule.
const valueVar = "__crmauthz_value__"

// resourceIDRef is the input's record id, unknown to the filter.
var resourceIDRef = ast.MustParseRef("input.resource.id")

// chainRuleOf is chainRule contains [i, allow] if { body }.
func chainRuleOf(mod *ast.Module, i int, allow bool, body ast.Body) *ast.Rule {
	for j, e := range body {
		e.Index = j
	}
	key := ast.ArrayTerm(ast.IntNumberTerm(i), ast.BooleanTerm(allow))
	head := ast.NewHead(ast.Var(chainRule), key)
	head.Reference = ast.Ref{ast.VarTerm(chainRule)}
	return &ast.Rule{Head: head, Body: body, Module: mod, Location: body[0].Location}
}

// allowOf is the term for a rule value's "allow": value.allow.
func allowOf(v *ast.Term) (*ast.Term, error) {
	switch x := v.Value.(type) {
	case ast.Var:
		return ast.RefTerm(v.Copy(), ast.StringTerm("allow")), nil
	case ast.Ref:
		return ast.NewTerm(x.Copy().Append(ast.StringTerm("allow"))), nil
	case ast.Object:
		if a := x.Get(ast.StringTerm("allow")); a != nil {
			return a.Copy(), nil
		}
	}
	return nil, fmt.Errorf("%w: data.crmauthz.decision's value %v has no \"allow\" it can read (docs/filtering.md)", ErrFilterUnderivable, v)
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
// declares (compile: unknowns), for OPA's Compile API; nil when none, and
// when topdown's side of the revision cannot be built (topdown.go: the
// compile request then fails with that error).
func (e *Engine) UnknownsOf(path []string) []ast.Ref {
	td, err := e.cur.Load().topdown(context.Background())
	if err != nil {
		return nil
	}
	rules := td.compiler.GetRulesExact(refOf(path))
	if len(rules) == 0 {
		return nil
	}
	return unknownsOf(td.compiler, rules[0])
}
