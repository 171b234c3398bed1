package policy

import (
	"context"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// HTTPInput is one request of the CRM's API that a gateway asks about (the
// input of data.crmauthz.http_decision, see policies/crmauthz/routes.rego).
type HTTPInput struct {
	Subject  string
	Method   string
	Path     string   // as sent (percent-encoded), without the query
	Segments []string // the path's segments, percent-decoded
	// Body is the request's parameters with folded keys (see ParseParams):
	// the JSON body and the query's parameters; nil when there are none.
	Body ast.Value
}

// HTTPDecision is the answer of data.crmauthz.http_decision.
type HTTPDecision struct {
	Allow  bool
	Reason string
	// What the request is: empty when it is not a route (unmapped_route) or
	// its body could not be decided on (invalid_body).
	Action       string
	ResourceType string
	ResourceID   string
	Targets      []string
	// Message explains an invalid_body.
	Message string
}

var httpDecisionPath = []string{"crmauthz", "http_decision"}

// DecideHTTP evaluates data.crmauthz.http_decision for in with the facts: the
// route mapping and the decision of every target in one evaluation. Any
// error means no decision: deny.
//
// The IR interpreter decides when it runs the policy's plan of
// data.crmauthz.http_decision (httpvm.go), topdown otherwise, under
// EvaluatorTopdown, and for a request the interpreter itself failed on; both
// answer the same.
func (e *Engine) DecideHTTP(ctx context.Context, facts Facts, in HTTPInput) (HTTPDecision, string, error) {
	p := e.cur.Load()
	if h := &p.vm.Load().http; !h.needsTopdown() {
		if err := ctx.Err(); err != nil {
			return HTTPDecision{}, p.revision, p.stopped(ctx, err)
		}
		if h.undefined {
			return HTTPDecision{}, p.revision, ErrUndefinedHTTPDecision
		}
		d, fallback, err := p.decideHTTPVM(ctx, h.prog, facts, in)
		if !fallback {
			return d, p.revision, err
		}
	}
	pq, err := p.query(ctx, httpDecisionPath)
	if err != nil {
		return HTTPDecision{}, p.revision, err
	}
	rs, err := p.eval(ctx, pq, p.decisionOpts, facts, httpInput(in))
	if err != nil {
		return HTTPDecision{}, p.revision, fmt.Errorf("evaluating data.crmauthz.http_decision: %w", err)
	}
	d, err := httpDecisionOf(rs)
	return d, p.revision, err
}

func httpInput(in HTTPInput) ast.Value {
	segs := make([]*ast.Term, len(in.Segments))
	for i, s := range in.Segments {
		segs[i] = ast.StringTerm(s)
	}
	kv := [][2]*ast.Term{
		{ast.StringTerm("subject"), ast.StringTerm(in.Subject)},
		{ast.StringTerm("method"), ast.StringTerm(in.Method)},
		{ast.StringTerm("path"), ast.StringTerm(in.Path)},
		{ast.StringTerm("segments"), ast.ArrayTerm(segs...)},
	}
	if in.Body != nil {
		kv = append(kv, [2]*ast.Term{ast.StringTerm("body"), ast.NewTerm(in.Body)})
	}
	return ast.NewObject(kv...)
}

// ErrUndefinedHTTPDecision is the error of DecideHTTP when the policy
// defines no data.crmauthz.http_decision for the input (a policy without
// routes.rego, say).
var ErrUndefinedHTTPDecision = errors.New("data.crmauthz.http_decision is undefined")

// httpDecisionOf checks topdown's result set: one result (none is
// ErrUndefinedHTTPDecision), of the shape httpDecisionFromValue checks.
func httpDecisionOf(rs rego.ResultSet) (HTTPDecision, error) {
	switch {
	case len(rs) == 0:
		return HTTPDecision{}, ErrUndefinedHTTPDecision
	case len(rs) > 1 || len(rs[0].Expressions) != 1:
		return HTTPDecision{}, fmt.Errorf("%s: %d results, want one", httpDecisionName, len(rs))
	}
	v, _ := rs[0].Expressions[0].Value.(ast.Value)
	return httpDecisionFromValue(v)
}

const httpDecisionName = "data.crmauthz.http_decision"

// httpDecisionFromValue checks the result's shape: an object with a boolean
// "allow" and a string "reason", and where present a string "action", a
// "resource" {"type", "id"} of strings, "targets" a list of strings and a
// string "message". Anything else is an error (deny).
func httpDecisionFromValue(v ast.Value) (HTTPDecision, error) {
	const name = httpDecisionName
	obj, ok := v.(ast.Object)
	if !ok {
		return HTTPDecision{}, fmt.Errorf("%s is %s, want an object", name, typeName(v))
	}
	var d HTTPDecision
	ok = false
	var allow ast.Boolean
	if t := obj.Get(ast.StringTerm("allow")); t != nil {
		allow, ok = t.Value.(ast.Boolean)
	}
	if !ok {
		return HTTPDecision{}, fmt.Errorf(`%s: "allow" is missing or not a boolean`, name)
	}
	d.Allow = bool(allow)
	if d.Reason, ok = stringField(obj, "reason"); !ok || d.Reason == "" {
		return HTTPDecision{}, fmt.Errorf(`%s: "reason" is missing or not a string`, name)
	}
	if t := obj.Get(ast.StringTerm("action")); t != nil {
		if d.Action, ok = stringField(obj, "action"); !ok {
			return HTTPDecision{}, fmt.Errorf(`%s: "action" is not a string`, name)
		}
	}
	if t := obj.Get(ast.StringTerm("resource")); t != nil {
		res, ok := t.Value.(ast.Object)
		if !ok {
			return HTTPDecision{}, fmt.Errorf(`%s: "resource" is not an object`, name)
		}
		var ok1, ok2 bool
		d.ResourceType, ok1 = stringField(res, "type")
		d.ResourceID, ok2 = stringField(res, "id")
		if !ok1 || !ok2 {
			return HTTPDecision{}, fmt.Errorf(`%s: "resource" needs a string "type" and "id"`, name)
		}
	}
	if t := obj.Get(ast.StringTerm("targets")); t != nil {
		arr, ok := t.Value.(*ast.Array)
		if !ok {
			return HTTPDecision{}, fmt.Errorf(`%s: "targets" is not a list`, name)
		}
		d.Targets = make([]string, 0, arr.Len())
		for i := 0; i < arr.Len(); i++ {
			s, ok := arr.Elem(i).Value.(ast.String)
			if !ok {
				return HTTPDecision{}, fmt.Errorf(`%s: "targets" holds a %s`, name, typeName(arr.Elem(i).Value))
			}
			d.Targets = append(d.Targets, string(s))
		}
	}
	if t := obj.Get(ast.StringTerm("message")); t != nil {
		if d.Message, ok = stringField(obj, "message"); !ok {
			return HTTPDecision{}, fmt.Errorf(`%s: "message" is not a string`, name)
		}
	}
	return d, nil
}

func stringField(obj ast.Object, key string) (string, bool) {
	t := obj.Get(ast.StringTerm(key))
	if t == nil {
		return "", false
	}
	s, ok := t.Value.(ast.String)
	return string(s), ok
}
