package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// The gateway configurations of docs/gateways.md, run as they are: only the
// three addresses they name are replaced by the test's.
const (
	docGatewayAddr  = "127.0.0.1:8000" // where the gateway listens
	docUpstreamAddr = "127.0.0.1:8080" // the CRM API
	docAuthzAddr    = "127.0.0.1:8181" // crmauthz's decision listener
)

// requireBinary finds a gateway binary. It fails (never skips) when it is
// missing: .ci/run installs nginx and caddy.
func requireBinary(t testing.TB, name string, fallback string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	t.Fatalf("%s is not installed: the gateway tests run the real %s (apt-get install nginx-light caddy; .ci/run does)", name, name)
	return ""
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// upstream is the tiny CRM API behind the gateways: it echoes what it got
// and remembers the X-Test-Id of every request that reached it.
type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen map[string]bool
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{seen: map[string]bool{}}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.seen[r.Header.Get("X-Test-Id")] = true
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"upstream": "crm", "method": r.Method, "uri": r.RequestURI, "body": string(body),
			"reason": r.Header.Get("X-Authz-Reason"), "decision_id": r.Header.Get("X-Authz-Decision-Id"),
			"user_id": strings.Join(r.Header.Values("X-User-Id"), ","), "authorization": strings.Join(r.Header.Values("Authorization"), ","),
		})
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) reached(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[id]
}

// gatewayConfig reads a configuration of examples/gateways and points it
// at the test's addresses and files: each key of repl (an address or a file
// the configuration names) is replaced by its value.
func gatewayConfig(t testing.TB, name string, repl map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "gateways", name))
	if err != nil {
		t.Fatal(err)
	}
	var pairs []string
	for from, to := range repl {
		if !bytes.Contains(b, []byte(from)) {
			t.Fatalf("%s does not name %s", name, from)
		}
		pairs = append(pairs, from, to)
	}
	return strings.NewReplacer(pairs...).Replace(string(b))
}

// The files of the gateways' own logins in the example configurations,
// replaced by the test's.
const (
	docNginxPasswords = "/etc/nginx/crmauthz.htpasswd"
	docCaddyPasswords = "/etc/caddy/crmauthz-users"
)

// gatewayUsers are the users who may log in to the gateways (header mode).
var gatewayUsers = []string{"u-admin", "u-bob", "u-carol", "u-dave", "u-gina"}

func gatewayPassword(user string) string { return "pw-" + user + "-7Gq2" }

// writeHtpasswd writes an htpasswd file ({SHA} scheme: nginx's
// auth_basic_user_file, Traefik's usersFile) where nginx's workers can read it (they run as nobody when the test runs as
// root, and t.TempDir is private to the test's user).
func writeHtpasswd(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "crmauthz-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, u := range gatewayUsers {
		sum := sha1.Sum([]byte(gatewayPassword(u)))
		fmt.Fprintf(&b, "%s:{SHA}%s\n", u, base64.StdEncoding.EncodeToString(sum[:]))
	}
	p := filepath.Join(dir, "crmauthz.htpasswd")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeCaddyPasswords writes the accounts of Caddy's basicauth (bcrypt,
// base64 as Caddy 2.6 wants them; the lowest cost, to keep the test cheap).
func writeCaddyPasswords(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, u := range gatewayUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(gatewayPassword(u)), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s\n", u, base64.StdEncoding.EncodeToString(h))
	}
	p := filepath.Join(dir, "crmauthz-users")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// gatewayProc is a running gateway.
type gatewayProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	logs func() string // its logs, for failure messages
}

func runGateway(t testing.TB, cmd *exec.Cmd, base string, logs func() string) {
	t.Helper()
	g := &gatewayProc{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = g.out, g.out
	g.logs = func() string { return g.out.String() + logs() }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-g.done
		}
	})
	// Ready when it answers anything (crmauthz answers 401 without identity).
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-g.done:
			t.Fatalf("%s exited: %v\n%s", filepath.Base(cmd.Path), cmd.ProcessState, g.logs())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer on %s within a minute: %v\n%s", filepath.Base(cmd.Path), base, err, g.logs())
		}
	}
}

