package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"

	"github.com/crmauthz/crmauthz/internal/policy/guard"
	"github.com/crmauthz/crmauthz/internal/policy/irvm"
	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/crmauthz/crmauthz/internal/policy/source"
)

// The engine's side of the IR interpreter (internal/policy/irvm): the plan
// of data.crmauthz.decision, the natives it adds (crm.user, crm.record, the
// guarded built-ins) and the values it hands in unbuilt (the input,
// vminput.go; the facts, factObject).

// decisionEntry is the plan of data.crmauthz.decision.
const decisionEntry = "crmauthz/decision"

// newVM plans the served files for the entry point entry (decisionEntry,
// httpEntry) and readies the plan for the interpreter. mods are the parsed
// modules of served (by file name).
func newVM(ctx context.Context, served []source.File, mods map[string]*ast.Module, entry string) (*irvm.Program, error) {
	var files []bundle.ModuleFile
	for _, f := range served {
		m, ok := mods[f.Name]
		if f.IsTest() || !ok {
			continue
		}
		files = append(files, bundle.ModuleFile{URL: f.Name, Path: f.Name, Raw: f.Src, Parsed: m})
	}
	pol, err := irvm.Plan(ctx, files, entry, BuiltinDecls())
	if err != nil {
		return nil, err
	}
	return irvm.New(pol, irvm.Config{Entrypoint: entry, Natives: vmNatives()})
}

// vmNatives are the engine's built-ins for the interpreter.
func vmNatives() map[string]irvm.Native {
	n := map[string]irvm.Native{BuiltinUser: vmUser, BuiltinRecord: vmRecord}
	for name, fn := range guard.Funcs() {
		n[name] = vmGuarded(fn)
	}
	return n
}

// vmGuarded is the interpreter's implementation of a guarded built-in.
func vmGuarded(fn topdown.BuiltinFunc) irvm.Native {
	return func(c *irvm.Call, args []*ast.Term) (*ast.Term, error) {
		var out *ast.Term
		bctx := topdown.BuiltinContext{Context: c.Context, Cancel: c.Cancel, Cache: builtins.Cache{}}
		err := fn(bctx, args, func(t *ast.Term) error { out = t; return nil })
		return out, err
	}
}

// decideVM decides with the interpreter. fallback is true when the
// interpreter itself failed (irvm.InternalError, counted): topdown then
// decides. The evaluation's storage (a pooled vmInput) is reused once the
// Decision is made.
func (p *prepared) decideVM(ctx context.Context, pl *vmPlan, facts Facts, in Input) (d Decision, fallback bool, err error) {
	lazy := p.getVMInput(in, facts, pl.factsInPlace)
	defer p.putVMInput(lazy)
	v, err := p.evalVM(ctx, pl.prog, lazy)
	err = p.stopped(ctx, err)
	switch {
	case isVMBug(err):
		p.vmFaults.Add(1)
		return Decision{}, true, nil
	case err != nil:
		return Decision{}, false, fmt.Errorf("evaluating data.crmauthz.decision: %w", err)
	case v == nil:
		return Decision{}, false, ErrUndefinedDecision
	}
	d, err = p.decisionFromValue(v)
	if lazy.inFacts(d.Reason) { // the Decision outlives the facts' bytes
		d.Reason = strings.Clone(d.Reason)
	}
	return d, false, err
}

// factsInPlace tells whether prog's facts may be converted in place
// (regovalue.FactBuf.InPlace): their strings cut from the JSON bytes
// Facts returns, which are the index's and valid during the decision's read
// transaction, instead of from a copy of them. That holds when nothing of a
// decision's values outlives it: every built-in prog calls is crm.user,
// crm.record or one of the interpreter's own (which keep nothing of their
// arguments; topdown's may: regex.match keeps its pattern as a cache key),
// the vmInput holding the values is cleared after each decision, and the
// Decision's reason is cloned when it is one of the facts' strings
// (vmInput.inFacts). Errors are formatted, so copies.
func factsInPlace(prog *irvm.Program) bool {
	for _, name := range prog.Builtins() {
		if name != BuiltinUser && name != BuiltinRecord && !irvm.OwnBuiltin(name) {
			return false
		}
	}
	return true
}

// evalVM evaluates the decision with the interpreter, with lazy as input.
// The value may refer to lazy's storage.
func (p *prepared) evalVM(ctx context.Context, prog *irvm.Program, lazy *vmInput) (ast.Value, error) {
	return p.evalVMWith(ctx, prog, lazy, &lazy.top, false)
}

// evalVMWith evaluates prog with the interpreter: input is the input, env
// the facts' reader and storage; lazyResult: the value may be a Lazy
// (irvm.EvalOpts.LazyResult), to be read before env is reused.
func (p *prepared) evalVMWith(ctx context.Context, prog *irvm.Program, env *vmInput, input *ast.Term, lazyResult bool) (ast.Value, error) {
	// The evaluation's time limit (docs/policies.md "What is bounded"): the
	// interpreter reads the clock only once an evaluation has run more steps
	// than a decision of the default policy does, so a decision costs no
	// clock reading.
	v, err := prog.Eval(ctx, irvm.EvalOpts{Input: input, Env: env, Timeout: p.evalTimeout, LazyResult: lazyResult, Arena: &env.arena})
	if errors.Is(err, irvm.ErrDeadline) {
		err = fmt.Errorf("%w (%s)", ErrEvalTimeout, p.evalTimeout)
	}
	return v, err
}

