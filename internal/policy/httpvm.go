package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/crmauthz/crmauthz/internal/policy/irvm"
	"github.com/crmauthz/crmauthz/internal/policy/source"
)

// The gateway's decision on the IR interpreter: data.crmauthz.http_decision
// planned as a second entry point (routes.rego calls data.crmauthz.decision
// once per target `with input as` the plain decision's input: a WithStmt of
// the whole input, internal/policy/irvm), decided as the topdown path
// decides it (http.go): the same HTTPDecision, the same errors, topdown
// when the interpreter cannot run the plan or fails itself, and under
// EvaluatorTopdown. A revision whose gateway requests the interpreter
// decides needs no topdown side for them (topdown.go): the first gateway
// request after a reload waits for no build.

// httpEntry is the plan of data.crmauthz.http_decision.
const httpEntry = "crmauthz/http_decision"

// httpRef is data.crmauthz.http_decision.
func httpRef() ast.Ref { return refOf(httpDecisionPath) }

// httpPlan is how a revision decides gateway requests besides topdown.
type httpPlan struct {
	// prog runs the plan of data.crmauthz.http_decision; nil: topdown,
	// for the reason in err (or undefined)
	prog *irvm.Program
	err  error
	// undefined: no rule defines data.crmauthz.http_decision (a policy
	// without routes.rego), so every gateway request is
	// ErrUndefinedHTTPDecision, without evaluating
	undefined bool
	// factsInPlace: the facts' strings are cut from their JSON bytes
	// (httpFactsInPlace)
	factsInPlace bool
}

// planHTTP plans data.crmauthz.http_decision of the compiled policy lp for
// the interpreter (served: its sources).
func planHTTP(ctx context.Context, lp *loadedPolicy, served []source.File) httpPlan {
	ref := httpRef()
	if len(lp.compiler.GetRules(ref)) == 0 && len(lp.compiler.GetRulesDynamicWithOpts(ref, ast.RulesOptions{})) == 0 {
		return httpPlan{undefined: true, err: ErrUndefinedHTTPDecision}
	}
	prog, err := newVM(ctx, served, lp.modules, httpEntry)
	return httpPlan{prog: prog, err: err, factsInPlace: prog != nil && httpFactsInPlace(prog)}
}

// httpFactsInPlace tells whether the facts of the gateway's decision may be
// converted in place, as a plain decision's (factsInPlace): when nothing of
// the evaluation's values outlives it. Besides crm.user, crm.record and the
// interpreter's own built-ins, routes.rego calls some of topdown's, which
// keep nothing of their arguments either (keepsNothing); the HTTPDecision's
// strings that are the facts' are cloned (decideHTTPVM).
func httpFactsInPlace(prog *irvm.Program) bool {
	for _, name := range prog.Builtins() {
		if name != BuiltinUser && name != BuiltinRecord && !irvm.OwnBuiltin(name) && !keepsNothing[name] {
			return false
		}
	}
	return true
}

// keepsNothing are topdown's built-ins that routes.rego calls, whose
// implementations keep no reference to their arguments beyond the call (no
// cache; a result may share its arguments' values, which live as long as
// the evaluation).
var keepsNothing = map[string]bool{
	ast.ArraySlice.Name: true, ast.IsArray.Name: true, ast.IsObject.Name: true, ast.IsString.Name: true,
	ast.Plus.Name: true, ast.Sort.Name: true, ast.Split.Name: true, ast.Sprintf.Name: true, ast.Trim.Name: true,
}

// needsTopdown tells whether gateway requests are decided by topdown.
func (h *httpPlan) needsTopdown() bool { return h.prog == nil && !h.undefined }

// HTTPEvaluator tells how the revision in service decides gateway requests
// (DecideHTTP): EvaluatorIR or EvaluatorTopdown, and why not the IR
// interpreter when it is topdown (a policy that does not define
// data.crmauthz.http_decision: EvaluatorIR with ErrUndefinedHTTPDecision).
func (e *Engine) HTTPEvaluator() (Evaluator, error) {
	h := &e.cur.Load().vm.Load().http
	if h.needsTopdown() {
		return EvaluatorTopdown, h.err
	}
	return EvaluatorIR, h.err
}

