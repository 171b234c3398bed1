package irvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/test/cases"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"
)

// OPA's compliance suite on the interpreter: OPA's own Rego test cases (the
// YAML files of v1/test/cases/testdata/v1 in the OPA module, which OPA runs
// through topdown and through its Wasm target) are planned by OPA's planner,
// as OPA plans a query for Wasm, and run by the interpreter. Every case it
// runs must agree with the case's expected result or error; cases the
// planner or the interpreter declines (the engine leaves such a policy to
// topdown) are counted.

// complianceTarget is the rego target whose plugin hands the plan of the
// query to the test (rego gives a query's plan to a target plugin only).
const complianceTarget = "crmauthz-ir-compliance"

var registerCapture sync.Once

type planCaptureKey struct{}

// capturePlugin keeps the plan rego made in the *ir.Policy the context
// carries; it never evaluates.
type capturePlugin struct{}

func (capturePlugin) IsTarget(t string) bool { return t == complianceTarget }

func (capturePlugin) PrepareForEval(ctx context.Context, pol *ir.Policy, _ ...rego.PrepareOption) (rego.TargetPluginEval, error) {
	dst, ok := ctx.Value(planCaptureKey{}).(**ir.Policy)
	if !ok {
		return nil, errors.New("no plan capture in the context")
	}
	*dst = pol
	return nil, nil
}

// complianceDir is OPA's test cases in the module cache, found beside the
// source of the cases package this test is built with, or (in a -trimpath
// build) where the go command has the OPA module.
func complianceDir(tb testing.TB) string {
	tb.Helper()
	pc := reflect.ValueOf(cases.Load).Pointer()
	if file, _ := runtime.FuncForPC(pc).FileLine(pc); filepath.IsAbs(file) {
		return filepath.Join(filepath.Dir(file), "testdata", "v1")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/open-policy-agent/opa").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		tb.Fatalf("locating OPA's test cases: %v", err)
	}
	return filepath.Join(string(bytes.TrimSpace(out)), "v1", "test", "cases", "testdata", "v1")
}

// complianceOutcome is what the interpreter did with one case.
type complianceOutcome int

const (
	caseAgreed complianceOutcome = iota
	caseDeclined
	caseDisagreed
)

func TestVMCompliance(t *testing.T) {
	set := cases.MustLoad(complianceDir(t)).Sorted()
	if len(set.Cases) < 1000 {
		t.Fatalf("only %d cases loaded", len(set.Cases))
	}
	var agreed, declined int
	var disagreed []string
	reasons := map[string]int{}
	for _, tc := range set.Cases {
		out, detail := runComplianceCase(t, tc)
		switch out {
		case caseAgreed:
			agreed++
		case caseDeclined:
			declined++
			reasons[detail]++
		case caseDisagreed:
			disagreed = append(disagreed, fmt.Sprintf("%s: %s", tc.Note, detail))
		}
	}
	t.Logf("OPA compliance cases: %d, agreed %d, declined %d (left to topdown), disagreed %d",
		len(set.Cases), agreed, declined, len(disagreed))
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return reasons[keys[i]] > reasons[keys[j]] })
	for _, k := range keys {
		t.Logf("  declined %4d: %s", reasons[k], k)
	}
	for _, d := range disagreed {
		t.Error(d)
	}
}

// runComplianceCase plans and runs one case; detail is the reason of a
// decline or the disagreement.
func runComplianceCase(tb testing.TB, tc cases.TestCase) (complianceOutcome, string) {
	tb.Helper()
	var data map[string]any
	if tc.Data != nil {
		data = *tc.Data
	}
	pol, err := planQuery(tc.Query, tc.Modules, data, tc.ExperimentalKeywords)
	if err != nil {
		return caseDeclined, "planning: " + firstLine(err.Error())
	}
	prog, err := New(pol, DefaultConfig())
	if errors.Is(err, ErrUnsupported) {
		return caseDeclined, err.Error()
	}
	if err != nil {
		return caseDisagreed, "compiling the plan: " + err.Error()
	}
	if data != nil {
		prog.data = ast.NewTerm(ast.MustInterfaceToValue(data))
	}
	// Built-in errors abort only in the cases that say so, as OPA's topdown
	// test runs them (decisions are always strict).
	prog.lenient = !tc.StrictError
	var input *ast.Term
	if tc.InputTerm != nil {
		input = ast.MustParseTerm(*tc.InputTerm)
	} else if tc.Input != nil {
		input = ast.NewTerm(ast.MustInterfaceToValue(*tc.Input))
	}
	rs, err := prog.EvalQuery(context.Background(), EvalOpts{Input: input})
	// the same plan without fused statements (fuse.go) answers the same
	plain, perr := newProgram(pol, DefaultConfig(), true)
	if perr != nil {
		return caseDisagreed, "compiling the plan without fusion: " + perr.Error()
	}
	plain.data, plain.lenient = prog.data, prog.lenient
	prs, perr := plain.EvalQuery(context.Background(), EvalOpts{Input: input})
	if (err == nil) != (perr == nil) || (err != nil && err.Error() != perr.Error()) ||
		ast.NewSet(rs...).Compare(ast.NewSet(prs...)) != 0 {
		return caseDisagreed, fmt.Sprintf("fused %v %v, unfused %v %v", rs, err, prs, perr)
	}
	return judgeCase(tc, rs, err)
}

