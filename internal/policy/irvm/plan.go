package policy

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

// planPolicy compiles the served files with OPA's planner to its intermediate
// representation (the plan OPA's Wasm compiler starts from), for the entry
// point path (e.g. "crmauthz/decision").
//
// mods are the parsed modules of files (by file name); planning works on
// copies.
func planPolicy(ctx context.Context, files []sourceFile, mods map[string]*ast.Module, entry string) (*ir.Policy, error) {
	b := &bundle.Bundle{Data: map[string]any{}}
	for _, f := range files {
		m, ok := mods[f.name]
		if f.isTest() || !ok {
			continue
		}
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: f.name, Path: f.name, Raw: f.src, Parsed: m.Copy()})
	}
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, BuiltinDecls()...)
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

// decisionEntry is the plan of data.crmauthz.decision.
const decisionEntry = "crmauthz/decision"

// newDecisionVM plans the served files for data.crmauthz.decision and
// readies the plan for the interpreter.
func newDecisionVM(ctx context.Context, served []sourceFile, mods map[string]*ast.Module) (*vmProgram, error) {
	pol, err := planPolicy(ctx, served, mods, decisionEntry)
	if err != nil {
		return nil, err
	}
	return newVMProgram(pol, decisionEntry)
}
