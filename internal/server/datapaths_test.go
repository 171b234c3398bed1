package server

import (
	"net/http"
	"strings"
	"testing"
)

// TestDataAPIPathsAllowlist: only an explicit "*" opens every Data API path;
// an empty list (--data-api-paths= or CRMAUTHZ_DATA_API_PATHS="") opens
// none (issue 15, item 4: it used to open all of them).
func TestDataAPIPathsAllowlist(t *testing.T) {
	const input = `{"input":{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}}`
	probes := []string{"crmauthz/decision", "crmauthz/allow", "crmauthz/routes", "crmauthz"}
	for _, tc := range []struct {
		name    string
		paths   []string
		allowed []string // the probes served; the others are 403 path_not_allowed
	}{
		{"default", nil, []string{"crmauthz/decision", "crmauthz/allow"}},
		{"empty list", []string{}, nil},
		{"one empty path", []string{""}, nil},
		{"blank paths", []string{" ", "/", "//"}, nil},
		{"one path", []string{"/crmauthz/allow/"}, []string{"crmauthz/allow"}},
		{"explicit star", []string{"*"}, probes},
		{"star among others", []string{"crmauthz/allow", " * "}, probes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := newConfig(t, nil)
			cfg.DataPaths = tc.paths
			h := mustNew(t, cfg).DecisionHandler()
			for _, p := range probes {
				want := false
				for _, a := range tc.allowed {
					want = want || a == p
				}
				rec := serve(h, http.MethodPost, "/v1/data/"+p, input, map[string]string{"Content-Type": "application/json"})
				refused := rec.Code == http.StatusForbidden && strings.Contains(rec.Body.String(), `"path_not_allowed"`)
				if refused == want {
					t.Errorf("POST /v1/data/%s: %d %s; want it served: %v", p, rec.Code, rec.Body, want)
				}
			}
		})
	}
}
