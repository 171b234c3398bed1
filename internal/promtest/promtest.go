// Package promtest runs a real Prometheus (Debian's prometheus package: /usr/bin/prometheus and
// /usr/bin/promtool) for the tests of the dashboard and the alert rules
// (docs/operations.md, "Dashboard and alerts"). A test fails, never skips, when it is missing.
// Only tests import it.
package promtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binary returns the path of the prometheus or promtool binary; the test fails without it.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := "/usr/bin/" + name; fileExists(p) {
		return p
	}
	tb.Fatalf("%s is not installed: apt-get install prometheus (as .ci/run does)", name)
	return ""
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// Target is one scrape target: host:port and the labels it gets (as a ServiceMonitor gives
// namespace and pod).
type Target struct {
	Addr   string
	Labels map[string]string
}

// Server is one running Prometheus.
type Server struct {
	URL string // http://127.0.0.1:port
	log *buffer
}

type buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Start runs Prometheus in a temporary directory on a free loopback port, scraping /metrics
// of targets every second, and returns once it is ready. It is stopped at the test's end.
func Start(tb testing.TB, targets []Target) *Server {
	tb.Helper()
	bin := Binary(tb, "prometheus")
	dir := tb.TempDir()
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: crmauthz\n    static_configs:\n")
	for _, t := range targets {
		fmt.Fprintf(&cfg, "      - targets: [%q]\n        labels: {", t.Addr)
		keys := make([]string, 0, len(t.Labels))
		for k := range t.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i > 0 {
				cfg.WriteString(", ")
			}
			fmt.Fprintf(&cfg, "%s: %q", k, t.Labels[k])
		}
		cfg.WriteString("}\n")
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{URL: "http://" + addr, log: &buffer{}}
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if tb.Failed() {
			tb.Logf("prometheus log:\n%s", s.log.String())
		}
	})
	deadline := time.Now().Add(time.Minute) // a hang guard, not a speed limit
	for {
		resp, err := http.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		select {
		case <-done:
			tb.Fatalf("prometheus exited before it was ready:\n%s", s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("prometheus not ready within a minute:\n%s", s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Sample is one series of an instant query's result.
type Sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// Query evaluates expr now through /api/v1/query; an error of Prometheus fails the test.
func (s *Server) Query(tb testing.TB, expr string) []Sample {
	tb.Helper()
	var out []Sample
	s.get(tb, "/api/v1/query?query="+url.QueryEscape(expr), &out)
	return out
}

// Names returns the metric names Prometheus holds (label __name__).
func (s *Server) Names(tb testing.TB) []string {
	tb.Helper()
	var out []string
	s.get(tb, "/api/v1/label/__name__/values", &out)
	return out
}

// Targets returns the health ("up", "down", "unknown") of each active target by its scrape URL.
func (s *Server) Targets(tb testing.TB) map[string]string {
	tb.Helper()
	var out struct {
		ActiveTargets []struct {
			ScrapeURL string `json:"scrapeUrl"`
			Health    string `json:"health"`
		} `json:"activeTargets"`
	}
	s.get(tb, "/api/v1/targets", &out)
	m := map[string]string{}
	for _, t := range out.ActiveTargets {
		m[t.ScrapeURL] = t.Health
	}
	return m
}

func (s *Server) get(tb testing.TB, path string, data any) {
	tb.Helper()
	resp, err := http.Get(s.URL + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		tb.Fatalf("GET %s: %d %s", path, resp.StatusCode, raw)
	}
	if env.Status != "success" {
		tb.Fatalf("GET %s: %s", path, env.Error)
	}
	if d, ok := data.(*[]Sample); ok {
		var r struct {
			ResultType string   `json:"resultType"`
			Result     []Sample `json:"result"`
		}
		if err := json.Unmarshal(env.Data, &r); err != nil {
			tb.Fatal(err)
		}
		if r.ResultType != "vector" {
			tb.Fatalf("GET %s: result type %s, want vector", path, r.ResultType)
		}
		*d = r.Result
		return
	}
	if err := json.Unmarshal(env.Data, data); err != nil {
		tb.Fatal(err)
	}
}
