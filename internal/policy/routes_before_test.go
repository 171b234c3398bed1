package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRoutesAsBefore: routes.rego as it is decides every request as the
// routes.rego of 432c875 (testdata/routes_432c875.rego, the file before
// BENCHMARKS.md "Session 11: forward auth, the routes' and records'
// allocations" rewrote the owner's body keys and the one target's follower
// limit without sets): the same HTTPDecision, or the same error, on the
// golden and generated requests, for configurations that reach every
// branch (a path prefix, follower maxima of 10, 2, 0 and one that is a
// string, followers managing followers).
func TestRoutesAsBefore(t *testing.T) {
	old, err := os.ReadFile(filepath.Join("testdata", "routes_432c875.rego"))
	if err != nil {
		t.Fatal(err)
	}
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	seeds := []uint64{1, 2, 3, 4, 5}
	if testing.Short() || raceDetector {
		seeds = seeds[:1] // 4,000 generated requests per configuration, not 20,000
	}
	var ins []HTTPInput
	for _, seed := range seeds {
		ins = append(ins, httpGenerated(t, g, 4000, seed)...)
	}
	for _, c := range httpBenchCases(t) {
		ins = append(ins, c.in)
	}
	config := func(manage bool, maxFollowers, prefix string) string {
		return fmt.Sprintf("package crmauthz.config\n\nfollowers_can_delete := %t\n\nfollowers_can_manage_followers := %t\n\n"+
			"max_followers := %s\n\npath_prefix := %q\n", manage, manage, maxFollowers, prefix)
	}
	tests := []struct {
		name   string
		config string
		// reasons some request must get (that the requests reach the
		// branches rewritten)
		reasons []string
	}{
		{"default", config(false, "10", ""), []string{"owner", "follower_limit_reached", "invalid_body", "unmapped_route",
			"followers_cannot_change_owner", "unknown_target", "record_not_found"}},
		{"max_2", config(false, "2", ""), []string{"follower_limit_reached"}},
		{"max_0_managing", config(true, "0", ""), []string{"follower_limit_reached", "follower"}},
		{"max_string", config(false, `"10"`, ""), []string{"owner"}},
		{"prefix", config(false, "10", "/api/v2/"), []string{"owner", "invalid_body", "unmapped_route"}},
		{"prefix_max_2_managing", config(true, "2", "/api/v2"), []string{"follower_limit_reached", "follower"}},
		{"prefix_max_0", config(false, "0", "/api/v2/"), []string{"follower_limit_reached"}},
		{"prefix_slash_max_string", config(false, `"10"`, "/"), []string{"owner"}},
	}
	ctx := context.Background()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			engines := map[string]*Engine{}
			for _, side := range []string{"new", "old"} {
				files := allDefaultFiles(t)
				for k := range files {
					if strings.HasSuffix(k, "_test.rego") {
						delete(files, k)
					}
				}
				files["config.rego"] = tc.config
				if side == "old" {
					files["routes.rego"] = string(old)
				}
				dir := t.TempDir()
				writeFiles(t, dir, files)
				e, err := New(Config{Dir: dir, EvalTimeout: testEvalTimeout})
				if err != nil {
					t.Fatal(err)
				}
				if ev, err := e.HTTPEvaluator(); ev != EvaluatorIR || err != nil {
					t.Fatalf("%s routes decided with %s (%v)", side, ev, err)
				}
				engines[side] = e
			}
			reasons := map[string]int{}
			for i, in := range ins {
				if strings.HasPrefix(tc.name, "prefix") && i%4 != 0 && len(in.Segments) > 0 {
					// most requests under the prefix
					in.Segments = append([]string{"api", "v2"}, in.Segments...)
					in.Path = "/" + strings.Join(in.Segments, "/")
				}
				a, _, aerr := engines["new"].DecideHTTP(ctx, facts, in)
				b, _, berr := engines["old"].DecideHTTP(ctx, facts, in)
				if err := sameHTTP(a, aerr, b, berr); err != nil {
					t.Fatalf("%s %s body %v subject %q: the routes differ (IR: the new, topdown: the old): %v", in.Method, in.Path, in.Body, in.Subject, err)
				}
				if aerr != nil {
					reasons["error"]++
					continue
				}
				reasons[a.Reason]++
			}
			t.Logf("%d requests: %v", len(ins), reasons)
			for _, r := range tc.reasons {
				if reasons[r] == 0 {
					t.Errorf("no request answered %s (%v)", r, reasons)
				}
			}
		})
	}
}
