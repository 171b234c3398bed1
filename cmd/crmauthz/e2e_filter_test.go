package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EFilter asks the real binary for filters of the demo data with a
// renamed schema (--filter-mapping), and refuses a bad mapping at start.
func TestE2EFilter(t *testing.T) {
	mapFile := filepath.Join(t.TempDir(), "mapping.yaml")
	if err := os.WriteFile(mapFile, []byte("contacts: {table: app.people, owner: assigned_to}\nfollowers: {table: app.watchers, user_id: watcher}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServer(t, t.TempDir(), "--load-snapshot", "../../examples/demo.ndjson", "--filter-mapping", mapFile)
	code, body := call(t, http.MethodGet, p.base+"/v1/subjects/u-carol/filter?type=contact&location_id=loc-1", nil, nil)
	sql, _ := body["sql"].(map[string]any)
	if code != 200 || body["kind"] != "conditional" || sql == nil || body["applied_seq"] != float64(100) || body["policy_revision"] == "" {
		t.Fatalf("%d %v", code, body)
	}
	where, _ := sql["where"].(string)
	for _, want := range []string{`"app"."people"."assigned_to" = $1`, `FROM "app"."watchers" crmauthz_f`, `crmauthz_f."watcher" = $4`} {
		if !strings.Contains(where, want) {
			t.Errorf("where %s has no %s", where, want)
		}
	}
	if code, body := call(t, http.MethodGet, p.base+"/v1/subjects/u-admin/filter?type=contact&location_id=loc-1&dialect=ucast", nil, nil); code != 200 || body["kind"] != "all" {
		t.Errorf("admin: %d %v", code, body)
	}
	if code, body := call(t, http.MethodGet, p.base+"/v1/subjects/u-carol/filter?type=contact&location_id=loc-1&dialect=db2", nil, nil); code != 400 || errCode(body) != "invalid_request" {
		t.Errorf("bad dialect: %d %v", code, body)
	}
	t.Run("bad mapping", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(bad, []byte("contacts: {table: \"people; DROP TABLE x\"}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{bad, filepath.Join(t.TempDir(), "missing.yaml")} {
			code, _, stderr := runCLI(t, "", "serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
				"--data-dir", t.TempDir(), "--filter-mapping", f)
			if code == 0 || !strings.Contains(stderr, "--filter-mapping") {
				t.Fatalf("exit %d: %s", code, stderr)
			}
		}
	})
}
