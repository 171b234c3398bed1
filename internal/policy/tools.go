package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/tester"
)

// Check parses and compiles every policy file of cfg, tests included, with
// the crm.* built-ins declared, and checks that data.crmauthz.decision is
// defined. A compile error is a *CompileError: one "file:line:col: code:
// message" line per problem.
func Check(cfg Config) error {
	lp, err := load(cfg, true, true)
	if err != nil {
		return err
	}
	return checkEntryPoint(lp.compiler)
}

// TestOptions are the options of Test, after `opa test`'s.
type TestOptions struct {
	Run      string    // run only the tests whose name matches this regular expression
	Verbose  bool      // list every test (PASS/FAIL with its duration) and show failure traces
	Coverage bool      // report the coverage of each file and the total
	Out      io.Writer // where the report goes (nil: discarded)
	// Format is "pretty" (the default: OPA's pretty test report, then the
	// coverage per file) or "json" (OPA's JSON: the test results, or with
	// Coverage the coverage report, as `opa test --format json` prints).
	Format string
	// Threshold, when above 0, fails the run when the coverage of the policy
	// without its tests (*_test.rego) is below it, in percent; it implies
	// Coverage.
	Threshold float64
	// Timeout is the deadline of each test; 0 is DefaultTestTimeout,
	// negative is an error.
	Timeout time.Duration
}

// DefaultTestTimeout is the deadline of each Rego test (Test, and
// Config.RequireTests). OPA's default, 5 seconds, is too tight for the
// exhaustive tests of the default policy on a loaded machine, with coverage
// or under the race detector: a deadline is a guard against a test that
// never ends, not a speed limit.
const DefaultTestTimeout = 2 * time.Minute

// Test runs the policy tests (rules named test_* in any file of cfg) with the
// crm.* built-ins registered, and writes a report like `opa test` to
// opts.Out. passed is true when at least one test ran and none failed or
// errored. err is for a policy that does not compile or tests that could not
// run.
func Test(ctx context.Context, cfg Config, opts TestOptions) (passed bool, err error) {
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	files, err := readSources(cfg)
	if err != nil {
		return false, err
	}
	if len(files) == 0 {
		return false, errors.New("policy: no .rego files found")
	}
	mods, err := parseModules(files)
	if err != nil {
		return false, err
	}

	switch opts.Format {
	case "", "pretty", "json":
	default:
		return false, fmt.Errorf("test report format %q: want pretty or json", opts.Format)
	}
	switch {
	case opts.Timeout < 0:
		return false, fmt.Errorf("test timeout %s: must not be negative", opts.Timeout)
	case opts.Timeout == 0:
		opts.Timeout = DefaultTestTimeout
	}
	if opts.Threshold < 0 || opts.Threshold > 100 {
		return false, fmt.Errorf("coverage threshold %v: want a percentage from 0 to 100", opts.Threshold)
	}
	runner := newTestRunner(mods, opts.Run, opts.Timeout)
	var cov *cover.Cover
	if opts.Coverage || opts.Threshold > 0 {
		cov = cover.New()
		runner.SetCoverageQueryTracer(cov)
	} else if opts.Verbose {
		runner.EnableTracing(true) // tracing and coverage exclude each other
	}

	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return false, asCompileError(err)
	}

	// Count the results on their way to the reporter.
	var total, bad int
	counted := make(chan *tester.Result)
	go func() {
		defer close(counted)
		for r := range ch {
			total++
			if r.Error != nil || r.Fail {
				bad++
			}
			counted <- r
		}
	}()
	var reporter tester.Reporter = tester.PrettyReporter{Output: out, Verbose: opts.Verbose}
	if opts.Format == "json" {
		reporter = tester.JSONReporter{Output: out}
		if cov != nil {
			// as `opa test --coverage`: the failures, else the coverage report
			reporter = tester.JSONCoverageReporter{Cover: cov, Modules: mods, Output: out, Verbose: opts.Verbose}
		}
	}
	rerr := reporter.Report(counted)
	for range counted { // a reporter may stop at the first error
	}
	if rerr != nil && bad == 0 {
		return false, rerr
	}
	if total == 0 {
		return false, errors.New("no test cases found")
	}
	if cov != nil {
		rep := cov.Report(mods)
		if opts.Format != "json" {
			writeCoverage(out, rep)
		}
		if pc := policyCoverage(rep); pc < opts.Threshold {
			fmt.Fprintf(out, "Coverage threshold not met: policy coverage %.2f%% < %.2f%%\n", pc, opts.Threshold)
			return false, nil
		}
	}
	return bad == 0, nil
}

// policyCoverage is the coverage of the files that are not tests, in percent
// (100 when they have no lines to cover).
func policyCoverage(rep cover.Report) float64 {
	var covered, not int
	for name, fr := range rep.Files {
		if !strings.HasSuffix(name, "_test.rego") {
			covered += fr.CoveredLines
			not += fr.NotCoveredLines
		}
	}
	if covered+not == 0 {
		return 100
	}
	return 100 * float64(covered) / float64(covered+not)
}

// newTestRunner returns a runner of the tests of mods whose names match run
// ("" for all), with the crm.* built-ins registered and timeout as each
// test's deadline.
func newTestRunner(mods map[string]*ast.Module, run string, timeout time.Duration) *tester.Runner {
	return tester.NewRunner().
		SetTimeout(timeout).
		SetDefaultRegoVersion(ast.RegoV1).
		AddCustomBuiltins(testerBuiltins()).
		SetModules(mods).
		CapturePrintOutput(true).
		StackTraces(true).
		Filter(run)
}

// asCompileError turns the ast.Errors of a runner into a *CompileError.
func asCompileError(err error) error {
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
func requireTests(ctx context.Context, files []sourceFile) error {
	mods, err := parseModules(files)
	if err != nil {
		return err
	}
	ch, err := newTestRunner(mods, "", DefaultTestTimeout).RunTests(ctx, nil)
	if err != nil {
		return asCompileError(err)
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

// writeCoverage prints the coverage per file, the coverage of the policy
// without its tests and the total.
func writeCoverage(w io.Writer, rep cover.Report) {
	names := make([]string, 0, len(rep.Files))
	width := 0
	for name := range rep.Files {
		names = append(names, name)
		width = max(width, len(name))
	}
	slices.Sort(names)
	fmt.Fprintln(w, "Coverage:")
	for _, name := range names {
		fr := rep.Files[name]
		fmt.Fprintf(w, "  %-*s %7.2f%%  (%d/%d lines)", width, name, fileCoverage(fr),
			fr.CoveredLines, fr.CoveredLines+fr.NotCoveredLines)
		if len(fr.NotCovered) > 0 {
			fmt.Fprintf(w, "  not covered: %s", rangesString(fr.NotCovered))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Policy coverage (without *_test.rego): %.2f%%\n", policyCoverage(rep))
	fmt.Fprintf(w, "Total coverage: %.2f%%\n", rep.Coverage)
}

// fileCoverage is a file's coverage in percent; a file without lines to cover
// (e.g. only a package) counts as fully covered.
func fileCoverage(fr *cover.FileReport) float64 {
	if fr.CoveredLines+fr.NotCoveredLines == 0 {
		return 100
	}
	return fr.Coverage
}

func rangesString(rs []cover.Range) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		s := strconv.Itoa(r.Start.Row)
		if r.End.Row != r.Start.Row {
			s += "-" + strconv.Itoa(r.End.Row)
		}
		if !slices.Contains(parts, s) { // ranges of several kinds may cover the same lines
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ", ")
}
