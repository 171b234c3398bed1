package gateway

import (
	"context"
	"go/parser"
	"go/token"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
)

// The endpoints themselves are tested through the server's routes
// (internal/server: gateway_test.go, extauthz_grpc_test.go, the fuzz
// targets) and the cmd e2e tests with nginx, Caddy and Envoy's protos.

func fullConfig(tb testing.TB) Config {
	tb.Helper()
	id, err := identity.New(identity.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	return Config{
		Decide: func(context.Context, policy.HTTPInput) (policy.HTTPDecision, string, uint64, error) {
			return policy.HTTPDecision{}, "", 0, nil
		},
		NextID:      func() string { return "id" },
		ActionLabel: func(a string) string { return a },
		SpanType:    func(t string) string { return t },
		WriteAllow:  func(http.ResponseWriter, string, string, string, uint64) {},
		Identity:    id,
		Metrics:     metrics.New(metrics.DefaultConfig()),
	}
}

func TestNewChecksConfig(t *testing.T) {
	g, err := New(fullConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if g.cfg.MaxDecisionBytes != DefaultConfig().MaxDecisionBytes || g.cfg.Logger == nil {
		t.Errorf("defaults not filled in: MaxDecisionBytes %d, Logger %v", g.cfg.MaxDecisionBytes, g.cfg.Logger)
	}
	for _, tc := range []struct {
		name  string
		unset func(*Config)
	}{
		{"Decide", func(c *Config) { c.Decide = nil }},
		{"NextID", func(c *Config) { c.NextID = nil }},
		{"ActionLabel", func(c *Config) { c.ActionLabel = nil }},
		{"SpanType", func(c *Config) { c.SpanType = nil }},
		{"WriteAllow", func(c *Config) { c.WriteAllow = nil }},
		{"Identity", func(c *Config) { c.Identity = nil }},
		{"Metrics", func(c *Config) { c.Metrics = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fullConfig(t)
			tc.unset(&cfg)
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.name) {
				t.Errorf("New without %s: %v, want an error naming it", tc.name, err)
			}
		})
	}
}

// TestImportsNotServer: dependencies point one way, server → gateway
// (docs/design.md); the gateway may use server's error codes (errcode).
func TestImportsNotServer(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		n++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == "github.com/crmauthz/crmauthz/internal/server" {
				t.Errorf("%s imports %s", name, p)
			}
		}
	}
	if n < 3 {
		t.Fatalf("found %d source files, want the package's", n)
	}
}

func TestParseOriginal(t *testing.T) {
	for _, tc := range []struct {
		method, uri string
		segs        []string // nil: refused
		query       string
		pathErr     bool // refused as invalid_path (else invalid_request)
	}{
		{"GET", "/contacts/c-1", []string{"contacts", "c-1"}, "", false},
		{"PUT", "/contacts/c%2D1?x=1#f", []string{"contacts", "c-1"}, "x=1", false},
		{"GET", "/", []string{}, "", false},
		{"", "/contacts/c-1", nil, "", false},
		{"G ET", "/contacts/c-1", nil, "", false},
		{"GET", "", nil, "", false},
		{"GET", "contacts", nil, "", true},
		{"GET", "/contacts//c-1", nil, "", true},
		{"GET", "/contacts/c-1/", nil, "", true},
		{"GET", "/contacts/%2e%2e/c-1", nil, "", true},
		{"GET", "/contacts/a%2Fb", nil, "", true},
		{"GET", "/contacts/a%00", nil, "", true},
		{"GET", "/contacts/a b", nil, "", true},
		{"GET", "/contacts/%ff", nil, "", true},
	} {
		t.Run(tc.method+" "+tc.uri, func(t *testing.T) {
			o, err := ParseOriginal(tc.method, tc.uri)
			if tc.segs == nil {
				_, isPath := err.(*pathError)
				if err == nil || isPath != tc.pathErr {
					t.Fatalf("ParseOriginal = %+v, %v (%T); want a refusal, path error %v", o, err, err, tc.pathErr)
				}
				return
			}
			if err != nil || !slices.Equal(o.Segments, tc.segs) || o.Query != tc.query || o.Method != tc.method {
				t.Fatalf("ParseOriginal = %+v, %v; want segments %q, query %q", o, err, tc.segs, tc.query)
			}
		})
	}
}
