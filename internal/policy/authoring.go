package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/crmauthz/crmauthz/internal/policy/source"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// This file is the engine's side of the policy tools (test, check, fmt,
// explain), which live in internal/policy/authoring (docs/design.md), and of
// Config.RequireTests.

// ParseModules reads and parses every policy file of cfg, tests included, as
// Rego v1 with the engine's limits; a parse error is a *CompileError.
func ParseModules(cfg Config) (map[string]*ast.Module, error) {
	files, err := readSources(cfg)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("policy: no .rego files found")
	}
	return parseModules(files)
}

// Compile parses and compiles every policy file of cfg, tests included, with
// the crm.* built-ins declared, and checks that data.crmauthz.decision is
// defined. A compile error is a *CompileError: one "file:line:col: code:
// message" line per problem.
func Compile(cfg Config) error {
	lp, err := load(cfg, true, true)
	if err != nil {
		return err
	}
	return checkEntryPoint(lp.compiler)
}

// DecideTraced evaluates data.crmauthz.decision for in with topdown, as
// Decide's reference path does, sending OPA's evaluation events to tracer.
// It returns the decision and the revision that made it; the error is
// Decide's. It is slow (every step traced): for tools such as
// `crmauthz eval --explain`, never the hot path.
func (e *Engine) DecideTraced(ctx context.Context, facts Facts, in Input, tracer topdown.QueryTracer) (Decision, string, error) {
	p := e.cur.Load()
	td, err := p.topdown(ctx)
	if err != nil {
		return Decision{}, p.revision, err
	}
	opts := append([]rego.EvalOption{rego.EvalQueryTracer(tracer)}, p.decisionOpts...)
	rs, err := p.eval(ctx, td.decision, opts, facts, p.input(in))
	if err != nil {
		return Decision{}, p.revision, fmt.Errorf("evaluating data.crmauthz.decision: %w", err)
	}
	d, err := p.decisionOf(rs)
	return d, p.revision, err
}

// DefaultTestTimeout is the deadline of each Rego test (Config.RequireTests,
// and `crmauthz policy test`). OPA's default, 5 seconds, is too tight for the
// exhaustive tests of the default policy on a loaded machine, with coverage
// or under the race detector: a deadline is a guard against a test that
// never ends, not a speed limit.
const DefaultTestTimeout = 2 * time.Minute

// NewTestRunner returns a runner of the tests of mods whose names match run
// ("" for all), with the crm.* built-ins registered and timeout as each
// test's deadline.
func NewTestRunner(mods map[string]*ast.Module, run string, timeout time.Duration) *tester.Runner {
	return tester.NewRunner().
		SetTimeout(timeout).
		SetDefaultRegoVersion(ast.RegoV1).
		AddCustomBuiltins(testerBuiltins()).
		SetModules(mods).
		CapturePrintOutput(true).
		StackTraces(true).
		Filter(run)
}

// AsCompileError turns the ast.Errors of a test runner into a *CompileError;
// any other error is returned as it is.
func AsCompileError(err error) error {
	var aerrs ast.Errors
	if errors.As(err, &aerrs) {
		return &CompileError{Errors: aerrs}
	}
	return err
}

// TestsFailedError is the error of a load with Config.RequireTests whose
// tests fail, or that has none.
type TestsFailedError struct {
	Total  int              // tests run
	Failed []*tester.Result // the tests that failed or errored
}

func (e *TestsFailedError) Error() string {
	if e.Total == 0 {
		return "policy tests are required, but there are none (no test_* rules in *_test.rego files)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "policy tests are required: %d of %d failed", len(e.Failed), e.Total)
	for _, r := range e.Failed {
		b.WriteString("\n")
		if loc := r.Location; loc != nil {
			fmt.Fprintf(&b, "%s:%d:%d: ", loc.File, loc.Row, loc.Col)
		}
		b.WriteString(r.Package + "." + r.Name)
		if r.Error != nil {
			b.WriteString(": ERROR: ")
			b.WriteString(strings.ReplaceAll(r.Error.Error(), "\n", "\n\t"))
		} else {
			b.WriteString(": FAIL")
		}
	}
	return b.String()
}

// requireTests runs every test of files; nil when at least one ran and all
// passed, else a *TestsFailedError (or the error that kept them from running).
func requireTests(ctx context.Context, files []source.File) error {
	mods, err := parseModules(files)
	if err != nil {
		return err
	}
	ch, err := NewTestRunner(mods, "", DefaultTestTimeout).RunTests(ctx, nil)
	if err != nil {
		return AsCompileError(err)
	}
	tf := &TestsFailedError{}
	for r := range ch {
		tf.Total++
		if r.Fail || r.Error != nil {
			r.Trace = nil // not kept in the error
			tf.Failed = append(tf.Failed, r)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("running the policy tests: %w", err)
	}
	if tf.Total == 0 || len(tf.Failed) > 0 {
		return tf
	}
	return nil
}
