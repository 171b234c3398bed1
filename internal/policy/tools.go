package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

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
}

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

	runner := tester.NewRunner().
		SetDefaultRegoVersion(ast.RegoV1).
		AddCustomBuiltins(testerBuiltins()).
		SetModules(mods).
		CapturePrintOutput(true).
		StackTraces(true).
		Filter(opts.Run)
	var cov *cover.Cover
	if opts.Coverage {
		cov = cover.New()
		runner.SetCoverageQueryTracer(cov)
	} else if opts.Verbose {
		runner.EnableTracing(true) // tracing and coverage exclude each other
	}

	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		var aerrs ast.Errors
		if errors.As(err, &aerrs) {
			return false, &CompileError{Errors: aerrs}
		}
		return false, err
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
	if err := (tester.PrettyReporter{Output: out, Verbose: opts.Verbose}).Report(counted); err != nil {
		return false, err
	}
	if total == 0 {
		return false, errors.New("no test cases found")
	}
	if cov != nil {
		writeCoverage(out, cov.Report(mods))
	}
	return bad == 0, nil
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
	var pc, pn int
	for _, name := range names {
		fr := rep.Files[name]
		fmt.Fprintf(w, "  %-*s %7.2f%%  (%d/%d lines)", width, name, fileCoverage(fr),
			fr.CoveredLines, fr.CoveredLines+fr.NotCoveredLines)
		if len(fr.NotCovered) > 0 {
			fmt.Fprintf(w, "  not covered: %s", rangesString(fr.NotCovered))
		}
		fmt.Fprintln(w)
		if !strings.HasSuffix(name, "_test.rego") {
			pc += fr.CoveredLines
			pn += fr.NotCoveredLines
		}
	}
	policy := 100.0
	if pc+pn > 0 {
		policy = 100 * float64(pc) / float64(pc+pn)
	}
	fmt.Fprintf(w, "Policy coverage (without *_test.rego): %.2f%%\n", policy)
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
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
