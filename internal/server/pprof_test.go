package server

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPprofHandler: the profiles are served under /debug/pprof/ to the
// clients the replication API admits (the token, else loopback only), and an
// unknown profile is a 404 with the error body.
func TestPprofHandler(t *testing.T) {
	for _, tc := range []struct {
		name   string
		token  bool
		path   string
		remote string
		auth   string
		code   int
		want   string // in the body
	}{
		{"index, loopback, no token configured", false, "/debug/pprof/", "127.0.0.1:4000", "", 200, "goroutine"},
		{"named profile", false, "/debug/pprof/goroutine?debug=1", "[::1]:4000", "", 200, "goroutine profile:"},
		{"cmdline", false, "/debug/pprof/cmdline", "127.0.0.1:4000", "", 200, ""},
		{"not loopback, no token configured", false, "/debug/pprof/", "10.1.2.3:4000", "", 401, "unauthorized"},
		{"token", true, "/debug/pprof/heap?debug=1", "10.1.2.3:4000", "Bearer tok", 200, "heap profile:"},
		{"token configured, none sent", true, "/debug/pprof/", "127.0.0.1:4000", "", 401, "unauthorized"},
		{"wrong token", true, "/debug/pprof/", "10.1.2.3:4000", "Bearer nope", 401, "unauthorized"},
		{"unknown profile", false, "/debug/pprof/nosuch", "127.0.0.1:4000", "", 404, `"code":"not_found"`},
		{"not under the prefix", false, "/metrics", "127.0.0.1:4000", "", 404, `"code":"not_found"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, nil)
			if !tc.token {
				ts.cfg.Token = nil
			}
			req := httptest.NewRequest(http.MethodGet, tc.path, nil)
			req.RemoteAddr = tc.remote
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			pprofOnly(ts.Server).ServeHTTP(rec, req)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
				t.Fatalf("GET %s: %d %.200q; want %d and %q", tc.path, rec.Code, rec.Body, tc.code, tc.want)
			}
		})
	}
}

// TestPprofCPUProfile: /debug/pprof/profile answers a CPU profile (gzipped
// protobuf) for the seconds asked.
func TestPprofCPUProfile(t *testing.T) {
	ts := newTestServer(t, nil)
	req := httptest.NewRequest(http.MethodGet, "/debug/pprof/profile?seconds=1", nil)
	req.RemoteAddr = "127.0.0.1:4000"
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	pprofOnly(ts.Server).ServeHTTP(rec, req)
	if rec.Code != 200 || !bytes.HasPrefix(rec.Body.Bytes(), []byte{0x1f, 0x8b}) {
		t.Fatalf("%d %.100q; want 200 and a gzipped profile", rec.Code, rec.Body)
	}
}

// pprofOnly is an admin engine with the profiles and nothing else, so that
// a path outside the prefix shows what the profiles' routes leave alone.
func pprofOnly(s *Server) http.Handler {
	r := s.newEngine("admin")
	s.mountPprof(r)
	return r
}
