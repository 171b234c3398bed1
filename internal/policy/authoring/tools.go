// Package authoring holds the policy author's tools over the engine of
// internal/policy: `crmauthz policy test`, `check`, `fmt` and
// `crmauthz eval --explain` (docs/design.md). Only cmd/crmauthz imports it.
package authoring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/tester"
)

// Check parses and compiles every policy file of cfg, tests included, with
// the crm.* built-ins declared, and checks that data.crmauthz.decision is
// defined. A compile error is a *policy.CompileError: one "file:line:col:
// code: message" line per problem.
func Check(cfg policy.Config) error {
	return policy.Compile(cfg)
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

// DefaultTestTimeout is the deadline of each Rego test (policy.DefaultTestTimeout).
const DefaultTestTimeout = policy.DefaultTestTimeout

// Test runs the policy tests (rules named test_* in any file of cfg) with the
// crm.* built-ins registered, and writes a report like `opa test` to
// opts.Out. passed is true when at least one test ran and none failed or
// errored. err is for a policy that does not compile or tests that could not
// run.
func Test(ctx context.Context, cfg policy.Config, opts TestOptions) (passed bool, err error) {
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	mods, err := policy.ParseModules(cfg)
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
	runner := policy.NewTestRunner(mods, opts.Run, opts.Timeout)
	var cov *cover.Cover
	if opts.Coverage || opts.Threshold > 0 {
		cov = cover.New()
		runner.SetCoverageQueryTracer(cov)
	} else if opts.Verbose {
		runner.EnableTracing(true) // tracing and coverage exclude each other
	}

	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return false, policy.AsCompileError(err)
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
