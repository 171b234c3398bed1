package policy

import (
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// Reading data.crmauthz.decision's result (topdown's result set or the
// interpreter's value) into a Decision, with the errors "undefined",
// "several results" and "wrong type" explicit (docs/design.md); the
// gateway's http_decision has its own in http.go.

// ErrUndefinedDecision is the error of Decide when the policy defines no
// decision for the input.
var ErrUndefinedDecision = errors.New("data.crmauthz.decision is undefined")

// decisionOf checks the shape of the result: exactly one object with a
// boolean "allow" and a string "reason".
func (p *prepared) decisionOf(rs rego.ResultSet) (Decision, error) {
	switch {
	case len(rs) == 0:
		return Decision{}, ErrUndefinedDecision
	case len(rs) > 1:
		return Decision{}, fmt.Errorf("data.crmauthz.decision: %d results, want one", len(rs))
	case len(rs[0].Expressions) != 1:
		return Decision{}, fmt.Errorf("data.crmauthz.decision: %d expressions, want one", len(rs[0].Expressions))
	}
	v, _ := rs[0].Expressions[0].Value.(ast.Value)
	return p.decisionFromValue(v)
}

// decisionFromValue checks the shape of the decision: an object with a
// boolean "allow" and a string "reason".
func (p *prepared) decisionFromValue(v ast.Value) (Decision, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return Decision{}, fmt.Errorf("data.crmauthz.decision is %s, want an object", typeName(v))
	}
	allow := obj.Get(p.keys.allow)
	if allow == nil {
		return Decision{}, errors.New(`data.crmauthz.decision has no "allow"`)
	}
	b, ok := allow.Value.(ast.Boolean)
	if !ok {
		return Decision{}, fmt.Errorf(`data.crmauthz.decision: "allow" is %s, want a boolean`, typeName(allow.Value))
	}
	reason := obj.Get(p.keys.reason)
	if reason == nil {
		return Decision{}, errors.New(`data.crmauthz.decision has no "reason"`)
	}
	s, ok := reason.Value.(ast.String)
	if !ok {
		return Decision{}, fmt.Errorf(`data.crmauthz.decision: "reason" is %s, want a string`, typeName(reason.Value))
	}
	return Decision{Allow: bool(b), Reason: string(s)}, nil
}

func typeName(v ast.Value) string {
	if v == nil {
		return "nothing"
	}
	return ast.ValueName(v)
}
