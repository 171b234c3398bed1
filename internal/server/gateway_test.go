package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/server/gateway"
	"github.com/crmauthz/crmauthz/policies"
)

// gwFacts: u-owner owns contact c-1, contact "c 2" and opportunity o-1;
// u-fol follows c-1 and o-1; u-none follows nothing; u-far is in another
// location; u-admin is an admin; c-nine has nine followers.
const gwFacts = `{"seq": 10}
{"user": {"id": "u-owner", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}}
{"user": {"id": "u-fol", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}}
{"user": {"id": "u-fol2", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}}
{"user": {"id": "u-none", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}}
{"user": {"id": "u-far", "role": "user", "location_ids": ["loc-2"], "assigned_data_only": true}}
{"user": {"id": "u-admin", "role": "admin", "location_ids": ["loc-1"]}}
{"record": {"type": "contact", "id": "c-1", "location_id": "loc-1", "owner": "u-owner", "followers": ["u-fol", "u-fol2"]}}
{"record": {"type": "contact", "id": "c 2", "location_id": "loc-1", "owner": "u-owner", "followers": []}}
{"record": {"type": "contact", "id": "c-nine", "location_id": "loc-1", "owner": "u-owner", "followers": ["f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "u-fol"]}}
{"record": {"type": "opportunity", "id": "o-1", "location_id": "loc-1", "owner": "u-owner", "followers": ["u-fol"]}}
`

type gwServer struct {
	*Server
	ix *index.Index
	m  *metrics.Metrics
	h  http.Handler
}

// newGW is a server over a real index with gwFacts and the default policy;
// edit changes its Config before New.
func newGW(tb testing.TB, edit func(*Config)) *gwServer {
	tb.Helper()
	cfg := newConfig(tb, strings.NewReader(gwFacts))
	if edit != nil {
		edit(&cfg)
	}
	s := mustNew(tb, cfg)
	return &gwServer{Server: s, ix: cfg.Index, m: cfg.Metrics, h: s.DecisionHandler()}
}

// gwReply is a gateway endpoint's answer.
type gwReply struct {
	code   int
	reason string // X-Authz-Reason
	id     string // X-Authz-Decision-Id
	body   map[string]any
	hdr    http.Header
}

func (r gwReply) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (g *gwServer) do(tb testing.TB, method, target string, hdr map[string]string, body string) gwReply {
	tb.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	g.h.ServeHTTP(rec, req)
	out := gwReply{code: rec.Code, reason: rec.Header().Get("X-Authz-Reason"), id: rec.Header().Get("X-Authz-Decision-Id"), hdr: rec.Header()}
	if method != http.MethodHead && rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &out.body); err != nil {
			tb.Fatalf("%s %s: reply is not JSON: %q", method, target, rec.Body.String())
		}
	}
	return out
}

// checkReply checks status, reason and the shape every answer has.
func checkReply(t testing.TB, got gwReply, code int, reason string) {
	t.Helper()
	if got.code != code || got.reason != reason {
		t.Fatalf("got %d %q %v, want %d %q", got.code, got.reason, got.body, code, reason)
	}
	if got.id == "" {
		t.Errorf("no X-Authz-Decision-Id")
	}
	switch {
	case code == http.StatusOK && got.body != nil: // HEAD: no body
		if got.body["allow"] != true || got.body["decision_id"] != got.id {
			t.Errorf("allow body %v", got.body)
		}
	case got.body != nil:
		e, _ := got.body["error"].(map[string]any)
		if e == nil || e["message"] == "" || e["reason"] != reason || e["decision_id"] != got.id {
			t.Errorf("error body %v", got.body)
		}
	}
	if code == http.StatusUnauthorized && !strings.HasPrefix(got.hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without WWW-Authenticate: %v", got.hdr)
	}
}

func caddy(method, uri, user string) map[string]string {
	h := map[string]string{"X-Forwarded-Method": method, "X-Forwarded-Uri": uri}
	if user != "" {
		h["X-User-Id"] = user
	}
	return h
}

func nginx(method, uri, user string) map[string]string {
	h := map[string]string{"X-Original-Method": method, "X-Original-URI": uri}
	if user != "" {
		h["X-User-Id"] = user
	}
	return h
}

