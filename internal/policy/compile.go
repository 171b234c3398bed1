package policy

import (
	"context"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	regocompile "github.com/open-policy-agent/opa/v1/rego/compile"
)

// CompileRequest is one request of OPA's Compile API (POST /v1/compile/{path}).
type CompileRequest struct {
	Path  []string  // data.<path...> is the query
	Input ast.Value // nil: no input
	// Unknowns; nil: those the METADATA of the path's rule declares.
	Unknowns []ast.Ref
	// Targets are (target, dialect) pairs: ("sql", "postgresql"), ("ucast", "all"), …
	Targets [][2]string
	// Mappings are OPA's targetSQLTableMappings, as given.
	Mappings map[string]any
	// DisableInlining are OPA's disableInlining paths.
	DisableInlining []string
}

// ErrCompileRequest wraps the errors of a compile request that are the
// caller's (bad mappings, a policy fragment the target cannot express).
var ErrCompileRequest = errors.New("compile request")

// CompileErrors is a compile request's policy errors, as OPA lists them.
type CompileErrors struct {
	Errs ast.Errors
}

func (e *CompileErrors) Error() string { return e.Errs.Error() }

func (e *CompileErrors) Unwrap() error { return ErrCompileRequest }

// CompileFilters serves OPA's Compile API with OPA's own translation
// (v1/rego/compile: its checks, its SQL and UCAST, values interpolated into
// the SQL as OPA does): partial evaluation of data.<path> against the
// revision in service, with crm.user and crm.record reading facts. It returns
// one query per target, keyed "target+dialect" (a nil query: never), and the
// revision.
func (e *Engine) CompileFilters(ctx context.Context, facts Facts, req CompileRequest) (map[string]any, string, error) {
	p := e.cur.Load()
	if err := ctx.Err(); err != nil {
		return nil, p.revision, err
	}
	td, err := p.topdown(ctx)
	if err != nil {
		return nil, p.revision, err
	}
	ref := refOf(req.Path)
	unknowns := req.Unknowns
	if unknowns == nil {
		if rules := td.compiler.GetRulesExact(ref); len(rules) > 0 {
			unknowns = unknownsOf(td.compiler, rules[0])
		}
	}
	unks := make([]*ast.Term, len(unknowns))
	for i, u := range unknowns {
		unks[i] = ast.NewTerm(u)
	}
	opts := []regocompile.CompileOption{
		regocompile.ParsedUnknowns(unks...),
		regocompile.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		regocompile.Metrics(metrics.NoOp()),
		regocompile.Mappings(req.Mappings),
		regocompile.Rego(append([]func(*rego.Rego){
			rego.Compiler(td.compiler),
			rego.Store(p.store),
			rego.StrictBuiltinErrors(true),
			rego.DisableInlining(req.DisableInlining),
		}, p.builtins...)...),
	}
	for _, t := range req.Targets {
		opts = append(opts, regocompile.Target(t[0], t[1]))
	}
	prep, err := regocompile.New(opts...).Prepare(ctx)
	if err != nil {
		var errs ast.Errors
		if errors.As(err, &errs) {
			return nil, p.revision, &CompileErrors{Errs: errs}
		}
		return nil, p.revision, err
	}
	evalOpts := []rego.EvalOption{}
	if req.Input != nil {
		evalOpts = append(evalOpts, rego.EvalParsedInput(req.Input))
	}
	fs, err := prep.Compile(WithFacts(ctx, facts), evalOpts...)
	if err != nil {
		var errs ast.Errors
		switch {
		case errors.As(err, &errs):
			return nil, p.revision, &CompileErrors{Errs: errs}
		case errors.Is(err, regocompile.ErrInvalidMappings):
			return nil, p.revision, fmt.Errorf("%w: %w", ErrCompileRequest, err)
		}
		return nil, p.revision, err
	}
	out := make(map[string]any, len(req.Targets))
	for _, t := range req.Targets {
		out[t[0]+"+"+t[1]] = fs.For(t[0], t[1]).Query
	}
	return out, p.revision, nil
}