// planQuery plans query over the modules (Rego v1) and data as OPA plans a
// query for its Wasm target: the plan is named "eval".
func planQuery(query string, modules []string, data map[string]any, experimental bool) (*ir.Policy, error) {
	registerCapture.Do(func() { rego.RegisterPlugin(complianceTarget, capturePlugin{}) })
	var pol *ir.Policy
	opts := []func(*rego.Rego){
		rego.Query(query),
		rego.SetRegoVersion(ast.RegoV1),
		rego.Capabilities(ast.CapabilitiesForThisVersion(ast.CapabilitiesExperimentalKeywords(experimental))),
		rego.Target(complianceTarget),
	}
	for i, m := range modules {
		opts = append(opts, rego.Module(fmt.Sprintf("test-%d.rego", i), m))
	}
	if data != nil {
		opts = append(opts, rego.Store(inmem.NewFromObject(data)))
	}
	ctx := context.WithValue(context.Background(), planCaptureKey{}, &pol)
	if _, err := rego.New(opts...).PrepareForEval(ctx); err != nil {
		return nil, err
	}
	return pol, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// judgeCase compares the interpreter's answer with the case's expectation,
// as OPA's topdown test does (v1/topdown/exported_test.go).
func judgeCase(tc cases.TestCase, rs []*ast.Term, err error) (complianceOutcome, string) {
	var vmErr *InternalError
	if errors.As(err, &vmErr) {
		return caseDisagreed, err.Error()
	}
	if tc.WantError != nil || tc.WantErrorCode != nil {
		if err == nil {
			return caseDisagreed, fmt.Sprintf("want error %s %s, got %v", deref(tc.WantErrorCode), deref(tc.WantError), rs)
		}
		if tc.WantErrorCode != nil {
			var te *topdown.Error
			if !errors.As(err, &te) || te.Code != *tc.WantErrorCode {
				return caseDisagreed, fmt.Sprintf("want error code %s, got %v", *tc.WantErrorCode, err)
			}
		}
		if tc.WantError != nil && !strings.Contains(err.Error(), *tc.WantError) {
			return caseDisagreed, fmt.Sprintf("want error %q, got %q", *tc.WantError, err)
		}
		return caseAgreed, ""
	}
	if err != nil {
		return caseDisagreed, fmt.Sprintf("unexpected error %v", err)
	}
	if tc.WantResult == nil {
		return caseDisagreed, "case has no expectation"
	}
	exp := ast.NewSet()
	for _, b := range *tc.WantResult {
		obj := ast.NewObject()
		for k, v := range b {
			obj.Insert(ast.StringTerm(k), ast.NewTerm(ast.MustInterfaceToValue(v)))
		}
		exp.Add(ast.NewTerm(obj))
	}
	got := ast.NewSet()
	for _, r := range rs {
		bindings, ok := r.Value.(ast.Object)
		if !ok {
			return caseDisagreed, fmt.Sprintf("result %v is not an object", r)
		}
		obj := ast.NewObject()
		for _, k := range bindings.Keys() {
			v, err := ast.JSON(bindings.Get(k).Value)
			if err != nil {
				return caseDisagreed, err.Error()
			}
			if tc.SortBindings {
				if a, ok := v.([]any); ok {
					slices.SortFunc(a, util.Compare)
				}
			}
			name, _ := k.Value.(ast.String)
			if !tc.IgnoreGeneratedVars || !strings.HasPrefix(string(name), "__localq") {
				obj.Insert(k, ast.NewTerm(ast.MustInterfaceToValue(v)))
			}
		}
		got.Add(ast.NewTerm(obj))
	}
	if exp.Compare(got) != 0 {
		return caseDisagreed, fmt.Sprintf("want %v, got %v", exp, got)
	}
	return caseAgreed, ""
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
