package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// TestMain lets the test binary stand in for the tool when run starts the
// floor server: `<test binary> floor --addr …` serves it.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		if err := mainErr(os.Args[1:], os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString("crmauthz-bench: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestFloor starts the floor server as run does (this binary as `floor`)
// and checks its answers over loopback.
func TestFloor(t *testing.T) {
	p, s, err := startFloor(t.Context(), "floor", "", "", "", true)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(5 * time.Second)
	client := &http.Client{Timeout: 10 * time.Second}
	cases := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"decision", http.MethodPost, "/v1/decision", `{"subject":"u-1","action":"read","resource":{"type":"contact","id":"c-1"}}`, 200, floorReply},
		{"empty body", http.MethodPost, "/v1/decision", "", 200, floorReply},
		{"body too large", http.MethodPost, "/v1/decision", strings.Repeat("x", floorMaxBody+1), 413, `{"error":{"code":"body_too_large"`},
		{"health", http.MethodGet, "/health", "", 200, `{"status":"ok"}`},
		// the gateways' requests (--endpoint): any method, any path
		{"forward auth", http.MethodGet, "/v1/forward-auth", "", 200, floorReply},
		{"ext_authz with a body", http.MethodPut, "/v1/ext-authz/contacts/c-1", `{"assignedTo":"u-2"}`, 200, floorReply},
		{"ext_authz DELETE", http.MethodDelete, "/v1/ext-authz/contacts/c-1/followers", `{"followers":["u-2"]}`, 200, floorReply},
		{"ext_authz body too large", http.MethodPost, "/v1/ext-authz/contacts/c-1/followers", strings.Repeat("x", floorMaxBody+1), 413, `{"error":{"code":"body_too_large"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), c.method, s.admin+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.status || !bytes.HasPrefix(body, []byte(c.want)) || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s %q, want %d %q…", resp.StatusCode, resp.Header.Get("Content-Type"), body, c.status, c.want)
			}
			if c.want == floorReply && string(body) != floorReply {
				t.Fatalf("body %q, want %q", body, floorReply)
			}
		})
	}
	// The gRPC floor (--endpoint ext-authz-grpc) allows every Check.
	g, err := dialGRPC(s.grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer g.conn.Close()
	s.grpc = g
	w := dataset.New(dataset.Config{Records: 10})
	if v, err := s.askGRPC(t.Context(), 10*time.Second, w, w.RequestAt(0)); err != nil || v != (verdict{true, "owner"}) {
		t.Fatalf("the gRPC floor answered %+v, %v", v, err)
	}
	// The answer reads as a decision to the load path and the agreement check.
	v, ok := s.decode([]byte(floorReply))
	if !ok || v != (verdict{true, "owner"}) || !s.answered(http.StatusOK, []byte(floorReply)) {
		t.Fatalf("floorReply decodes as %+v %v", v, ok)
	}
}

func TestFloorAddr(t *testing.T) {
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:8282", true},
		{"[::1]:8282", true},
		{"localhost:8282", true},
		{"0.0.0.0:8282", false},
		{":8282", false},
		{"10.0.0.1:8282", false},
		{"127.0.0.1", false},
		{"127.0.0.1:", false},
	} {
		t.Run(c.addr, func(t *testing.T) {
			if err := checkLoopback(c.addr); (err == nil) != c.ok {
				t.Fatalf("checkLoopback(%q) = %v, want ok %v", c.addr, err, c.ok)
			}
		})
	}
}
