package policy

import (
	"context"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// ListInput is the input of data.crmauthz.list_scope: which records of Type
// in LocationID Subject may list.
type ListInput struct {
	Subject, Type, LocationID string
}

// The answers of data.crmauthz.list_scope.
const (
	// ScopeAll: every record of the type in the location; no filter needed.
	ScopeAll = "all"
	// ScopeAssigned: the records the subject owns or follows there.
	ScopeAssigned = "assigned"
	// ScopeNone: no record.
	ScopeNone = "none"
)

var listScopePath = []string{"crmauthz", "list_scope"}

// ErrUndefinedListScope is the error of ListScope when the policy defines no
// data.crmauthz.list_scope for the input (a policy without list.rego).
var ErrUndefinedListScope = errors.New("data.crmauthz.list_scope is undefined (the policy defines no list filters)")

// ListScope evaluates data.crmauthz.list_scope for in with the facts. Its
// answer is one of ScopeAll, ScopeAssigned and ScopeNone; anything else (an
// undefined or malformed result, an evaluation error) is an error, so a list
// is never wider than the policy says. It returns the revision that decided.
func (e *Engine) ListScope(ctx context.Context, facts Facts, in ListInput) (string, string, error) {
	p := e.cur.Load()
	pq, err := p.query(ctx, listScopePath)
	if err != nil {
		return "", p.revision, err
	}
	input := ast.NewObject(
		[2]*ast.Term{p.keys.subject, ast.StringTerm(in.Subject)},
		[2]*ast.Term{p.keys.typ, ast.StringTerm(in.Type)},
		[2]*ast.Term{ast.StringTerm("location_id"), ast.StringTerm(in.LocationID)},
	)
	rs, err := p.eval(ctx, pq, p.decisionOpts, facts, input)
	if err != nil {
		return "", p.revision, fmt.Errorf("evaluating data.crmauthz.list_scope: %w", err)
	}
	switch {
	case len(rs) == 0:
		return "", p.revision, ErrUndefinedListScope
	case len(rs) > 1 || len(rs[0].Expressions) != 1:
		return "", p.revision, fmt.Errorf("data.crmauthz.list_scope: %d results, want one", len(rs))
	}
	v, _ := rs[0].Expressions[0].Value.(ast.Value)
	s, ok := v.(ast.String)
	if !ok {
		return "", p.revision, fmt.Errorf("data.crmauthz.list_scope is %s, want a string", typeName(v))
	}
	switch string(s) {
	case ScopeAll, ScopeAssigned, ScopeNone:
		return string(s), p.revision, nil
	}
	return "", p.revision, fmt.Errorf("data.crmauthz.list_scope is %q, want \"all\", \"assigned\" or \"none\"", string(s))
}
