package chart_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestPolicyFilesReplaceDefaults: a file of policies.files named like a default one replaces it.
func TestPolicyFilesReplaceDefaults(t *testing.T) {
	const mine = "package crmauthz.config\n\nmax_followers := 5\n"
	m := render(t, chartDir, scenario("standalone-default"), vals("policies.files", map[string]any{"config.rego": mine}))
	cm := get[*corev1.ConfigMap](t, m, "ConfigMap", releaseName+"-crmauthz-policies")
	if cm.Data["config.rego"] != mine || cm.Data["authz.rego"] == "" {
		t.Errorf("keys %v, config.rego %q", keysOf(cm.Data), cm.Data["config.rego"])
	}
}

func keysOf[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestPoliciesConfigMapIsTheDefaultPolicy: the chart's copy of the policy is the built-in one,
// byte for byte, and reaches the ConfigMap unchanged.
func TestPoliciesConfigMapIsTheDefaultPolicy(t *testing.T) {
	src, err := filepath.Glob("../../policies/crmauthz/*.rego")
	if err != nil || len(src) == 0 {
		t.Fatalf("no default policy files: %v", err)
	}
	m := render(t, chartDir, scenario("standalone-default"), nil)
	cm := get[*corev1.ConfigMap](t, m, "ConfigMap", releaseName+"-crmauthz-policies")
	if len(cm.Data) != len(src) {
		t.Errorf("ConfigMap keys %v, the default policy has %v", keysOf(cm.Data), src)
	}
	for _, f := range src {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		copyB, err := os.ReadFile(filepath.Join(chartDir, "files", "policies", name))
		if err != nil || string(copyB) != string(want) {
			t.Errorf("charts/crmauthz/files/policies/%s differs from policies/crmauthz/%s: cp policies/crmauthz/*.rego charts/crmauthz/files/policies/", name, name)
		}
		if cm.Data[name] != string(want) {
			t.Errorf("ConfigMap %s differs from policies/crmauthz/%s", name, name)
		}
	}
}
func TestBuiltinPolicyNeedsNoConfigMap(t *testing.T) {
	m := render(t, chartDir, scenario("standalone-default"), vals("policies.builtin", true))
	_, pod := podOf(t, m)
	c := containerNamed(t, pod.Spec.Containers, "crmauthz")
	if _, ok := flagValue(serveArgs(t, m, c), "policies"); ok {
		t.Errorf("args %v: --policies with policies.builtin", c.Args)
	}
	for _, k := range m.keys() {
		if strings.HasPrefix(k, "ConfigMap/") && k != "ConfigMap/"+releaseName+"-crmauthz-config" {
			t.Errorf("rendered %s with policies.builtin", k)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == "crmauthz-policies" {
			t.Error("policies volume with policies.builtin")
		}
	}
}

// TestPolicyFilesKeepTheirText: whatever a policy file holds reaches the ConfigMap unchanged.
func TestPolicyFilesKeepTheirText(t *testing.T) {
	tests := []struct{ name, src string }{
		{"plain", "package x\n\nallow := true\n"},
		{"no final newline", "package x\nallow := true"},
		{"several final newlines", "package x\n\n\n"},
		{"leading spaces", "  # indented\npackage x\n"},
		{"tabs and blank lines with spaces", "package x\n\t\n  \nf if {\n\ttrue\n}\n"},
		{"CRLF", "package x\r\nallow := true\r\n"},
		{"YAML-looking text", "--- \n# key: value\n- item\n...\n"},
		{"unicode line separator", "package x\n# a\u2028b\n"},
		{"empty", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, chartDir, scenario("standalone-default"), vals("policies.files", map[string]any{"extra.rego": tc.src}))
			cm := get[*corev1.ConfigMap](t, m, "ConfigMap", releaseName+"-crmauthz-policies")
			if got := cm.Data["extra.rego"]; got != tc.src {
				t.Errorf("ConfigMap holds %q, want %q", got, tc.src)
			}
			if cm.Immutable == nil || *cm.Immutable {
				t.Error("the policies ConfigMap must stay mutable")
			}
		})
	}
}