// startNginx runs nginx with examples/gateways/nginx.conf included in a
// minimal main configuration in a temporary prefix.
func startNginx(t testing.TB, bin, upstreamAddr, authzAddr string) string {
	t.Helper()
	dir := t.TempDir()
	listen := freePort(t)
	site := gatewayConfig(t, "nginx.conf", map[string]string{docGatewayAddr: listen, docUpstreamAddr: upstreamAddr,
		docAuthzAddr: authzAddr, docNginxPasswords: writeHtpasswd(t)})
	if err := os.WriteFile(filepath.Join(dir, "crmauthz.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 128; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/crmauthz.conf;
}
`, dir)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	base := "http://" + listen
	runGateway(t, cmd, base, func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return string(b)
	})
	return base
}

// startCaddy runs caddy with examples/gateways/Caddyfile behind global
// options that keep it to the test's directory (no admin endpoint, no
// automatic HTTPS; its autosave in the test directory).
func startCaddy(t testing.TB, bin, upstreamAddr, authzAddr string) string {
	t.Helper()
	dir := t.TempDir()
	listen := freePort(t)
	site := gatewayConfig(t, "Caddyfile", map[string]string{docGatewayAddr: listen, docUpstreamAddr: upstreamAddr,
		docAuthzAddr: authzAddr, docCaddyPasswords: writeCaddyPasswords(t, dir)})
	conf := filepath.Join(dir, "Caddyfile")
	global := "{\n\tadmin off\n\tauto_https off\n}\n\n"
	if err := os.WriteFile(conf, []byte(global+site), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
	base := "http://" + listen
	runGateway(t, cmd, base, func() string { return "" })
	return base
}

// identities: who the client is, in the two modes.
type identityMode struct {
	name string
	as   func(user string) map[string]string // the client's identity headers
}

// headerIdentity: the client logs in to the gateway (basic auth), which
// sets X-User-Id for crmauthz in header mode.
func headerIdentity() identityMode {
	return identityMode{name: "header", as: func(user string) map[string]string {
		return map[string]string{"Authorization": basicAuth(user, gatewayPassword(user))}
	}}
}

func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func jwtIdentity(t testing.TB, key *ecdsa.PrivateKey) identityMode {
	return identityMode{name: "jwt", as: func(user string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + es256(t, key, user, time.Hour)}
	}}
}

func es256(t testing.TB, key *ecdsa.PrivateKey, sub string, ttl time.Duration) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": sub, "iss": "https://idp.test", "exp": time.Now().Add(ttl).Unix()})
	tok.Header["kid"] = "test-1"
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeJWKS(t testing.TB, key *ecdsa.PrivateKey) string {
	t.Helper()
	b, err := key.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": "test-1", "use": "sig", "alg": "ES256",
		"x": base64.RawURLEncoding.EncodeToString(b[1:33]), "y": base64.RawURLEncoding.EncodeToString(b[33:]),
	}}})
	p := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(p, jwks, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// gatewayCase is one request a client sends through a gateway.
type gatewayCase struct {
	name   string
	method string
	path   string
	user   string            // "" sends no identity
	hdr    map[string]string // extra headers, after the identity's
	body   string
	code   int    // what the client gets
	reason string // X-Authz-Reason: seen by the API on an allow, by the client on a deny
	only   string // run in this identity mode only
	// login: the gateway itself answers 401 (its basic-auth login), and
	// crmauthz is not asked.
	login bool
	// apiURI is the request URI the API gets on an allow, when the
	// gateway normalizes the path (default: path, as sent).
	apiURI string
}

func gatewayCases(key *ecdsa.PrivateKey, t testing.TB) []gatewayCase {
	return []gatewayCase{
		{name: "owner views", method: "GET", path: "/contacts/c-1", user: "u-bob", code: 200, reason: "owner"},
		{name: "owner deletes", method: "DELETE", path: "/contacts/c-1", user: "u-bob", code: 200, reason: "owner"},
		{name: "follower views (a client's X-Authz-Reason is replaced)", method: "GET", path: "/contacts/c-1", user: "u-carol",
			hdr: map[string]string{"X-Authz-Reason": "admin"}, code: 200, reason: "follower"},
		{name: "follower edits", method: "PUT", path: "/contacts/c-1", user: "u-carol", body: `{"firstName":"Carol"}`, code: 200, reason: "follower"},
		{name: "follower's query is ignored", method: "GET", path: "/contacts/c-1?fields=name,email", user: "u-carol", code: 200, reason: "follower"},
		{name: "follower's owner change in the query (Rails, Laravel)", method: "PUT", path: "/contacts/c-1?assignedTo=u-carol", user: "u-carol", code: 403, reason: "followers_cannot_change_owner"},
		{name: "percent-encoded id", method: "GET", path: "/contacts/c%2D1", user: "u-carol", code: 200, reason: "follower"},
		{name: "encoded slash", method: "GET", path: "/contacts/c-1%2Ffollowers", user: "u-bob", code: 403, reason: "invalid_path"},
		{name: "follower may not delete", method: "DELETE", path: "/contacts/c-1", user: "u-carol", code: 403, reason: "follower_not_permitted"},
		{name: "follower may not change the owner", method: "PUT", path: "/contacts/c-1/owner", user: "u-carol",
			body: `{"assignedTo":"u-carol"}`, code: 403, reason: "followers_cannot_change_owner"},
		{name: "owner changes the owner", method: "PUT", path: "/contacts/c-1/owner", user: "u-bob", body: `{"assignedTo":"u-carol"}`, code: 200, reason: "owner"},
		{name: "follower of the opportunity only", method: "GET", path: "/contacts/c-1", user: "u-dave", code: 403, reason: "not_assigned"},
		{name: "restricted non-follower", method: "GET", path: "/contacts/c-1", user: "u-gina", code: 403, reason: "not_assigned"},
		{name: "admin", method: "DELETE", path: "/contacts/c-3", user: "u-admin", code: 200, reason: "admin"},
		{name: "unmapped route", method: "GET", path: "/reports/weekly", user: "u-admin", code: 403, reason: "unmapped_route"},
		{name: "missing identity", method: "GET", path: "/contacts/c-1", code: 401, login: true},
		{name: "spoofed original request", method: "DELETE", path: "/contacts/c-1", user: "u-carol", hdr: map[string]string{
			"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/contacts/c-1", "X-Original-Method": "GET", "X-Original-URI": "/contacts/c-1"},
			code: 403, reason: "follower_not_permitted"},
		{name: "method override", method: "GET", path: "/contacts/c-1", user: "u-carol", hdr: map[string]string{"X-HTTP-Method-Override": "DELETE"},
			code: 403, reason: "method_override"},
		{name: "dot segments", method: "GET", path: "/contacts/c-2/../c-1", user: "u-carol", code: 403, reason: "invalid_path"},
		{name: "expired token", method: "GET", path: "/contacts/c-1", hdr: map[string]string{"Authorization": "Bearer " + es256(t, key, "u-bob", -time.Hour)},
			code: 401, reason: "unauthenticated"},
		// A client names its own identity (issue 15): the gateway never
		// passes a client's X-User-Id on.
		{name: "spoofed identity, anonymous", method: "DELETE", path: "/contacts/c-3", hdr: map[string]string{"X-User-Id": "u-admin"},
			code: 401, login: true},
		{name: "spoofed identity, wrong password", method: "DELETE", path: "/contacts/c-3",
			hdr: map[string]string{"X-User-Id": "u-admin", "Authorization": basicAuth("u-admin", "guess")}, code: 401, login: true},
		{name: "spoofed identity, user name only", method: "DELETE", path: "/contacts/c-3",
			hdr: map[string]string{"X-User-Id": "u-admin", "Authorization": basicAuth("u-admin", "")}, code: 401, login: true},
		{name: "spoofed identity, bad bearer token", method: "DELETE", path: "/contacts/c-3",
			hdr: map[string]string{"X-User-Id": "u-admin", "Authorization": "Bearer not-a-jwt"}, code: 401, reason: "unauthenticated"},
		{name: "spoofed identity, lower-case bearer", method: "DELETE", path: "/contacts/c-3",
			hdr: map[string]string{"X-User-Id": "u-admin", "Authorization": "bearer not-a-jwt"}, code: 401, reason: "unauthenticated"},
		{name: "spoofed identity beside a follower's", method: "DELETE", path: "/contacts/c-1", user: "u-carol",
			hdr: map[string]string{"X-User-Id": "u-admin"}, code: 403, reason: "follower_not_permitted"},
		{name: "spoofed identity beside an allowed request (never reaches the API)", method: "GET", path: "/contacts/c-1", user: "u-carol",
			hdr: map[string]string{"X-User-Id": "u-admin"}, code: 200, reason: "follower"},
		{name: "spoofed identity beside an outsider's", method: "DELETE", path: "/contacts/c-3", user: "u-gina",
			hdr: map[string]string{"x-user-id": "u-admin"}, code: 403, reason: "cross_location"},
	}
}

// startGatewayAuthz starts crmauthz on the demo data, in header mode, or in
// JWT mode with key's public half (ES256, issuer https://idp.test).
func startGatewayAuthz(t testing.TB, key *ecdsa.PrivateKey) *proc {
	t.Helper()
	args := []string{"--load-snapshot", filepath.Join("..", "..", "examples", "demo.ndjson")}
	if key != nil {
		args = append(args, "--jwt-jwks-file", writeJWKS(t, key), "--jwt-issuer", "https://idp.test")
	}
	return startServer(t, t.TempDir(), args...)
}

// gatewayClient is the client in front of the gateways: it never follows
// a redirect, so each answer is the gateway's own.
func gatewayClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestE2EGateways puts real nginx, Caddy and Traefik, configured with
// examples/gateways (the configurations of docs/gateways.md), between a
// client and a tiny API, asking the real crmauthz binary (demo data) in both
// identity modes: X-User-Id set by the gateway from its own login (basic
// auth), and ES256 JWTs checked against a JWKS file. Clients that name
// their own X-User-Id are never believed (issue 15, "spoofed identity").
func TestE2EGateways(t *testing.T) {
	nginxBin := requireBinary(t, "nginx", "/usr/sbin/nginx")
	caddyBin := requireBinary(t, "caddy", "/usr/bin/caddy")
	up := startUpstream(t)
	upAddr := strings.TrimPrefix(up.srv.URL, "http://")

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	modes := []struct {
		id    identityMode
		authz *proc
	}{
		{headerIdentity(), startGatewayAuthz(t, nil)},
		{jwtIdentity(t, key), startGatewayAuthz(t, key)},
	}
	cases := gatewayCases(key, t)
	httpc := gatewayClient()

	for _, gw := range []struct {
		name  string
		start func(t *testing.T, upstreamAddr, authzAddr string) string
		cases []gatewayCase
	}{
		{"nginx", func(t *testing.T, u, a string) string { return startNginx(t, nginxBin, u, a) }, cases},
		{"caddy", func(t *testing.T, u, a string) string { return startCaddy(t, caddyBin, u, a) }, cases},
		// traefikBinary skips (outside CI) or fails this gateway's tests
		// only, when Traefik is not built
		{"traefik", func(t *testing.T, u, a string) string { return startTraefik(t, traefikBinary(t), u, a) }, traefikCases(t, cases)},
	} {
		for _, mode := range modes {
			t.Run(gw.name+"/"+mode.id.name, func(t *testing.T) {
				t.Parallel()
				base := gw.start(t, upAddr, strings.TrimPrefix(mode.authz.base, "http://"))
				run := gatewayRun{name: gw.name + "-" + mode.id.name, base: base, up: up, mode: mode.id, login: true}
				for i, tc := range gw.cases {
					if tc.only != "" && tc.only != mode.id.name {
						continue
					}
					t.Run(tc.name, func(t *testing.T) { run.check(t, httpc, i, tc) })
				}
			})
		}
	}
}

// gatewayRun is one gateway, in one identity mode, in front of up.
type gatewayRun struct {
	name  string // the gateway and the mode, for X-Test-Id
	base  string // the gateway's URL
	up    *upstream
	mode  identityMode
	login bool // the gateway has its own login (basic auth), which answers the cases marked login
}

// check sends the i-th case through the gateway and asserts what the
// client gets and what the API saw. For a gateway without a login of its
// own, a case marked login is crmauthz's 401 instead.
func (g gatewayRun) check(t *testing.T, httpc *http.Client, i int, tc gatewayCase) {
	t.Helper()
	if tc.login && !g.login {
		tc.login, tc.reason = false, "unauthenticated"
	}
	testID := fmt.Sprintf("%s-%d", g.name, i)
	var body io.Reader
	if tc.body != "" {
		body = strings.NewReader(tc.body)
	}
	req, err := http.NewRequest(tc.method, g.base+tc.path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test-Id", testID)
	if tc.user != "" {
		for k, v := range g.mode.as(tc.user) {
			req.Header.Set(k, v)
		}
	}
	for k, v := range tc.hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != tc.code {
		t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, resp.StatusCode, raw, tc.code)
	}
	if tc.code != http.StatusOK {
		if g.up.reached(testID) {
			t.Fatalf("a denied request reached the API")
		}
		if tc.login {
			// the gateway's own login challenge, not crmauthz's
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic") {
				t.Fatalf("WWW-Authenticate %q, want the gateway's Basic challenge (%s)", got, raw)
			}
			return
		}
		if got := resp.Header.Get("X-Authz-Reason"); got != tc.reason {
			t.Fatalf("X-Authz-Reason %q, want %q (%s)", got, tc.reason, raw)
		}
		if tc.code == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: %v", resp.Header)
		}
		return
	}
	var echo map[string]string
	if err := json.Unmarshal(raw, &echo); err != nil || echo["upstream"] != "crm" {
		t.Fatalf("not the API's answer: %s", raw)
	}
	if tc.apiURI == "" {
		tc.apiURI = tc.path
	}
	if echo["method"] != tc.method || echo["uri"] != tc.apiURI || echo["body"] != tc.body {
		t.Errorf("the API got %s %s %q, want %s %s %q", echo["method"], echo["uri"], echo["body"], tc.method, tc.apiURI, tc.body)
	}
	if echo["reason"] != tc.reason || echo["decision_id"] == "" {
		t.Errorf("the API got X-Authz-Reason %q and X-Authz-Decision-Id %q, want %q and an id", echo["reason"], echo["decision_id"], tc.reason)
	}
	// The API sees the identity the gateway established: the logged-in
	// user (never the password), or the token.
	wantUser, bearer := tc.user, false
	if g.mode.name == "jwt" {
		wantUser, bearer = "", true
	}
	if echo["user_id"] != wantUser || strings.HasPrefix(echo["authorization"], "Bearer ") != bearer ||
		(!bearer && echo["authorization"] != "") {
		t.Errorf("the API got X-User-Id %q and Authorization %q", echo["user_id"], echo["authorization"])
	}
}