func with(h map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func TestForwardAuth(t *testing.T) {
	g := newGW(t, nil)
	cases := []struct {
		name   string
		method string // of the request to crmauthz
		hdr    map[string]string
		body   string
		code   int
		reason string
		errc   string // error.code of a deny
	}{
		{"owner views (Caddy, Traefik)", "GET", caddy("GET", "/contacts/c-1", "u-owner"), "", 200, "owner", ""},
		{"owner deletes (nginx)", "GET", nginx("DELETE", "/contacts/c-1", "u-owner"), "", 200, "owner", ""},
		{"follower edits", "GET", caddy("PATCH", "/contacts/c-1", "u-fol"), "", 200, "follower", ""},
		{"follower may not delete", "GET", caddy("DELETE", "/contacts/c-1", "u-fol"), "", 403, "follower_not_permitted", "denied"},
		{"follower may not change the owner", "GET", nginx("PUT", "/contacts/c-1/owner", "u-fol"), "", 403, "followers_cannot_change_owner", "denied"},
		{"follower may not add followers", "GET", nginx("POST", "/contacts/c-1/followers", "u-fol"), "", 403, "follower_not_permitted", "denied"},
		{"restricted non-follower", "GET", caddy("GET", "/contacts/c-1", "u-none"), "", 403, "not_assigned", "denied"},
		{"admin", "GET", caddy("DELETE", "/opportunities/o-1", "u-admin"), "", 200, "admin", ""},
		{"other location", "GET", caddy("GET", "/contacts/c-1", "u-far"), "", 403, "cross_location", "denied"},
		{"unknown subject", "GET", caddy("GET", "/contacts/c-1", "u-ghost"), "", 403, "unknown_subject", "denied"},
		{"unknown record", "GET", caddy("GET", "/contacts/c-404", "u-owner"), "", 403, "record_not_found", "denied"},
		{"query ignored", "GET", caddy("GET", "/contacts/c-1?fields=name&x=%2F", "u-owner"), "", 200, "owner", ""},
		{"query of an edit without owner fields", "GET", caddy("PUT", "/contacts/c-1?fields=name", "u-fol"), "", 200, "follower", ""},
		// the query's parameters are read as the body's (Rails and Laravel merge them)
		{"follower changes the owner in the query", "GET", nginx("PUT", "/contacts/c-1?assignedTo=u-none", "u-fol"), "", 403, "followers_cannot_change_owner", "denied"},
		{"follower changes the owner in the query, long s", "GET", caddy("PATCH", "/contacts/c-1?a%C5%BF%C5%BFignedTo=u-fol", "u-fol"), "", 403, "followers_cannot_change_owner", "denied"},
		{"owner changes the owner in the query", "GET", caddy("PUT", "/contacts/c-1?owner=u-fol", "u-owner"), "", 200, "owner", ""},
		{"query followers over the maximum", "GET", caddy("POST", "/contacts/c-nine/followers?followers[]=u-none&followers[]=u-fol2", "u-owner"), "", 403, "follower_limit_reached", "denied"},
		{"query gives the owner twice", "GET", caddy("PUT", "/contacts/c-1?assignedTo=u-owner&ASSIGNEDTO=u-fol", "u-fol"), "", 403, "ambiguous_body", "ambiguous_body"},
		{"fragment ignored", "GET", caddy("GET", "/contacts/c-1#top", "u-owner"), "", 200, "owner", ""},
		{"percent-encoded id", "GET", caddy("GET", "/contacts/c%202", "u-owner"), "", 200, "owner", ""},
		{"HEAD is a view", "GET", caddy("HEAD", "/contacts/c-1", "u-fol"), "", 200, "follower", ""},
		{"any method of the auth request", "POST", caddy("GET", "/contacts/c-1", "u-owner"), "", 200, "owner", ""},
		{"HEAD auth request", "HEAD", caddy("GET", "/contacts/c-1", "u-owner"), "", 200, "owner", ""},
		{"both pairs agree", "GET", with(caddy("GET", "/contacts/c-1", "u-fol"), "X-Original-Method", "GET", "X-Original-URI", "/contacts/c-1"), "", 200, "follower", ""},
		// the body is never read here: a PUT that changes the owner looks like an edit
		{"body not read", "PUT", caddy("PUT", "/contacts/c-1", "u-fol"), `{"assignedTo":"u-fol"}`, 200, "follower", ""},

		{"unmapped route", "GET", caddy("GET", "/contacts", "u-owner"), "", 403, "unmapped_route", "denied"},
		{"unmapped method", "GET", caddy("OPTIONS", "/contacts/c-1", "u-owner"), "", 403, "unmapped_route", "denied"},
		{"no identity", "GET", caddy("GET", "/contacts/c-1", ""), "", 401, "unauthenticated", "unauthenticated"},
		{"empty identity", "GET", with(caddy("GET", "/contacts/c-1", ""), "X-User-Id", " "), "", 401, "unauthenticated", "unauthenticated"},
		{"no original headers", "GET", map[string]string{"X-User-Id": "u-owner"}, "", 403, "invalid_request", "invalid_request"},
		{"no original method", "GET", map[string]string{"X-User-Id": "u-owner", "X-Forwarded-Uri": "/contacts/c-1"}, "", 403, "invalid_request", "invalid_request"},
		{"pairs disagree (a client added one)", "GET", with(nginx("DELETE", "/contacts/c-1", "u-fol"), "X-Forwarded-Uri", "/contacts/c-1", "X-Forwarded-Method", "GET"), "", 403, "invalid_request", "invalid_request"},
		{"URIs disagree", "GET", with(caddy("GET", "/contacts/c-1", "u-fol"), "X-Original-URI", "/contacts/c-2"), "", 403, "invalid_request", "invalid_request"},
		{"not a method", "GET", caddy("GE T", "/contacts/c-1", "u-owner"), "", 403, "invalid_request", "invalid_request"},
		{"dot segment", "GET", caddy("GET", "/contacts/../contacts/c-1", "u-owner"), "", 403, "invalid_path", "invalid_path"},
		{"encoded dot segment", "GET", caddy("GET", "/contacts/%2e%2E/opportunities/o-1", "u-owner"), "", 403, "invalid_path", "invalid_path"},
		{"encoded slash", "GET", caddy("GET", "/contacts/c-1%2Ffollowers", "u-owner"), "", 403, "invalid_path", "invalid_path"},
		{"double slash", "GET", caddy("GET", "/contacts//c-1", "u-owner"), "", 403, "invalid_path", "invalid_path"},
		{"trailing slash", "GET", caddy("GET", "/contacts/c-1/", "u-owner"), "", 403, "invalid_path", "invalid_path"},
		{"absolute URI", "GET", caddy("GET", "http://crm.example/contacts/c-1", "u-owner"), "", 403, "invalid_path", "invalid_path"},
		{"bad escape", "GET", caddy("GET", "/contacts/c-%zz", "u-owner"), "", 403, "invalid_path", "invalid_path"},
		{"encoded NUL", "GET", caddy("GET", "/contacts/c-1%00", "u-owner"), "", 403, "invalid_path", "invalid_path"},
		{"method override header", "GET", with(caddy("GET", "/contacts/c-1", "u-fol"), "X-HTTP-Method-Override", "DELETE"), "", 403, "method_override", "method_override"},
		{"method override query", "GET", caddy("POST", "/contacts/c-1/followers?_method=DELETE", "u-owner"), "", 403, "method_override", "method_override"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := g.do(t, tc.method, "/v1/forward-auth", tc.hdr, tc.body)
			checkReply(t, got, tc.code, tc.reason)
			if tc.errc != "" && tc.method != http.MethodHead && got.errCode() != tc.errc {
				t.Errorf("error.code = %q, want %q", got.errCode(), tc.errc)
			}
		})
	}
}

