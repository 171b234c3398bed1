package authoring

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/policies"
)

func TestTestReportFormats(t *testing.T) {
	// a policy with an uncovered rule: 1 of its 2 lines is covered
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"p.rego":      "package crmauthz\n\ndecision := {\"allow\": false, \"reason\": \"x\"}\n\nunused if input.never\n",
		"p_test.rego": "package crmauthz_test\n\ntest_x if data.crmauthz.decision.reason == \"x\"\n",
	})
	tests := []struct {
		name       string
		cfg        policy.Config
		opts       TestOptions
		wantPassed bool
		check      func(t *testing.T, out string)
	}{
		{"json results", policy.Config{Dir: dir}, TestOptions{Format: "json"}, true, func(t *testing.T, out string) {
			var results []map[string]any
			if err := json.Unmarshal([]byte(out), &results); err != nil || len(results) != 1 || results[0]["name"] != "test_x" {
				t.Errorf("not OPA's JSON results (%v): %s", err, out)
			}
		}},
		{"json coverage", policy.Config{Dir: dir}, TestOptions{Format: "json", Coverage: true}, true, func(t *testing.T, out string) {
			var rep struct {
				Files    map[string]any `json:"files"`
				Coverage float64        `json:"coverage"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Files) != 2 || rep.Coverage <= 0 {
				t.Errorf("not OPA's JSON coverage report (%v): %s", err, out)
			}
		}},
		{"threshold not met", policy.Config{Dir: dir}, TestOptions{Threshold: 95}, false, func(t *testing.T, out string) {
			if !strings.Contains(out, "Coverage threshold not met: policy coverage 50.00% < 95.00%") {
				t.Errorf("no threshold message: %s", out)
			}
		}},
		{"threshold met", policy.Config{Dir: dir}, TestOptions{Threshold: 40}, true, func(t *testing.T, out string) {
			if !strings.Contains(out, "not covered: 5\n") {
				t.Errorf("uncovered lines not listed once: %s", out)
			}
		}},
		{"default policy at 95%", policy.Config{FS: policies.FS}, TestOptions{Threshold: 95}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			tt.opts.Out = &out
			passed, err := Test(context.Background(), tt.cfg, tt.opts)
			if err != nil || passed != tt.wantPassed {
				t.Fatalf("Test = %v, %v; want %v\n%s", passed, err, tt.wantPassed, out.String())
			}
			if tt.check != nil {
				tt.check(t, out.String())
			}
		})
	}
	for _, bad := range []TestOptions{{Format: "xml"}, {Threshold: 101}} {
		if _, err := Test(context.Background(), policy.Config{Dir: dir}, bad); err == nil {
			t.Errorf("Test(%+v): no error", bad)
		}
	}
}
