package chart_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/crmauthz/crmauthz/internal/promtest"
	"github.com/crmauthz/crmauthz/tools/chart"
)

const (
	rulesFile     = chartDir + "/files/prometheus/crmauthz-rules.yaml"
	dashboardFile = chartDir + "/dashboards/crmauthz.json"
	obsValues     = "testdata/observability-values.yaml"
	defaultRunURL = "https://github.com/crmauthz/crmauthz/blob/main/docs/operations.md"
)

// prometheusRule is the part of the Prometheus Operator's PrometheusRule the chart renders,
// decoded strictly (the CRD's Go types are not a dependency).
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ruleFile `json:"spec"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t testing.TB) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := decodeStrict(raw, &rf); err != nil {
		t.Fatal(err)
	}
	return rf
}

// TestPrometheusRulesPromtool: promtool accepts the rule file, and its unit tests (every alert
// fires on synthetic series, and resolves) pass.
func TestPrometheusRulesPromtool(t *testing.T) {
	promtool := promtest.Binary(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", rulesFile},
		{"test", "rules", "testdata/crmauthz-rules.test.yaml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestEveryAlertHasARunbookAndATest: each alert has a severity, a summary, a runbook_url to its
// section of docs/operations.md (which exists), and a case in the promtool tests.
func TestEveryAlertHasARunbookAndATest(t *testing.T) {
	ops, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("testdata/crmauthz-rules.test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			n++
			t.Run(r.Alert, func(t *testing.T) {
				anchor := strings.ToLower(r.Alert)
				if got := r.Annotations["runbook_url"]; got != defaultRunURL+"#"+anchor {
					t.Errorf("runbook_url %q, want %s#%s", got, defaultRunURL, anchor)
				}
				if !strings.Contains(string(ops), "\n### "+r.Alert+"\n") {
					t.Errorf("docs/operations.md has no section ### %s", r.Alert)
				}
				if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s lacks a severity, a summary or a description", r.Alert)
				}
				if strings.Count(string(tests), "alertname: "+r.Alert+"\n") < 2 {
					t.Errorf("the promtool tests do not check that %s fires and resolves", r.Alert)
				}
			})
		}
	}
	if n != 7 {
		t.Errorf("%d alerts, want 7", n)
	}
}

// TestObservabilityOffByDefault: neither the dashboard ConfigMap nor the PrometheusRule is
// rendered unless asked for, in either mode.
func TestObservabilityOffByDefault(t *testing.T) {
	for _, sc := range []string{"standalone-default", "standalone-full", "sidecar"} {
		m := render(t, chartDir, scenario(sc), nil)
		for _, k := range m.keys() {
			if strings.HasPrefix(k, "PrometheusRule/") || strings.HasSuffix(k, "-dashboard") {
				t.Errorf("%s renders %s", sc, k)
			}
		}
	}
}

// TestObservabilityLint is helm lint --strict with the dashboard and the rules on.
func TestObservabilityLint(t *testing.T) {
	msgs, errs, err := chart.Lint(chartDir, obsValues)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Fatalf("lint: %v\nmessages: %v", errs, msgs)
	}
}

// renderObservability renders a scenario with testdata/observability-values.yaml and extra
// merged over it.
func renderObservability(t testing.TB, sc string, extra map[string]any) manifests {
	t.Helper()
	vals, err := chart.ReadValues(obsValues)
	if err != nil {
		t.Fatal(err)
	}
	merged := map[string]any(vals)
	merge(merged, extra)
	return render(t, chartDir, scenario(sc), merged)
}

// TestDashboardConfigMap: the ConfigMap holds the dashboard JSON byte for byte, with the
// sidecar's label, in both modes.
func TestDashboardConfigMap(t *testing.T) {
	want, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	full := releaseName + "-crmauthz"
	for _, tc := range []struct {
		name             string
		scenario         string
		extra            map[string]any
		label, value     string
		extraLabel       bool
		folderAnnotation bool
	}{
		{"standalone, every option", "standalone-default", nil, "grafana_dashboard", "1", true, true},
		{"sidecar mode", "sidecar", nil, "grafana_dashboard", "1", true, true},
		{"another sidecar label", "standalone-default", vals("metrics.grafanaDashboard.label", "dashboards.example.com/load",
			"metrics.grafanaDashboard.labelValue", "yes", "metrics.grafanaDashboard.labels", nil,
			"metrics.grafanaDashboard.annotations", nil), "dashboards.example.com/load", "yes", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := renderObservability(t, tc.scenario, tc.extra)
			cm := get[*corev1.ConfigMap](t, m, "ConfigMap", full+"-dashboard")
			if cm.Labels[tc.label] != tc.value {
				t.Errorf("labels %v: want %s=%s", cm.Labels, tc.label, tc.value)
			}
			if (cm.Labels["team"] == "platform") != tc.extraLabel || (cm.Annotations["grafana_folder"] == "crmauthz") != tc.folderAnnotation {
				t.Errorf("labels %v, annotations %v", cm.Labels, cm.Annotations)
			}
			if got := cm.Data["crmauthz.json"]; got+"\n" != string(want) {
				t.Errorf("crmauthz.json in the ConfigMap differs from %s", dashboardFile)
			}
		})
	}
}

// TestPrometheusRuleIsTheRuleFile: the PrometheusRule's spec is the plain rule file, with the
// runbook links moved to runbookBaseURL, and the labels for the ruleSelector.
func TestPrometheusRuleIsTheRuleFile(t *testing.T) {
	for _, tc := range []struct {
		scenario, base string
		extra          map[string]any
	}{
		{"standalone-default", "https://wiki.example.com/crmauthz/operations", nil},
		{"sidecar", "https://wiki.example.com/crmauthz/operations", nil},
		{"standalone-full", defaultRunURL, vals("metrics.prometheusRule.runbookBaseURL", defaultRunURL)},
	} {
		t.Run(tc.scenario+" "+tc.base, func(t *testing.T) {
			m := renderObservability(t, tc.scenario, tc.extra)
			pr := get[*prometheusRule](t, m, "PrometheusRule", releaseName+"-crmauthz")
			if pr.Labels["release"] != "prometheus" {
				t.Errorf("labels %v: want release=prometheus", pr.Labels)
			}
			want := readRules(t)
			for gi := range want.Groups {
				for ri := range want.Groups[gi].Rules {
					a := want.Groups[gi].Rules[ri].Annotations
					a["runbook_url"] = strings.Replace(a["runbook_url"], defaultRunURL, tc.base, 1)
				}
			}
			if !reflect.DeepEqual(pr.Spec, want) {
				got, _ := yaml.Marshal(pr.Spec)
				t.Errorf("spec differs from %s (runbooks at %s):\n%s", filepath.Base(rulesFile), tc.base, got)
			}
		})
	}
}