func TestExtAuthzHTTP(t *testing.T) {
	g := newGW(t, func(c *Config) { c.MaxDecisionBytes = 4 << 10 })
	fol := map[string]string{"X-User-Id": "u-fol"}
	owner := map[string]string{"X-User-Id": "u-owner"}
	cases := []struct {
		name   string
		method string
		path   string // after /v1/ext-authz
		hdr    map[string]string
		body   string
		code   int
		reason string
	}{
		{"follower views", "GET", "/contacts/c-1", fol, "", 200, "follower"},
		{"follower edits", "PUT", "/contacts/c-1", fol, `{"firstName":"Ann"}`, 200, "follower"},
		{"follower edit keeping the owner", "PATCH", "/contacts/c-1", fol, `{"assignedTo":"u-owner"}`, 200, "follower"},
		{"follower changes the owner", "PUT", "/contacts/c-1", fol, `{"assignedTo":"u-fol"}`, 403, "followers_cannot_change_owner"},
		{"owner changes the owner", "PUT", "/contacts/c-1", owner, `{"assignedTo":"u-fol"}`, 200, "owner"},
		{"follower unfollows", "DELETE", "/contacts/c-1/followers", fol, `{"followers":["u-fol"]}`, 200, "follower_unfollow"},
		{"a list with one denied target", "POST", "/contacts/c-1/followers", owner, `{"followers":["u-none","u-far"]}`, 403, "target_cross_location"},
		{"a list over the maximum", "POST", "/contacts/c-nine/followers", owner, `{"followers":["u-none","u-fol2"]}`, 403, "follower_limit_reached"},
		{"query ignored", "GET", "/contacts/c-1?x=1", fol, "", 200, "follower"},
		{"GET body ignored", "GET", "/contacts/c-1", fol, `not json`, 200, "follower"},
		{"unmapped", "GET", "/healthz", fol, "", 403, "unmapped_route"},
		{"no identity", "GET", "/contacts/c-1", nil, "", 401, "unauthenticated"},
		{"truncated body", "PUT", "/contacts/c-1", with(fol, "x-envoy-auth-partial-body", "true"), `{"firstName":"A`, 403, "body_truncated"},
		{"complete body flagged", "PUT", "/contacts/c-1", with(fol, "x-envoy-auth-partial-body", "false"), `{"firstName":"A"}`, 200, "follower"},
		{"body over the limit", "PUT", "/contacts/c-1", fol, `{"x":"` + strings.Repeat("a", 5<<10) + `"}`, 413, "payload_too_large"},
		{"body not JSON", "PUT", "/contacts/c-1", fol, `assignedTo=u-fol`, 403, "invalid_body"},
		{"duplicate key", "PUT", "/contacts/c-1", fol, `{"assignedTo":"u-owner","assignedTo":"u-fol"}`, 403, "ambiguous_body"},

		// keys match as Go's encoding/json matches them (Unicode simple folding)
		{"long s changes the owner", "PUT", "/contacts/c-1", fol, `{"aſſignedTo":"u-none"}`, 403, "followers_cannot_change_owner"},
		{"escaped long s changes the owner", "PATCH", "/contacts/c-1", fol, `{"a\u017f\u017fignedTo":"u-fol"}`, 403, "followers_cannot_change_owner"},
		{"upper case changes the owner", "PUT", "/contacts/c-1", fol, `{"ASSIGNEDTO":"u-fol"}`, 403, "followers_cannot_change_owner"},
		{"upper case keeping the owner", "PUT", "/contacts/c-1", fol, `{"firstName":"Ann","OWNER":"u-owner"}`, 200, "follower"},
		{"long s follower list over the maximum", "POST", "/contacts/c-nine/followers", owner, `{"followerſ":["u-none","u-fol2"]}`, 403, "follower_limit_reached"},
		{"long s follower list, a denied target", "POST", "/contacts/c-1/followers", owner, `{"FOLLOWERſ":["u-far"]}`, 403, "target_cross_location"},
		{"two cases of one key", "PUT", "/contacts/c-1", fol, `{"assignedTo":"a","ASSIGNEDTO":"b"}`, 403, "ambiguous_body"},
		{"long s and s", "POST", "/contacts/c-1/followers", owner, `{"followers":[],"followerſ":["u-far"]}`, 403, "ambiguous_body"},
		{"two cases, one value", "PUT", "/contacts/c-1", owner, `{"owner":"u-owner","Owner":"u-owner"}`, 403, "ambiguous_body"},

		// the query is merged into the body (Rails, Laravel)
		{"query changes the owner", "PUT", "/contacts/c-1?assignedTo=u-none", fol, "", 403, "followers_cannot_change_owner"},
		{"query with a body changes the owner", "PUT", "/contacts/c-1?assignedTo=u-fol", fol, `{"firstName":"Ann"}`, 403, "followers_cannot_change_owner"},
		{"query and body give the owner", "PUT", "/contacts/c-1?owner=u-owner", fol, `{"assignedTo":"u-owner","owner":"u-fol"}`, 403, "ambiguous_body"},
		{"query list of followers", "POST", "/contacts/c-1/followers?followers[]=u-none&followers[]=u-far", owner, "", 403, "target_cross_location"},
		{"query of a GET is not read", "GET", "/contacts/c-1?assignedTo=u-9&assignedTo=u-8", fol, "", 200, "follower"},
		{"body not an object", "PUT", "/contacts/c-1", fol, `["u-fol"]`, 403, "invalid_body"},
		{"encoded slash", "GET", "/contacts/c-1%2Ffollowers", fol, "", 403, "invalid_path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := g.do(t, tc.method, gateway.ExtAuthzPrefix+tc.path, tc.hdr, tc.body)
			checkReply(t, got, tc.code, tc.reason)
		})
	}
	t.Run("encoded prefix", func(t *testing.T) {
		got := g.do(t, "GET", "/v1/ext%2Dauthz/contacts/c-1", fol, "")
		checkReply(t, got, 403, "invalid_request")
	})
}

