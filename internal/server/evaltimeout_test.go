package server

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/policy"
)

// runawayPolicy loops 10^10 times for action "slow" and on the gateway and
// list entry points, and asks numbers.range for a billion numbers for
// action "huge".
const runawayPolicy = `package crmauthz

slow if {
	every i in numbers.range(1, 100000) {
		every j in numbers.range(1, 100000) {
			i + j > 1
		}
	}
}

default decision := {"allow": false, "reason": "none"}

decision := {"allow": true, "reason": "slow"} if {
	input.action == "slow"
	slow
}

decision := {"allow": true, "reason": "huge"} if {
	input.action == "huge"
	count(numbers.range(1, 1e9)) > 0
}

http_decision := {"allow": true, "reason": "slow"} if slow

list_scope := "all" if slow
`

// TestRunawayPolicyIsDenied: every evaluating endpoint denies a policy that
// runs past --eval-timeout (evaluation_timeout: 500 on the decision API,
// 403 on the gateway) or calls numbers.range for a billion numbers
// (refused before it allocates), and counts them.
func TestRunawayPolicyIsDenied(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, runawayPolicy)
	g := newGW(t, func(cfg *Config) {
		eng, err := policy.New(policy.Config{Dir: dir, EvalTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Engine = eng
		cfg.DataPaths = []string{"*"}
	})
	slow := `{"subject":"u-owner","action":"slow","resource":{"type":"contact","id":"c-1"}}`
	cases := []struct {
		name, method, target string
		hdr                  map[string]string
		body                 string
		code                 int
		errCode              string
	}{
		{"decision", http.MethodPost, "/v1/decision", nil, slow, 500, "evaluation_timeout"},
		{"batch", http.MethodPost, "/v1/decisions", nil,
			`{"subject":"u-owner","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"}},{"action":"slow","resource":{"type":"contact","id":"c-1"}}]}`,
			500, "evaluation_timeout"},
		{"data API", http.MethodPost, "/v1/data/crmauthz/decision", nil, `{"input":` + slow + `}`, 500, "evaluation_timeout"},
		{"list", http.MethodGet, "/v1/subjects/u-owner/records?type=contact&location_id=loc-1", nil, "", 500, "evaluation_timeout"},
		{"forward auth", http.MethodGet, "/v1/forward-auth", caddy("GET", "/contacts/c-1", "u-owner"), "", 403, "evaluation_timeout"},
		{"ext_authz", http.MethodGet, "/v1/ext-authz/contacts/c-1", map[string]string{"X-User-Id": "u-owner"}, "", 403, "evaluation_timeout"},
		{"huge range", http.MethodPost, "/v1/decision", nil,
			`{"subject":"u-owner","action":"huge","resource":{"type":"contact","id":"c-1"}}`, 500, "evaluation_error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := g.do(t, tc.method, tc.target, tc.hdr, tc.body)
			if r.code != tc.code || r.errCode() != tc.errCode || r.body["allow"] == true {
				t.Fatalf("got %d %v, want %d %s", r.code, r.body, tc.code, tc.errCode)
			}
			if tc.code == 403 && r.reason != tc.errCode {
				t.Fatalf("X-Authz-Reason %q, want %q", r.reason, tc.errCode)
			}
			if tc.name == "huge range" {
				e, _ := r.body["error"].(map[string]any)
				if msg, _ := e["message"].(string); !strings.Contains(msg, "numbers.range would yield 1000000000 numbers") {
					t.Fatalf("message %q does not say why", msg)
				}
			}
		})
	}
	stopped := func(bound string) float64 {
		return counter(t, g.m, "crmauthz_policy_evaluations_stopped_total", map[string]string{"bound": bound})
	}
	if got := stopped("timeout"); got != 6 {
		t.Errorf("timeouts counted: %v, want 6", got)
	}
	if got := stopped("builtin_size"); got != 1 {
		t.Errorf("built-in refusals counted: %v, want 1", got)
	}
	if got := counter(t, g.m, "crmauthz_decisions_total",
		map[string]string{"endpoint": "forward_auth", "action": "other", "allow": "false", "reason": "evaluation_timeout"}); got != 1 {
		t.Errorf("forward_auth evaluation_timeout decisions: %v, want 1", got)
	}
}

// writePolicy writes src as dir/policy.rego.
func writePolicy(tb testing.TB, dir, src string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
}
