package irvm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"
	"github.com/open-policy-agent/opa/v1/ir"
)

// Plan compiles modules with OPA's planner to its intermediate
// representation (the plan OPA's Wasm compiler starts from), for the entry
// point path (e.g. "crmauthz/decision"). builtins are the caller's own
// built-ins' declarations, added to the capabilities. Planning works on
// copies of the modules' parsed forms.
func Plan(ctx context.Context, modules []bundle.ModuleFile, entry string, builtins []*ast.Builtin) (*ir.Policy, error) {
	b := &bundle.Bundle{Data: map[string]any{}}
	for _, m := range modules {
		if m.Parsed != nil {
			m.Parsed = m.Parsed.Copy()
		}
		b.Modules = append(b.Modules, m)
	}
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, builtins...)
	c := compile.New().WithTarget(compile.TargetPlan).WithEntrypoints(entry).WithBundle(b).
		WithCapabilities(caps).WithRegoVersion(ast.RegoV1).WithPruneUnused(true)
	if err := c.Build(ctx); err != nil {
		return nil, fmt.Errorf("planning %s: %w", entry, err)
	}
	out := c.Bundle()
	if out == nil || len(out.PlanModules) != 1 {
		return nil, errors.New("planning: no plan")
	}
	var pol ir.Policy
	if err := json.Unmarshal(out.PlanModules[0].Raw, &pol); err != nil {
		return nil, fmt.Errorf("planning: decoding the plan: %w", err)
	}
	return &pol, nil
}