func TestGatewayJWT(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef-gw"
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := identity.New(identity.Config{HS256SecretFile: file, Leeway: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g := newGW(t, func(c *Config) { c.Identity = id })
	tok := func(sub string, exp time.Duration) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(exp).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + s
	}
	cases := []struct {
		name   string
		hdr    map[string]string
		code   int
		reason string
	}{
		{"valid token", map[string]string{"Authorization": tok("u-owner", time.Hour)}, 200, "owner"},
		{"follower's token", map[string]string{"Authorization": tok("u-fol", time.Hour)}, 200, "follower"},
		{"expired token", map[string]string{"Authorization": tok("u-owner", -time.Hour)}, 401, "unauthenticated"},
		{"the header is ignored", map[string]string{"X-User-Id": "u-owner"}, 401, "unauthenticated"},
		{"the token wins over the header", map[string]string{"X-User-Id": "u-owner", "Authorization": tok("u-none", time.Hour)}, 403, "not_assigned"},
		{"wrong secret", map[string]string{"Authorization": "Bearer " + func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u-owner", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret + "!"))
			return s
		}()}, 401, "unauthenticated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := g.do(t, "GET", "/v1/forward-auth", with(tc.hdr, "X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/contacts/c-1"), "")
			checkReply(t, got, tc.code, tc.reason)
			got = g.do(t, "GET", gateway.ExtAuthzPrefix+"/contacts/c-1", tc.hdr, "")
			checkReply(t, got, tc.code, tc.reason)
		})
	}
}

