package policy

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// The topdown side of a revision: OPA's compiler, the parsed modules and the
// prepared query of data.crmauthz.decision. Topdown evaluates the decisions
// when the IR interpreter does not, and every other path whatever the
// evaluator: the Data API (Query), ListScope, DecideHTTP, DecideTraced
// (explain), the data filter (PartialView) and the Compile API
// (CompileFilters), and a decision the interpreter itself failed on.
//
// These are some 14,000 heap objects full of pointers that every mark phase
// of the collector walks (docs/operations.md, "Garbage collection";
// BENCHMARKS.md, "Session 7: the mark phase"). A revision whose decisions
// the interpreter makes therefore keeps only its sources after build: the
// first topdown use parses, compiles and prepares them again (the same
// sources compiled before, so the same result) and keeps the outcome for the
// revision's life. A revision decided by topdown keeps what build made, and
// so does one replacing a revision whose topdown side was in use.

// topdownState is a revision's topdown side.
type topdownState struct {
	compiler *ast.Compiler
	// modules are the parsed, uncompiled modules (the data filter derives
	// its rules from them, partial.go)
	modules  map[string]*ast.Module
	decision rego.PreparedEvalQuery
}

// newTopdownState prepares data.crmauthz.decision on the compiled policy.
func (p *prepared) newTopdownState(ctx context.Context, c *ast.Compiler, mods map[string]*ast.Module) (*topdownState, error) {
	td := &topdownState{compiler: c, modules: mods}
	var err error
	td.decision, err = p.prepareWith(ctx, c, decisionRef())
	if err != nil {
		return nil, fmt.Errorf("preparing data.crmauthz.decision: %w", err)
	}
	return td, nil
}

// topdown returns the revision's topdown side, building it from the sources
// at its first use (one build at a time; a failed build is tried again at the
// next use).
func (p *prepared) topdown(ctx context.Context) (*topdownState, error) {
	if td := p.td.Load(); td != nil {
		return td, nil
	}
	p.tdMu.Lock()
	defer p.tdMu.Unlock()
	if td := p.td.Load(); td != nil {
		return td, nil
	}
	p.tdBuilds.Add(1)
	td, err := p.buildTopdown(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: building topdown's side of revision %s: %w", p.revision, err)
	}
	p.td.Store(td)
	return td, nil
}

// buildTopdown parses, compiles and prepares the revision's served sources.
func (p *prepared) buildTopdown(ctx context.Context) (*topdownState, error) {
	mods, err := parseModules(p.served)
	if err != nil {
		return nil, err
	}
	c, err := compileModules(mods, false)
	if err != nil {
		return nil, err
	}
	return p.newTopdownState(ctx, c, mods)
}
