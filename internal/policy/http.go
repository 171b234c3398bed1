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
		d, fallback, err := p.decideHTTPVM(ctx, h, facts, in)
		if !fallback {
			return d, p.revision, err
		}
	}
	pq, err := p.query(ctx, httpDecisionPath)
	if err != nil {
		return HTTPDecision{}, p.revision, err
	}
	rs, err := p.eval(ctx, pq, p.decisionOpts, facts, p.httpInput(in))
	if err != nil {
		return HTTPDecision{}, p.revision, fmt.Errorf("evaluating data.crmauthz.http_decision: %w", err)
	}
	d, err := p.httpDecisionOf(rs)
	return d, p.revision, err
}

// httpInput builds the input of data.crmauthz.http_decision:
// {"subject", "method", "path", "segments", "body"?}, the keys shared, the
// strings' terms in one allocation.
func (p *prepared) httpInput(in HTTPInput) ast.Value {
	k := &p.keys
	ts := make([]ast.Term, 5+len(in.Segments))
	segs := make([]*ast.Term, len(in.Segments))
	for i, s := range in.Segments {
		ts[5+i].Value = ast.String(s)
		segs[i] = &ts[5+i]
	}
	ts[0].Value = ast.String(in.Subject)
	ts[1].Value = ast.String(in.Method)
	ts[2].Value = ast.String(in.Path)
	ts[3].Value = ast.NewArray(segs...)
	if in.Body == nil {
		return ast.NewObject([2]*ast.Term{k.subject, &ts[0]}, [2]*ast.Term{k.method, &ts[1]},
			[2]*ast.Term{k.path, &ts[2]}, [2]*ast.Term{k.segments, &ts[3]})
	}
	ts[4].Value = in.Body
	return ast.NewObject([2]*ast.Term{k.subject, &ts[0]}, [2]*ast.Term{k.method, &ts[1]},
		[2]*ast.Term{k.path, &ts[2]}, [2]*ast.Term{k.segments, &ts[3]}, [2]*ast.Term{k.body, &ts[4]})
}

// ErrUndefinedHTTPDecision is the error of DecideHTTP when the policy
// defines no data.crmauthz.http_decision for the input (a policy without
// routes.rego, say).
var ErrUndefinedHTTPDecision = errors.New("data.crmauthz.http_decision is undefined")

// httpDecisionOf checks topdown's result set: one result (none is
// ErrUndefinedHTTPDecision), of the shape httpDecisionFromValue checks.
func (p *prepared) httpDecisionOf(rs rego.ResultSet) (HTTPDecision, error) {
	switch {
	case len(rs) == 0:
		return HTTPDecision{}, ErrUndefinedHTTPDecision
	case len(rs) > 1 || len(rs[0].Expressions) != 1:
		return HTTPDecision{}, fmt.Errorf("%s: %d results, want one", httpDecisionName, len(rs))
	}
	v, _ := rs[0].Expressions[0].Value.(ast.Value)
	return p.httpDecisionFromValue(v)
}

const httpDecisionName = "data.crmauthz.http_decision"

// httpDecisionFromValue checks the result's shape: an object with a boolean
// "allow" and a string "reason", and where present a string "action", a
// "resource" {"type", "id"} of strings, "targets" a list of strings and a
// string "message". Anything else is an error (deny). v may be the
// interpreter's value unbuilt (an irvm.Lazy: its fields are read by lookups,
// see lookupOf).
func (p *prepared) httpDecisionFromValue(v ast.Value) (HTTPDecision, error) {
	const name = httpDecisionName
	obj, isObject := lookupOf(&v)
	if !isObject {
		return HTTPDecision{}, fmt.Errorf("%s is %s, want an object", name, typeName(v))
	}
	k := &p.keys
	allow, reason, action := obj.get(k.allow), obj.get(k.reason), obj.get(k.action)
	resource, targets, message := obj.get(k.resource), obj.get(k.targets), obj.get(k.message)
	var d HTTPDecision
	b, ok := valueOf(allow).(ast.Boolean)
	if !ok {
		return HTTPDecision{}, fmt.Errorf(`%s: "allow" is missing or not a boolean`, name)
	}
	d.Allow = bool(b)
	if d.Reason, ok = stringOf(reason); !ok || d.Reason == "" {
		return HTTPDecision{}, fmt.Errorf(`%s: "reason" is missing or not a string`, name)
	}
	if action != nil {
		if d.Action, ok = stringOf(action); !ok {
			return HTTPDecision{}, fmt.Errorf(`%s: "action" is not a string`, name)
		}
	}
	if resource != nil {
		rv := resource.Value
		res, isObject := lookupOf(&rv)
		if !isObject {
			return HTTPDecision{}, fmt.Errorf(`%s: "resource" is not an object`, name)
		}
		var ok1, ok2 bool
		d.ResourceType, ok1 = stringOf(res.get(k.typ))
		d.ResourceID, ok2 = stringOf(res.get(k.id))
		if !ok1 || !ok2 {
			return HTTPDecision{}, fmt.Errorf(`%s: "resource" needs a string "type" and "id"`, name)
		}
	}
	if targets != nil {
		arr, ok := materializeValue(targets.Value).(*ast.Array)
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
	if message != nil {
		if d.Message, ok = stringOf(message); !ok {
			return HTTPDecision{}, fmt.Errorf(`%s: "message" is not a string`, name)
		}
	}
	return d, nil
}

// valueOf is t's value; nil for none.
func valueOf(t *ast.Term) ast.Value {
	if t == nil {
		return nil
	}
	return t.Value
}

// stringOf is the string t holds; false when t is none or not a string.
func stringOf(t *ast.Term) (string, bool) {
	s, ok := valueOf(t).(ast.String)
	return string(s), ok
}
