package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EPprof: /debug/pprof/ is off by default (the admin API's 404) and
// served on --admin-addr only with --pprof or CRMAUTHZ_PPROF=true, to the
// clients the replication API admits (docs/operations.md, "Profiling").
func TestE2EPprof(t *testing.T) {
	bearer := map[string]string{"Authorization": "Bearer " + testToken}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		on   bool
	}{
		{"default", nil, nil, false},
		{"--pprof=false", []string{"--pprof=false"}, nil, false},
		{"--pprof", []string{"--pprof"}, nil, true},
		{"CRMAUTHZ_PPROF=true", nil, []string{"CRMAUTHZ_PPROF=true"}, true},
		{"the flag wins over its twin", []string{"--pprof=false"}, []string{"CRMAUTHZ_PPROF=true"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := startWith(t, dir, append([]string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
				"--data-dir", dir, "--replication-token-file", tokenFile}, tc.args...), tc.env)
			defer p.stop()
			code, body := callRaw(t, http.MethodGet, p.admin+"/debug/pprof/goroutine?debug=1", nil, bearer)
			if on := code == http.StatusOK && strings.Contains(string(body), "goroutine profile:"); on != tc.on {
				t.Fatalf("GET /debug/pprof/goroutine: %d %.200q; want served: %v", code, body, tc.on)
			}
			if !tc.on {
				if code != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
					t.Fatalf("GET /debug/pprof/goroutine without --pprof: %d %.200q; want the admin API's 404", code, body)
				}
				return
			}
			if code, _ := callRaw(t, http.MethodGet, p.admin+"/debug/pprof/", nil, nil); code != http.StatusUnauthorized {
				t.Errorf("GET /debug/pprof/ without the token: %d, want 401", code)
			}
			if code, body := callRaw(t, http.MethodGet, p.admin+"/debug/pprof/profile?seconds=1", nil, bearer); code != http.StatusOK ||
				!bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
				t.Errorf("GET /debug/pprof/profile?seconds=1: %d %.100q; want a gzipped CPU profile", code, body)
			}
			if code, _ := callRaw(t, http.MethodGet, p.base+"/debug/pprof/", nil, bearer); code != http.StatusNotFound {
				t.Errorf("GET /debug/pprof/ on --addr: %d, want 404 (only the admin listener serves it)", code)
			}
			if code, _ := callRaw(t, http.MethodGet, p.admin+"/health/live", nil, nil); code != http.StatusOK {
				t.Errorf("GET /health/live with --pprof: %d, want 200", code)
			}
		})
	}
}
