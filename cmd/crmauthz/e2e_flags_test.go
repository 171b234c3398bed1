package main

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runRefused runs the binary with a command line it must refuse, and returns
// its exit code and stderr. One that serves instead is stopped after a
// minute and fails the test (rather than hanging it).
func runRefused(t testing.TB, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(time.Minute)
	for {
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode(), stderr.String()
			}
			t.Fatalf("crmauthz %v: %v (it should have refused to start)\n%s", args, err, stderr.String())
		case <-time.After(20 * time.Millisecond):
			if !strings.Contains(stderr.String(), `"crmauthz serving"`) {
				continue
			}
		case <-deadline:
		}
		cmd.Process.Kill()
		<-done
		t.Fatalf("crmauthz %v started instead of refusing\n%s", args, stderr.String())
	}
}

// TestE2EServeRefusesBadFlags: the binary refuses out-of-range values of
// flags and environment twins with exit code 2 before it opens anything,
// naming each flag (issue 15, item 10).
func TestE2EServeRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		env    []string
		config string // a --config file's text
		want   []string
	}{
		{"slowloris guard off", []string{"--read-header-timeout", "-1s", "--read-timeout", "0"}, nil, "",
			[]string{"--read-header-timeout=-1s (or CRMAUTHZ_READ_HEADER_TIMEOUT): want a duration from 1ms to 5m0s", "--read-timeout=0s"}},
		{"no in-flight limit", []string{"--max-in-flight", "-1"}, nil, "", []string{"--max-in-flight=-1", "want 0 (no limit) or a number from 1 to 1000000"}},
		{"silently ignored values", []string{"--max-decision-bytes", "0", "--consistency-wait", "-1s", "--subject-header", ""}, nil, "",
			[]string{"--max-decision-bytes=0", "--consistency-wait=-1s", `--subject-header="" (or CRMAUTHZ_SUBJECT_HEADER): want a header name`}},
		{"environment twins", nil, []string{"CRMAUTHZ_MAX_IN_FLIGHT=-1", "CRMAUTHZ_READ_TIMEOUT=0s"}, "",
			[]string{"--max-in-flight=-1 (or CRMAUTHZ_MAX_IN_FLIGHT)", "--read-timeout=0s (or CRMAUTHZ_READ_TIMEOUT)"}},
		{"a flag that does not parse", []string{"--read-timeout", "soon"}, nil, "", []string{`invalid argument "soon" for "--read-timeout"`}},
		{"an environment twin that does not parse", nil, []string{"CRMAUTHZ_MAX_IN_FLIGHT=many"}, "", []string{`CRMAUTHZ_MAX_IN_FLIGHT="many"`}},
		{"--pprof's twin that does not parse", nil, []string{"CRMAUTHZ_PPROF=maybe"}, "", []string{`CRMAUTHZ_PPROF="maybe"`}},
		{"a config file's key", nil, nil, "max-in-flight: -1\n", []string{`crmauthz.yaml: key "max-in-flight" = -1: want 0 (no limit)`}},
		{"a config file's unknown key", nil, nil, "max-inflight: 1\n", []string{`crmauthz.yaml: key "max-inflight": not a setting of this command`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data-dir", dir}, tc.args...)
			if tc.config != "" {
				args = append(args, "--config", writeConfig(t, tc.config))
			}
			code, stderr := runRefused(t, tc.env, args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d: %s", code, exitUsage, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "index.db")); err == nil {
				t.Errorf("the index was opened before the flags were checked")
			}
		})
	}
}

// TestE2EEmptyDataAPIPathsOpensNothing: --data-api-paths= (or the twin set
// to "") allows no Data API path; only "*" opens all (issue 15, item 4).
func TestE2EEmptyDataAPIPathsOpensNothing(t *testing.T) {
	demo := filepath.Join("..", "..", "examples", "demo.ndjson")
	input := map[string]any{"input": map[string]any{"subject": "u-bob", "action": "view", "resource": map[string]any{"type": "contact", "id": "c-1"}}}
	for _, tc := range []struct {
		name   string
		args   []string
		env    []string
		served bool
	}{
		{"flag empty", []string{"--data-api-paths="}, nil, false},
		{"twin empty", nil, []string{"CRMAUTHZ_DATA_API_PATHS="}, false},
		{"star", []string{"--data-api-paths=*"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data-dir", dir, "--load-snapshot", demo}, tc.args...)
			p := startWith(t, dir, args, tc.env)
			for _, path := range []string{"crmauthz/decision", "crmauthz/subject"} {
				code, out := call(t, http.MethodPost, p.base+"/v1/data/"+path, input, nil)
				refused := code == http.StatusForbidden && strings.Contains(out["error"].(map[string]any)["code"].(string), "path_not_allowed")
				if refused == tc.served {
					t.Errorf("POST /v1/data/%s: %d %v, want served: %v", path, code, out, tc.served)
				}
			}
			p.stop()
		})
	}
}

// TestE2EBlankReplicationToken: CRMAUTHZ_REPLICATION_TOKEN set but blank
// is refused like a blank token file, not taken for "no token" (issue 15,
// item 11); so is a token given both ways.
func TestE2EBlankReplicationToken(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("a-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	blankFile := filepath.Join(t.TempDir(), "blank")
	if err := os.WriteFile(blankFile, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"empty", nil, []string{"CRMAUTHZ_REPLICATION_TOKEN="}, "CRMAUTHZ_REPLICATION_TOKEN is set but blank"},
		{"white space", nil, []string{"CRMAUTHZ_REPLICATION_TOKEN= \t\n"}, "CRMAUTHZ_REPLICATION_TOKEN is set but blank"},
		{"blank file", []string{"--replication-token-file", blankFile}, nil, "is empty"},
		{"both ways", []string{"--replication-token-file", tokenFile}, []string{"CRMAUTHZ_REPLICATION_TOKEN=a-token"}, "both --replication-token-file and CRMAUTHZ_REPLICATION_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data-dir", dir}, tc.args...)
			code, stderr := runRefused(t, tc.env, args...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 1 and %q", code, stderr, tc.want)
			}
		})
	}
}