// decideHTTPVM decides a gateway request with the interpreter of h.
// fallback is true when the interpreter itself failed (irvm.InternalError,
// counted): topdown then decides, as for a plain decision (decideVM). The
// input is handed in unbuilt (httpLazy, in the pooled vmInput; the body as
// ParseParams made it); the facts are read through the same vmInput (the
// evaluation's Env), their strings cut from the facts' bytes when
// h.factsInPlace (else copied); the result is read unbuilt too (an object
// literal of routes.rego: irvm's record), before the vmInput is pooled
// again, and its strings that are the facts' are cloned (nothing of the
// decision refers to the pooled storage or the facts' bytes once it is
// made).
func (p *prepared) decideHTTPVM(ctx context.Context, h *httpPlan, facts Facts, in HTTPInput) (d HTTPDecision, fallback bool, err error) {
	env := p.getVMInput(Input{}, facts, h.factsInPlace)
	env.memoFacts = true
	defer p.putVMInput(env)
	v, err := p.evalVMWith(ctx, h.prog, env, env.http.set(p, in), true)
	err = p.stopped(ctx, err)
	switch {
	case isVMBug(err):
		p.vmFaults.Add(1)
		return HTTPDecision{}, true, nil
	case err != nil:
		return HTTPDecision{}, false, fmt.Errorf("evaluating data.crmauthz.http_decision: %w", err)
	case v == nil:
		return HTTPDecision{}, false, ErrUndefinedHTTPDecision
	}
	d, err = p.httpDecisionFromValue(v)
	env.cloneFacts(&d)
	return d, false, err
}

// cloneFacts clones the strings of d that are the facts' (converted in
// place): the HTTPDecision outlives the facts' bytes (the index's, valid
// during its read transaction).
func (v *vmInput) cloneFacts(d *HTTPDecision) {
	for _, s := range [...]*string{&d.Reason, &d.Action, &d.ResourceType, &d.ResourceID, &d.Message} {
		if v.inFacts(*s) {
			*s = strings.Clone(*s)
		}
	}
	for i, t := range d.Targets {
		if v.inFacts(t) {
			d.Targets[i] = strings.Clone(t)
		}
	}
}

// seenFacts is how many facts a gateway's evaluation remembers.
const seenFacts = 8

// seenFact is a fact read in the evaluation: a user or a record (of type
// typ), its term (nil: absent).
type seenFact struct {
	user    bool
	typ, id string
	t       *ast.Term
}

// seenFact is the user id, or the record typ/id, read before in this
// evaluation, when v.memoFacts. A gateway's evaluation asks for the same
// facts again: data.crmauthz.decision, run once per target `with input as`
// a new input, in a memo frame of its own, reads the subject and the record
// each time (and routes.rego the record for its owner and its followers).
// The facts do not change within an evaluation (one read transaction), and
// a fact's value is never changed once converted, so the value read first
// is the value read again.
func (v *vmInput) seenFact(user bool, typ, id string) (*ast.Term, bool) {
	if !v.memoFacts {
		return nil, false
	}
	for i := range v.seen[:v.nseen] {
		if f := &v.seen[i]; f.id == id && f.typ == typ && f.user == user {
			return f.t, true
		}
	}
	return nil, false
}

// noteFact remembers the fact read (not an error), while there is room.
func (v *vmInput) noteFact(user bool, typ, id string, t *ast.Term, err error) {
	if v.memoFacts && err == nil && v.nseen < len(v.seen) {
		v.seen[v.nseen] = seenFact{user: user, typ: typ, id: id, t: t}
		v.nseen++
	}
}

// errTopdownChosen is why the interpreter does not decide under
// EvaluatorTopdown.
var errTopdownChosen = errors.New("topdown chosen (Config.Evaluator)")