// vmEnv is the decision's vmInput: its facts, for crm.user and crm.record
// (the evaluation's irvm.EvalOpts.Env).
func vmEnv(c *irvm.Call) *vmInput {
	in, _ := c.Env.(*vmInput)
	if in == nil || in.facts == nil {
		return nil
	}
	return in
}

// vmUser is crm.user(id) (see builtinImpl.user).
func vmUser(c *irvm.Call, a []*ast.Term) (*ast.Term, error) {
	s, ok := a[0].Value.(ast.String)
	if !ok {
		return nil, nil // not a string: no such user
	}
	env := vmEnv(c)
	if env == nil {
		return nil, ErrNoFacts
	}
	if t, ok := env.seenFact(true, "", string(s)); ok {
		return t, nil
	}
	js, err := env.facts.UserJSON(string(s))
	if err != nil {
		return nil, fmt.Errorf("reading user %q: %w", string(s), err)
	}
	t, err := env.fact(js, "user", string(s))
	env.noteFact(true, "", string(s), t, err)
	return t, err
}

// vmRecord is crm.record(type, id) (see builtinImpl.record).
func vmRecord(c *irvm.Call, a []*ast.Term) (*ast.Term, error) {
	t, ok := a[0].Value.(ast.String)
	if !ok {
		return nil, nil
	}
	s, ok := a[1].Value.(ast.String)
	if !ok {
		return nil, nil
	}
	env := vmEnv(c)
	if env == nil {
		return nil, ErrNoFacts
	}
	if f, ok := env.seenFact(false, string(t), string(s)); ok {
		return f, nil
	}
	js, err := env.facts.RecordJSON(string(t), string(s))
	if err != nil {
		return nil, fmt.Errorf("reading record %s/%s: %w", string(t), string(s), err)
	}
	f, err := env.fact(js, "record", string(s))
	env.noteFact(false, string(t), string(s), f, err)
	return f, err
}

// fact converts the JSON of a fact for the interpreter (convertFact with a
// *factObject at the top), in the decision's storage; nil for absent.
func (v *vmInput) fact(js []byte, what, id string) (*ast.Term, error) {
	if js == nil {
		return nil, nil
	}
	f := v.newFact()
	if v.inPlace {
		v.factBytes(js)
	}
	isObject, err := jsonToFact(f, js, v.p.intern, v.inPlace)
	switch {
	case err != nil:
		return nil, fmt.Errorf("decoding %s %q: %w", what, id, err)
	case !isObject:
		return nil, fmt.Errorf("decoding %s %q: not a JSON object", what, id)
	}
	return &f.term, nil
}

// The string arrays of a fact are lazy arrays of the interpreter.
var _ irvm.Members = (*regovalue.StringArray)(nil)

// factObject is a fact's top-level object as the interpreter holds it: its
// pairs, in a slice. A lookup (record.owner) reads them directly; any other
// use materializes it (irvm.Lazy), which builds the ast object once
// (ast.NewObject: the same value convertFact makes) and uses that. A field
// that is an array of strings (location_ids, followers) is a
// *regovalue.StringArray, itself lazy: `x in record.followers` compares
// strings. It holds its own term and the storage of its pairs, values and
// string arrays (jsonToFact).
type factObject struct {
	pairs   [][2]*ast.Term
	obj     *ast.Term
	term    ast.Term // the fact's term (Value: this factObject)
	pairBuf [factPairs][2]*ast.Term
	terms   [factTerms]ast.Term
	arrays  [factArrays]regovalue.StringArray
	strs    [factStrings]string
	boxes   [factBoxes]ast.String
	used    regovalue.FactUse // of the arrays above (reset)
}

// get is obj[key] (keys are strings, each once).
func (f *factObject) get(key *ast.Term) *ast.Term {
	k, ok := key.Value.(ast.String)
	if !ok {
		return nil
	}
	for i := range f.pairs {
		if f.pairs[i][0].Value.(ast.String) == k {
			return f.pairs[i][1]
		}
	}
	return nil
}

// Lookup and Materialize make a factObject an irvm.Lazy.
func (f *factObject) Lookup(key *ast.Term) *ast.Term { return f.get(key) }
func (f *factObject) Materialize() *ast.Term         { return f.object() }

func (f *factObject) object() *ast.Term {
	if f.obj == nil {
		pairs := f.pairs
		for i := range pairs {
			if l, ok := pairs[i][1].Value.(irvm.Lazy); ok {
				if &pairs[0] == &f.pairs[0] { // a copy to change, once
					pairs = append([][2]*ast.Term(nil), f.pairs...)
				}
				pairs[i][1] = l.Materialize()
			}
		}
		f.obj = ast.NewTerm(ast.NewObject(pairs...))
	}
	return f.obj
}

// The Value methods: the interpreter never hands a factObject to OPA's code
// (it materializes it first); should one escape, it behaves as its object.
func (f *factObject) Compare(other ast.Value) int          { return f.object().Value.Compare(other) }
func (f *factObject) Find(path ast.Ref) (ast.Value, error) { return f.object().Value.Find(path) }
func (f *factObject) Hash() int                            { return f.object().Value.Hash() }
func (f *factObject) IsGround() bool                       { return true }
func (f *factObject) String() string                       { return f.object().Value.String() }
func (f *factObject) StringLength() int                    { return f.object().Value.StringLength() }