// TestGatewayFailsClosed: errors are denies with a 403, never a 5xx, which
// Envoy's failure_mode_allow would let through.
func TestGatewayFailsClosed(t *testing.T) {
	t.Run("index closed", func(t *testing.T) {
		g := newGW(t, nil)
		g.ix.Close()
		for _, path := range []string{"/v1/forward-auth", gateway.ExtAuthzPrefix + "/contacts/c-1"} {
			got := g.do(t, "GET", path, caddy("GET", "/contacts/c-1", "u-owner"), "")
			checkReply(t, got, 403, "evaluation_error")
		}
	})
	t.Run("policy without routes", func(t *testing.T) {
		dir := t.TempDir()
		for _, name := range []string{"authz.rego", "config.rego"} {
			b, err := policies.FS.ReadFile("crmauthz/" + name)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		eng, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		g := newGW(t, func(c *Config) { c.Engine = eng })
		got := g.do(t, "GET", "/v1/forward-auth", caddy("GET", "/contacts/c-1", "u-owner"), "")
		checkReply(t, got, 403, "evaluation_error")
	})
}

func TestGatewayMetrics(t *testing.T) {
	g := newGW(t, nil)
	g.do(t, "GET", "/v1/forward-auth", caddy("GET", "/contacts/c-1", "u-owner"), "")
	g.do(t, "GET", "/v1/forward-auth", caddy("GET", "/contacts/c-1", "u-owner"), "")
	g.do(t, "GET", "/v1/forward-auth", caddy("GET", "/contacts/c-1", ""), "")
	g.do(t, "PUT", gateway.ExtAuthzPrefix+"/contacts/c-1", map[string]string{"X-User-Id": "u-fol"}, `{"owner":"u-fol"}`)
	for _, tc := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"endpoint": "forward_auth", "action": "view", "allow": "true", "reason": "owner"}, 2},
		{map[string]string{"endpoint": "forward_auth", "action": "other", "allow": "false", "reason": "unauthenticated"}, 1},
		{map[string]string{"endpoint": "ext_authz_http", "action": "change_owner", "allow": "false", "reason": "followers_cannot_change_owner"}, 1},
	} {
		if got := counter(t, g.m, "crmauthz_decisions_total", tc.labels); got != tc.want {
			t.Errorf("crmauthz_decisions_total%v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if got := histogramCount(t, g.m, "crmauthz_decision_duration_seconds", map[string]string{"endpoint": "forward_auth"}); got != 3 {
		t.Errorf("forward_auth durations observed: %d, want 3", got)
	}
}

// counter reads a counter with exactly these labels from the registry.
func counter(tb testing.TB, m *metrics.Metrics, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range mt.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if reflect.DeepEqual(got, labels) {
				return mt.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func histogramCount(tb testing.TB, m *metrics.Metrics, name string, labels map[string]string) uint64 {
	tb.Helper()
	n, _ := histogramOf(tb, m, name, labels)
	return n
}

// histogramOf returns the sample count and sum of the histogram name with
// exactly labels (0, 0 when there is none).
func histogramOf(tb testing.TB, m *metrics.Metrics, name string, labels map[string]string) (uint64, float64) {
	tb.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range mt.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if reflect.DeepEqual(got, labels) {
				return mt.GetHistogram().GetSampleCount(), mt.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0
}

// TestGatewayDecisionLog: a gateway decision is one decision log line for
// the path crmauthz/http_decision, with the request (never its body) as
// input and the mapped decision as result, under the answer's decision id.
func TestGatewayDecisionLog(t *testing.T) {
	var out bytes.Buffer
	var dl *decisionlog.Logger
	ls := newLoggedServer(t, func(*metrics.Metrics) *decisionlog.Logger {
		var err error
		dl, err = decisionlog.New(decisionlog.Config{Output: &out, InstanceID: "i-1", Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return dl
	})
	req, _ := http.NewRequest(http.MethodPut, ls.url+gateway.ExtAuthzPrefix+"/contacts/c-1", strings.NewReader(`{"assignedTo":"u-2","secret":"s3"}`))
	req.Header.Set("X-User-Id", "u-2")
	resp, err := loopbackClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Authz-Decision-Id")
	if resp.StatusCode != 403 || id == "" {
		t.Fatalf("%d %q", resp.StatusCode, id)
	}
	if err := dl.Close(); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &m); err != nil {
		t.Fatalf("one JSON line expected: %q", out.String())
	}
	if m["decision_id"] != id || m["path"] != "crmauthz/http_decision" {
		t.Errorf("decision_id %v path %v, want %s crmauthz/http_decision", m["decision_id"], m["path"], id)
	}
	sameJSON(t, "input", m["input"], `{"endpoint":"ext_authz_http","subject":"u-2","method":"PUT","path":"/contacts/c-1","body_bytes":34}`)
	sameJSON(t, "result", m["result"], `{"allow":false,"reason":"followers_cannot_change_owner","action":"change_owner","resource":{"type":"contact","id":"c-1"},"targets":["u-2"]}`)
	if strings.Contains(out.String(), "s3") {
		t.Errorf("the body is in the decision log: %s", out.String())
	}
}

// BenchmarkGateway measures one gateway decision in process (handler,
// identity, route mapping and decision in one evaluation, metrics),
// beside /v1/decision for the same check.
// The engine's decision cache is off, so that every request is evaluated.
func BenchmarkGateway(b *testing.B) {
	eng, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, FS: policies.FS, DecisionCacheSlots: -1})
	if err != nil {
		b.Fatal(err)
	}
	g := newGW(b, func(c *Config) { c.Engine = eng })
	for _, bc := range []struct {
		name, method, target, body string
		hdr                        map[string]string
	}{
		{"decision", "POST", "/v1/decision", `{"subject":"u-fol","action":"edit","resource":{"type":"contact","id":"c-1"}}`, nil},
		{"forward_auth", "GET", "/v1/forward-auth", "", caddy("PUT", "/contacts/c-1", "u-fol")},
		{"ext_authz_http/body", "PUT", gateway.ExtAuthzPrefix + "/contacts/c-1", `{"firstName":"Ann","assignedTo":"u-owner"}`, map[string]string{"X-User-Id": "u-fol"}},
		{"ext_authz_http/followers", "POST", gateway.ExtAuthzPrefix + "/contacts/c-1/followers", `{"followers":["u-none","u-admin","u-fol2"]}`, map[string]string{"X-User-Id": "u-owner"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(bc.method, bc.target, strings.NewReader(bc.body))
				for k, v := range bc.hdr {
					req.Header.Set(k, v)
				}
				rec := httptest.NewRecorder()
				g.h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
