package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/crmauthz/crmauthz/internal/policy/guard"
	"github.com/crmauthz/crmauthz/internal/policy/source"
	"github.com/open-policy-agent/opa/v1/ast"
)

// Config says where the policy sources are.
type Config struct {
	// FS holds the policy sources: *.rego files anywhere under it
	// (tests, *_test.rego, are left out when serving).
	FS fs.FS
	// Dir, if set, is read instead of FS, as internal/policy/source reads
	// it (source.Config.Dir: names starting with "." skipped, a ConfigMap's
	// ..data read through one resolution); source.New watches it.
	Dir string
	// RequireTests refuses a policy whose Rego tests (*_test.rego) fail, or
	// that has none: New fails, and Reload keeps the policy in service and
	// reports the failing tests (file:line:col of each) as its error.
	RequireTests bool
	// DecisionCacheSlots sizes the exact decision cache (rounded up to a power
	// of two); 0 is the default, 65,536; negative turns it off. A policy that
	// calls a non-deterministic built-in is never cached.
	DecisionCacheSlots int
	// Evaluator chooses how Decide evaluates data.crmauthz.decision (see
	// internal/policy/irvm): EvaluatorAuto (the default) runs OPA's plan of the policy with
	// the IR interpreter when the policy can be planned and uses nothing the
	// interpreter lacks, else topdown; EvaluatorTopdown always uses topdown;
	// EvaluatorIR refuses a policy the interpreter cannot run.
	Evaluator Evaluator
	// EvalTimeout bounds every evaluation (a decision, a batch's check, a
	// gateway decision, a Data API query, a list scope): past it the
	// evaluation stops with ErrEvalTimeout, a deny. 0 is DefaultEvalTimeout;
	// negative is an error (limits.go, docs/policies.md).
	EvalTimeout time.Duration
}

// Evaluator names an evaluator of the decision (Config.Evaluator).
type Evaluator string

// The evaluators.
const (
	EvaluatorAuto    Evaluator = ""
	EvaluatorTopdown Evaluator = "topdown"
	EvaluatorIR      Evaluator = "ir"
)

// readSources reads cfg's source (internal/policy/source).
func readSources(cfg Config) ([]source.File, error) {
	return source.Read(source.Config{FS: cfg.FS, Dir: cfg.Dir})
}

// fingerprintOf identifies a set of sources, tests included (unlike the
// revision, which covers the served files only).
func fingerprintOf(files []source.File) string {
	return source.Revision(files)
}

// parseModules parses files as Rego v1.
func parseModules(files []source.File) (map[string]*ast.Module, error) {
	mods := make(map[string]*ast.Module, len(files))
	var errs ast.Errors
	for _, f := range files {
		m, err := ast.ParseModuleWithOpts(f.Name, string(f.Src), ast.ParserOptions{
			RegoVersion:       ast.RegoV1,
			ProcessAnnotation: true,
		})
		if err != nil {
			var aerrs ast.Errors
			if errors.As(err, &aerrs) {
				errs = append(errs, aerrs...)
				continue
			}
			return nil, fmt.Errorf("%s: %w", f.Name, err)
		}
		if m == nil {
			errs = append(errs, ast.NewError(ast.ParseErr, &ast.Location{File: f.Name, Row: 1, Col: 1}, "empty module"))
			continue
		}
		if err := guard.Module(m); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name, err)
		}
		mods[f.Name] = m
	}
	if len(errs) > 0 {
		return nil, &CompileError{Errors: errs}
	}
	return mods, nil
}

// newCompiler returns a compiler that knows the crm.* built-ins.
func newCompiler(printStatements bool) *ast.Compiler {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, BuiltinDecls()...)
	return ast.NewCompiler().
		WithCapabilities(caps).
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(printStatements).
		WithUseTypeCheckAnnotations(true)
}

// compileModules compiles mods; the errors come back as a *CompileError.
func compileModules(mods map[string]*ast.Module, printStatements bool) (*ast.Compiler, error) {
	c := newCompiler(printStatements)
	if c.Compile(mods); c.Failed() {
		return nil, &CompileError{Errors: c.Errors}
	}
	return c, nil
}

// decisionRef is data.crmauthz.decision, the entry point of the policy.
func decisionRef() ast.Ref {
	return ast.MustParseRef("data.crmauthz.decision")
}

// checkEntryPoint fails when the policy does not define data.crmauthz.decision.
func checkEntryPoint(c *ast.Compiler) error {
	if len(c.GetRulesExact(decisionRef())) == 0 {
		return errors.New("policy: no rule data.crmauthz.decision (the entry point) is defined")
	}
	return nil
}

// CompileError is a policy that does not parse or compile. Its message has
// one line per problem, "file:line:col: code: message".
type CompileError struct {
	Errors ast.Errors
}

func (e *CompileError) Error() string {
	var b strings.Builder
	for i, err := range e.Errors {
		if i > 0 {
			b.WriteByte('\n')
		}
		if loc := err.Location; loc != nil {
			file := loc.File
			if file == "" {
				file = "<input>"
			}
			fmt.Fprintf(&b, "%s:%d:%d: ", file, loc.Row, loc.Col)
		}
		b.WriteString(err.Code)
		b.WriteString(": ")
		b.WriteString(err.Message)
		if err.Details != nil {
			for _, l := range err.Details.Lines() {
				b.WriteString("\n\t")
				b.WriteString(l)
			}
		}
	}
	return b.String()
}

// Unwrap gives errors.As access to the ast.Errors.
func (e *CompileError) Unwrap() error { return e.Errors }

// loadedPolicy is a compiled policy set.
type loadedPolicy struct {
	revision string
	compiler *ast.Compiler
	modules  map[string]*ast.Module
}

// load reads, parses and compiles the sources; tests are left out unless
// withTests.
func load(cfg Config, withTests bool, printStatements bool) (*loadedPolicy, error) {
	files, err := readSources(cfg)
	if err != nil {
		return nil, err
	}
	return loadFiles(cfg, files, withTests, printStatements)
}

// loadFiles parses and compiles files (read from cfg's source); tests are
// left out unless withTests.
func loadFiles(cfg Config, files []source.File, withTests bool, printStatements bool) (*loadedPolicy, error) {
	if !withTests {
		files = slices.DeleteFunc(slices.Clone(files), source.File.IsTest)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policy: no .rego files in %s", sourceName(cfg))
	}
	mods, err := parseModules(files)
	if err != nil {
		return nil, err
	}
	c, err := compileModules(mods, printStatements)
	if err != nil {
		return nil, err
	}
	return &loadedPolicy{revision: source.Revision(files), compiler: c, modules: mods}, nil
}

// sourceName names cfg's source in messages.
func sourceName(cfg Config) string {
	if cfg.Dir != "" {
		return cfg.Dir
	}
	return "Config.FS"
}

// refOf returns data.<path...>.
func refOf(p []string) ast.Ref {
	ref := make(ast.Ref, 0, len(p)+1)
	ref = append(ref, ast.DefaultRootDocument)
	for _, s := range p {
		ref = append(ref, ast.StringTerm(s))
	}
	return ref
}

// joinPath is the cache key of a Data API path.
func joinPath(p []string) string {
	var b strings.Builder
	for _, s := range p {
		b.WriteByte(0)
		b.WriteString(s)
	}
	return b.String()
}
