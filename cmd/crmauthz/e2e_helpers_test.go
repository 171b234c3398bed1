package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binPath is the crmauthz binary built once by TestMain.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "crmauthz-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binPath = filepath.Join(dir, "crmauthz")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building crmauthz:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const testToken = "e2e-secret-token"

// proc is one running `crmauthz serve`.
type proc struct {
	t        testing.TB
	cmd      *exec.Cmd
	dataDir  string
	base     string // http://addr of the decision listener
	admin    string // http://addr of the admin listener
	grpc     string // host:port of the ext_authz gRPC listener; "" when off
	stderr   *syncBuffer
	done     chan struct{}
	exitErr  error
	stopOnce sync.Once
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer runs the binary on free loopback ports (port 0) with a
// replication token, and waits for its "crmauthz serving" log line, which
// names the bound addresses.
func startServer(t testing.TB, dataDir string, extraArgs ...string) *proc {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--data-dir", dataDir, "--replication-token-file", tokenFile}, extraArgs...)
	return startWith(t, dataDir, args, nil)
}

func startWith(t testing.TB, dataDir string, args, env []string) *proc {
	t.Helper()
	// a hang, not a speed limit (--policies-require-tests runs the Rego tests first)
	p, raw := spawn(t, dataDir, args, env, "crmauthz serving", 2*time.Minute)
	var line struct {
		Addr      string `json:"addr"`
		AdminAddr string `json:"admin_addr"`
		GRPCAddr  string `json:"grpc_addr"`
	}
	if err := json.Unmarshal(raw, &line); err != nil {
		t.Fatal(err)
	}
	p.base, p.admin, p.grpc = "http://"+line.Addr, "http://"+line.AdminAddr, line.GRPCAddr
	return p
}

// spawn starts the binary with args (env added to this process's) and returns once its JSON log
// on stderr has the line whose msg is startMsg, which it returns; the test fails if the process
// exits first or the line does not come within wait (a hang guard). The process is killed at the
// test's end; its stderr is kept in p.stderr.
func spawn(t testing.TB, dataDir string, args, env []string, startMsg string, wait time.Duration) (*proc, []byte) {
	t.Helper()
	p := &proc{t: t, dataDir: dataDir, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binPath, args...)
	p.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stderr = io.MultiWriter(pw, p.stderr)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })

	lines := make(chan []byte, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line struct {
				Msg string `json:"msg"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == startMsg {
				lines <- bytes.Clone(sc.Bytes())
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case line := <-lines:
		return p, line
	case <-p.done:
		t.Fatalf("%v exited before serving: %v\n%s", args, p.exitErr, p.stderr.String())
	case <-time.After(wait):
		t.Fatalf("%v did not start in %s\n%s", args, wait, p.stderr.String())
	}
	return nil, nil
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.exitErr != nil {
				p.t.Errorf("crmauthz exited with %v after SIGTERM\n%s", p.exitErr, p.stderr.String())
			}
		case <-time.After(time.Minute): // a hang, not a speed limit
			p.t.Errorf("crmauthz did not stop within a minute of SIGTERM")
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
}

var client = &http.Client{Timeout: 30 * time.Second}

// call sends body (a string, []byte or a value marshalled to JSON) and
// returns the status and the decoded JSON reply.
func call(t testing.TB, method, url string, body any, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	code, raw := callRaw(t, method, url, body, hdr)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: reply is not JSON (%d): %q", method, url, code, raw)
		}
	}
	return code, out
}

func callRaw(t testing.TB, method, url string, body any, hdr map[string]string) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the reply: %v", method, url, err)
	}
	return resp.StatusCode, raw
}

var authz = map[string]string{"Authorization": "Bearer " + testToken}

// errCode returns error.code of an error reply, "" if there is none.
func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// errField returns error[name] of an error reply.
func errField(body map[string]any, name string) any {
	e, _ := body["error"].(map[string]any)
	return e[name]
}

// fixture is internal/policy/testdata/decisions.json: facts and golden cases.
type fixture struct {
	Users   []json.RawMessage `json:"users"`
	Records []json.RawMessage `json:"records"`
	Cases   []struct {
		Name  string `json:"name"`
		Input struct {
			Subject  string            `json:"subject"`
			Action   string            `json:"action"`
			Resource map[string]string `json:"resource"`
			Target   *string           `json:"target,omitempty"`
		} `json:"input"`
		Allow  bool   `json:"allow"`
		Reason string `json:"reason"`
	} `json:"cases"`
}

func loadFixture(t testing.TB) fixture {
	t.Helper()
	raw, err := os.ReadFile("../../internal/policy/testdata/decisions.json")
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) == 0 {
		t.Fatal("the fixture has no cases")
	}
	return f
}

// snapshot renders facts as snapshot NDJSON at seq.
func (f fixture) snapshot(seq int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\"seq\": %d}\n", seq)
	for _, u := range f.Users {
		fmt.Fprintf(&b, "{\"user\": %s}\n", u)
	}
	for _, r := range f.Records {
		fmt.Fprintf(&b, "{\"record\": %s}\n", r)
	}
	return b.String()
}

func putSnapshot(t testing.TB, p *proc, ndjson string) {
	t.Helper()
	code, body := call(t, http.MethodPut, p.admin+"/v1/replication/snapshot", ndjson, authz)
	if code != http.StatusOK {
		t.Fatalf("snapshot: %d %v", code, body)
	}
}

func status(t testing.TB, p *proc) map[string]any {
	t.Helper()
	code, body := call(t, http.MethodGet, p.admin+"/v1/replication/status", nil, authz)
	if code != http.StatusOK {
		t.Fatalf("status: %d %v", code, body)
	}
	return body
}

func decide(t testing.TB, p *proc, subject, action, typ, id string, target *string) (bool, string) {
	t.Helper()
	req := map[string]any{"subject": subject, "action": action, "resource": map[string]string{"type": typ, "id": id}}
	if target != nil {
		req["target"] = *target
	}
	code, body := call(t, http.MethodPost, p.base+"/v1/decision", req, nil)
	if code != http.StatusOK {
		t.Fatalf("decision %v: %d %v", req, code, body)
	}
	allow, _ := body["allow"].(bool)
	reason, _ := body["reason"].(string)
	return allow, reason
}

func strp(s string) *string { return &s }

// eventually polls cond for up to a minute: a timeout, not a speed
// requirement (a good change applies within a second; a loaded machine
// running the policy's tests for --policies-require-tests, or a connector
// catching up, takes longer). The shared poller of these tests.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
