package main

import (
	"strings"
	"testing"
)

// TestE2EPolicyEvaluator runs the golden decision cases through the real
// binary with each --policy-evaluator, and with the decision cache off.
func TestE2EPolicyEvaluator(t *testing.T) {
	f := loadFixture(t)
	for _, args := range [][]string{
		{"--policy-evaluator", "ir"},
		{"--policy-evaluator", "topdown"},
		{"--policy-evaluator", "auto", "--decision-cache-slots", "-1"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			p := startServer(t, t.TempDir(), args...)
			putSnapshot(t, p, f.snapshot(1))
			for round := 0; round < 2; round++ { // the second round may come from the cache
				for _, c := range f.Cases {
					if c.Input.Subject == "" || c.Input.Action == "" {
						continue // refused with a 400 before the policy
					}
					allow, reason := decide(t, p, c.Input.Subject, c.Input.Action, c.Input.Resource["type"], c.Input.Resource["id"], c.Input.Target)
					if allow != c.Allow || reason != c.Reason {
						t.Errorf("%s: %v %s, want %v %s", c.Name, allow, reason, c.Allow, c.Reason)
					}
				}
			}
			m := metricsText(t, p)
			off := strings.Contains(strings.Join(args, " "), "-1")
			if hits := strings.Contains(m, `crmauthz_decision_cache_lookups_total{result="hit"} 0`+"\n"); hits != off {
				t.Errorf("cache off %v, but the hits counter says otherwise:\n%s", off, m)
			}
		})
	}
	t.Run("bad evaluator", func(t *testing.T) {
		code, _, stderr := runCLI(t, "", "serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
			"--data-dir", t.TempDir(), "--policy-evaluator", "fast")
		if code != exitUsage || !strings.Contains(stderr, "--policy-evaluator") || !strings.Contains(stderr, "want one of auto, ir, topdown") {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
}
