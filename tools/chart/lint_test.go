package chart_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/lint/support"

	"github.com/crmauthz/crmauthz/tools/chart"
)

// TestScenarioFilesAreTested makes sure every ci/*-values.yaml has a case below.
func TestScenarioFilesAreTested(t *testing.T) {
	files, err := chart.Scenarios(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, strings.TrimSuffix(filepath.Base(f), "-values.yaml"))
	}
	want := []string{"sidecar", "standalone-default", "standalone-full"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("scenario files %v, the tests cover %v", got, want)
	}
}

// TestLint is `helm lint --strict -f ci/X-values.yaml` for every scenario, and for the
// example app chart, which includes the sidecar templates.
func TestLint(t *testing.T) {
	files, err := chart.Scenarios(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	type lintCase struct{ dir, values string }
	cases := []lintCase{{exampleDir, ""}}
	for _, f := range files {
		cases = append(cases, lintCase{chartDir, f})
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.dir)+"/"+filepath.Base(c.values), func(t *testing.T) {
			msgs, errs, err := chart.Lint(c.dir, c.values)
			if err != nil {
				t.Fatal(err)
			}
			if len(errs) > 0 {
				t.Fatalf("lint: %v\nmessages: %v", errs, msgs)
			}
			for _, m := range msgs {
				if m.Severity > support.InfoSev {
					t.Errorf("lint: %v", m)
				}
			}
		})
	}
}

// TestLintFails: the lint is not a formality. A template that cannot render, a value the schema
// refuses, and a combination the chart refuses with `fail` (which helm lint itself only logs)
// are all errors.
func TestLintFails(t *testing.T) {
	tests := []struct {
		name     string
		template string // added to templates/
		values   string
		want     string
	}{
		{name: "template that cannot render", template: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.missing }}\n", want: "nil pointer"},
		{name: "value the schema refuses", values: "mode: both\n", want: "mode"},
		{name: "combination the chart refuses", values: "mode: sidecar\nautoscaling:\n  enabled: true\n", want: "autoscaling.enabled is for mode: standalone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyChart(t)
			var values string
			if tc.template != "" {
				if err := os.WriteFile(filepath.Join(dir, "templates", "broken.yaml"), []byte(tc.template), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.values != "" {
				values = filepath.Join(t.TempDir(), "bad-values.yaml")
				if err := os.WriteFile(values, []byte(tc.values), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, errs, err := chart.Lint(dir, values)
			if err != nil {
				t.Fatal(err)
			}
			if len(errs) == 0 {
				t.Fatal("lint passed")
			}
			if !strings.Contains(fmt.Sprint(errs), tc.want) {
				t.Errorf("lint errors %v do not mention %q", errs, tc.want)
			}
		})
	}
}

// copyChart copies charts/crmauthz to a temporary directory, its policies link included.
func copyChart(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "crmauthz")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	policies, err := filepath.Abs(filepath.Join(chartDir, "files", "policies"))
	if err != nil {
		t.Fatal(err)
	}
	if policies, err = filepath.EvalSymlinks(policies); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "files", "policies")
	if err := os.RemoveAll(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(policies, link); err != nil {
		t.Fatal(err)
	}
	return dir
}
