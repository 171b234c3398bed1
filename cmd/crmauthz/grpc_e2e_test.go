package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// TestE2EGRPCExtAuthz runs the binary with --grpc-addr and a subject header
// set through its environment twin, and asks Envoy's Authorization/Check
// over real gRPC; then SIGTERM stops it cleanly.
func TestE2EGRPCExtAuthz(t *testing.T) {
	p := startWith(t, t.TempDir(), []string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--load-snapshot", "../../examples/demo.ndjson"},
		[]string{"CRMAUTHZ_SUBJECT_HEADER=X-Auth-Request-User"})
	if p.grpc == "" || !strings.HasPrefix(p.grpc, "127.0.0.1:") {
		t.Fatalf("no gRPC address in the serving line: %q", p.grpc)
	}
	conn, err := grpc.NewClient(p.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func(method, path, user, body string) *authv3.CheckResponse {
		t.Helper()
		h := map[string]string{":method": method, ":path": path}
		if user != "" {
			h["x-auth-request-user"] = user
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: h, Body: body}}}})
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return resp
	}
	for _, tc := range []struct {
		name                   string
		method, path, user, bd string
		code                   codes.Code
		status                 int
		reason                 string
	}{
		{"owner", "GET", "/contacts/c-1", "u-bob", "", codes.OK, 0, "owner"},
		{"follower edits", "PUT", "/contacts/c-1", "u-carol", `{"firstName":"Carol"}`, codes.OK, 0, "follower"},
		{"follower changes the owner", "PUT", "/contacts/c-1", "u-carol", `{"assignedTo":"u-carol"}`, codes.PermissionDenied, 403, "followers_cannot_change_owner"},
		{"owner changes the owner", "PUT", "/contacts/c-1", "u-bob", `{"assignedTo":"u-carol"}`, codes.OK, 0, "owner"},
		{"the 11th follower", "POST", "/contacts/c-full/followers", "u-admin", `{"followers":["u-gina"]}`, codes.PermissionDenied, 403, "follower_limit_reached"},
		{"follower changes the owner with a long s (U+017F)", "PUT", "/contacts/c-1", "u-carol", `{"aſſignedTo":"u-carol"}`, codes.PermissionDenied, 403, "followers_cannot_change_owner"},
		{"the 11th follower with a long s", "POST", "/contacts/c-full/followers", "u-admin", `{"followerſ":["u-gina"]}`, codes.PermissionDenied, 403, "follower_limit_reached"},
		{"one key in two cases", "PUT", "/contacts/c-1", "u-carol", `{"assignedTo":"u-bob","ASSIGNEDTO":"u-carol"}`, codes.PermissionDenied, 403, "ambiguous_body"},
		{"default header is not read", "GET", "/contacts/c-1", "", "", codes.Unauthenticated, 401, "unauthenticated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := check(tc.method, tc.path, tc.user, tc.bd)
			if codes.Code(resp.GetStatus().GetCode()) != tc.code {
				t.Fatalf("status %v, want %v: %v", codes.Code(resp.GetStatus().GetCode()), tc.code, resp)
			}
			var reason string
			if tc.code == codes.OK {
				for _, h := range resp.GetOkResponse().GetHeaders() {
					if h.GetHeader().GetKey() == "x-authz-reason" {
						reason = h.GetHeader().GetValue()
					}
				}
			} else {
				if int(resp.GetDeniedResponse().GetStatus().GetCode()) != tc.status {
					t.Fatalf("denied status %v, want %d", resp.GetDeniedResponse().GetStatus(), tc.status)
				}
				for _, h := range resp.GetDeniedResponse().GetHeaders() {
					if h.GetHeader().GetKey() == "x-authz-reason" {
						reason = h.GetHeader().GetValue()
					}
				}
			}
			if reason != tc.reason {
				t.Fatalf("reason %q, want %q", reason, tc.reason)
			}
		})
	}
	code, body := callRaw(t, http.MethodGet, p.admin+"/metrics", nil, nil)
	if code != 200 || !strings.Contains(string(body), `crmauthz_decisions_total{action="change_owner",allow="false",endpoint="ext_authz_grpc",reason="followers_cannot_change_owner"} 2`) {
		t.Errorf("metrics do not count the gRPC decision:\n%s", grepLines(string(body), "ext_authz_grpc"))
	}
	p.stop()
	if !strings.Contains(p.stderr.String(), `"identity":"header"`) {
		t.Errorf("the serving line does not name the identity mode:\n%s", p.stderr.String())
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
