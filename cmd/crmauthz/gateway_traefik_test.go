package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
)

// The files that examples/gateways/traefik-*.yml name besides the addresses
// of every gateway (docGatewayAddr and the rest): the dynamic configuration
// and the accounts of Traefik's login.
const (
	docTraefikDynamic = "/etc/traefik/crmauthz-dynamic.yml"
	docTraefikUsers   = "/etc/traefik/crmauthz-users"
)

// traefikBinary returns the Traefik that `make traefik` builds into
// .cache/traefik/<TRAEFIK_VERSION>/traefik (the version the Makefile pins),
// from its module through the Go module proxy: no package has it. In CI
// (CI=true) a missing binary fails the test, as a missing nginx or caddy
// does (.ci/run builds it first); elsewhere the test is skipped with a
// word on how to build it, since the build takes minutes.
func traefikBinary(t testing.TB) string {
	t.Helper()
	root := filepath.Join("..", "..")
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^TRAEFIK_VERSION\s*\?=\s*(v[0-9][0-9.]*)\s*$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("the Makefile pins no TRAEFIK_VERSION")
	}
	bin, err := filepath.Abs(filepath.Join(root, ".cache", "traefik", string(m[1]), "traefik"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin
	}
	msg := "Traefik " + string(m[1]) + " is not built: `make traefik` builds it into " + bin + " (once; it takes minutes)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; .ci/run does")
	}
	t.Skip(msg)
	return ""
}

// startTraefik runs traefik with examples/gateways/traefik-static.yml and
// traefik-dynamic.yml, pointed at the test's addresses and accounts, and
// returns its URL once its router asks crmauthz (the file provider loads
// the dynamic configuration after the entry point opens).
func startTraefik(t testing.TB, bin, upstreamAddr, authzAddr string) string {
	t.Helper()
	dir := t.TempDir()
	listen := freePort(t)
	dynamic := filepath.Join(dir, "crmauthz-dynamic.yml")
	files := map[string]string{
		"traefik-static.yml": gatewayConfig(t, "traefik-static.yml", map[string]string{docGatewayAddr: listen, docTraefikDynamic: dynamic}),
		"crmauthz-dynamic.yml": gatewayConfig(t, "traefik-dynamic.yml", map[string]string{docUpstreamAddr: upstreamAddr, docAuthzAddr: authzAddr,
			docTraefikUsers: writeHtpasswd(t)}),
	}
	for name, conf := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "--configFile="+filepath.Join(dir, "traefik-static.yml"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir)
	base := "http://" + listen
	runGateway(t, cmd, base, func() string { return "" })
	deadline := time.Now().Add(time.Minute)
	for {
		// a bearer token goes to crmauthz, which answers 401 with its reason
		req, err := http.NewRequest("GET", base+"/contacts/c-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer not-a-jwt")
		resp, err := gatewayClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Authz-Reason") != "" {
			return base
		}
		if time.Now().After(deadline) {
			t.Fatalf("traefik did not route to crmauthz within a minute: %d %v", resp.StatusCode, resp.Header)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// traefikCases are the gateway cases as Traefik answers them, where it
// differs from nginx and Caddy: it cleans the path before anything sees it
// (sanitizePath, on by default), so crmauthz and the API get the same clean
// path; the example has it refuse encoded slashes itself; and, like nginx
// and Caddy, it does not send the body to crmauthz, whose /v1/forward-auth
// never reads one, so an owner change in a body is an edit here
// (docs/gateways.md, "Traefik": use the /owner route or the query).
func traefikCases(t testing.TB, cases []gatewayCase) []gatewayCase {
	differs := map[string]func(*gatewayCase){
		"percent-encoded id": func(tc *gatewayCase) { tc.apiURI = "/contacts/c-1" },
		"dot segments":       func(tc *gatewayCase) { tc.code, tc.reason, tc.apiURI = 200, "follower", "/contacts/c-1" },
		"encoded slash":      func(tc *gatewayCase) { tc.code, tc.reason = 400, "" },
	}
	out := slices.Clone(cases)
	for i := range out {
		if f := differs[out[i].name]; f != nil {
			f(&out[i])
			delete(differs, out[i].name)
		}
	}
	if len(differs) > 0 {
		t.Fatalf("no such gateway cases: %v", differs)
	}
	return append(out, gatewayCase{name: "follower's owner change in the body is not seen", method: "PUT", path: "/contacts/c-1", user: "u-carol",
		body: `{"assignedTo":"u-carol"}`, code: 200, reason: "follower"})
}
