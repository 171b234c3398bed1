package authoring

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/policy/source"
	"github.com/crmauthz/crmauthz/policies"
	"github.com/open-policy-agent/opa/v1/format"
)

func TestDefaultPolicyTests(t *testing.T) {
	var out bytes.Buffer
	passed, err := Test(context.Background(), policy.Config{FS: policies.FS}, TestOptions{Coverage: true, Out: &out})
	t.Logf("opa test output:\n%s", out.String())
	if err != nil {
		t.Fatalf("Test: %v", err)
	}
	if !passed {
		t.Fatalf("policy tests failed")
	}
	m := regexp.MustCompile(`Policy coverage \(without \*_test\.rego\): ([0-9.]+)%`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no policy coverage line in the output")
	}
	cov, _ := strconv.ParseFloat(m[1], 64)
	if cov < 95 {
		t.Errorf("coverage of the default policy = %.2f%%, want >= 95%%", cov)
	}
	if !strings.Contains(out.String(), "crmauthz/authz.rego") {
		t.Errorf("no per-file coverage for crmauthz/authz.rego")
	}
}

func TestCheck(t *testing.T) {
	if err := Check(policy.Config{FS: policies.FS}); err != nil {
		t.Fatalf("Check(default policy): %v", err)
	}
	tests := []struct {
		name  string
		files map[string]string
		want  *regexp.Regexp
	}{
		{"parse error", map[string]string{"authz.rego": "package crmauthz\n\ndecision := {\"allow\": true\n"},
			regexp.MustCompile(`authz\.rego:\d+:\d+: rego_parse_error: `)},
		{"broken test file", map[string]string{"authz_test.rego": "package crmauthz_test\n\ntest_x if {\n\tundefined_thing\n}\n"},
			regexp.MustCompile(`authz_test\.rego:4:2: rego_unsafe_var_error: var undefined_thing is unsafe`)},
		{"test using an unknown built-in", map[string]string{"authz_test.rego": "package crmauthz_test\n\ntest_x if crm.users(\"u\")\n"},
			regexp.MustCompile(`authz_test\.rego:3:\d+: rego_type_error: undefined function crm\.users`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			files := defaultPolicyFiles(t, true)
			for k, v := range tt.files {
				files[k] = v
			}
			writeFiles(t, dir, files)
			err := Check(policy.Config{Dir: dir})
			if err == nil {
				t.Fatal("Check: no error")
			}
			if !tt.want.MatchString(err.Error()) {
				t.Errorf("error %q does not match %v", err, tt.want)
			}
			var ce *policy.CompileError
			if !errors.As(err, &ce) || len(ce.Errors) == 0 {
				t.Errorf("error %T is not a *policy.CompileError", err)
			}
		})
	}
}

func TestTestOutcomes(t *testing.T) {
	failing := `package crmauthz_test

import data.crmauthz

test_passes if {
	crmauthz.decision.reason == "unknown_action" with input as {}
}

test_fails if {
	crmauthz.decision.reason == "admin" with input as {}
}
`
	dir := t.TempDir()
	files := defaultPolicyFiles(t, false)
	files["failing_test.rego"] = failing
	writeFiles(t, dir, files)

	t.Run("failing test", func(t *testing.T) {
		var out bytes.Buffer
		passed, err := Test(context.Background(), policy.Config{Dir: dir}, TestOptions{Out: &out})
		if err != nil {
			t.Fatal(err)
		}
		if passed {
			t.Errorf("passed with a failing test:\n%s", out.String())
		}
		for _, want := range []string{"data.crmauthz_test.test_fails: FAIL", "PASS: 1/2", "FAIL: 1/2"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
	})
	t.Run("verbose", func(t *testing.T) {
		var out bytes.Buffer
		passed, err := Test(context.Background(), policy.Config{Dir: dir}, TestOptions{Verbose: true, Out: &out})
		if err != nil || passed {
			t.Fatalf("Test = %v, %v", passed, err)
		}
		for _, want := range []string{"data.crmauthz_test.test_passes: PASS", "data.crmauthz_test.test_fails: FAIL", "FAILURES"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
	})
	t.Run("run filter", func(t *testing.T) {
		var out bytes.Buffer
		passed, err := Test(context.Background(), policy.Config{Dir: dir}, TestOptions{Run: "test_passes", Verbose: true, Out: &out})
		if err != nil || !passed {
			t.Fatalf("Test = %v, %v\n%s", passed, err, out.String())
		}
		if strings.Contains(out.String(), "test_fails") || !strings.Contains(out.String(), "PASS: 1/1") {
			t.Errorf("filter not applied:\n%s", out.String())
		}
	})
	t.Run("no tests match", func(t *testing.T) {
		passed, err := Test(context.Background(), policy.Config{Dir: dir}, TestOptions{Run: "nothing_matches"})
		if passed || err == nil {
			t.Errorf("Test = %v, %v; want false and an error", passed, err)
		}
	})
	t.Run("compile error", func(t *testing.T) {
		bad := t.TempDir()
		writeFiles(t, bad, map[string]string{"x_test.rego": "package x\n\ntest_x if y\n"})
		passed, err := Test(context.Background(), policy.Config{Dir: bad}, TestOptions{})
		if passed || err == nil || !regexp.MustCompile(`x_test\.rego:3:\d+: rego_unsafe_var_error`).MatchString(err.Error()) {
			t.Errorf("Test = %v, %v; want a compile error with file:line:col", passed, err)
		}
	})
	t.Run("built-in without mock", func(t *testing.T) {
		// crm.user has no facts under test: undefined, so the test fails (not errors)
		d := t.TempDir()
		writeFiles(t, d, map[string]string{"x_test.rego": "package x\n\ntest_user if crm.user(\"u\")\n"})
		passed, err := Test(context.Background(), policy.Config{Dir: d}, TestOptions{})
		if passed || err != nil {
			t.Errorf("Test = %v, %v; want false, nil", passed, err)
		}
	})
}

// TestDefaultPolicyFormatted checks that the default policy is formatted as
// `opa fmt` would.
func TestDefaultPolicyFormatted(t *testing.T) {
	files, err := source.Read(source.Config{FS: policies.FS})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		t.Run(f.Name, func(t *testing.T) {
			got, err := format.Source(f.Name, f.Src)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f.Src) {
				t.Errorf("%s is not formatted; opa fmt gives:\n%s", f.Name, got)
			}
		})
	}
}

// TestTestTimeout: a Rego test that runs past TestOptions.Timeout errors
// (the run fails, nothing hangs); a negative timeout is refused.
func TestTestTimeout(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"p.rego": "package crmauthz\n\ndecision := {\"allow\": false, \"reason\": \"x\"}\n",
		"bounded_test.rego": `package crmauthz_test

test_forever if {
	every i in numbers.range(1, 100000) {
		every j in numbers.range(1, 100000) {
			i + j > 1
		}
	}
}
`,
	})
	var out strings.Builder
	passed, err := Test(context.Background(), policy.Config{Dir: dir}, TestOptions{Out: &out, Timeout: 50 * time.Millisecond})
	// i + j > 1 holds for every i and j: only the deadline can fail it
	// (OPA reports FAIL or ERROR, as the cancellation finds the test).
	if err != nil || passed || !strings.Contains(out.String(), "test_forever: FAIL") && !strings.Contains(out.String(), "test_forever: ERROR") {
		t.Fatalf("Test = %v, %v, want a failed run\n%s", passed, err, out.String())
	}
	if _, err := Test(context.Background(), policy.Config{Dir: dir}, TestOptions{Timeout: -time.Second}); err == nil {
		t.Fatal("a negative test timeout was accepted")
	}
}
