package server

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/crmauthz/crmauthz/internal/server/gateway"
)

// grpcGW serves g's ext_authz on a loopback port and returns a client of it
// (Envoy's own proto types, over real gRPC).
func grpcGW(tb testing.TB, g *gwServer) (authv3.AuthorizationClient, *grpc.ClientConn, *gateway.GRPC) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := g.NewGRPC()
	done := make(chan error, 1)
	go func() { done <- gs.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		gs.Stop(ctx)
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return authv3.NewAuthorizationClient(conn), conn, gs
}

// checkReq builds Envoy's CheckRequest for one HTTP request.
func checkReq(method, path string, headers map[string]string, body string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path, ":authority": "crm.example"}
	for k, v := range headers {
		h[strings.ToLower(k)] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Id: "r-1", Method: method, Path: path, Host: "crm.example",
			Scheme: "http", Protocol: "HTTP/1.1", Headers: h, Body: body, Size: int64(len(body))},
	}}}
}

type grpcWant struct {
	code   codes.Code
	status int // HTTP status of the denied_response
	reason string
}

func checkGRPC(t testing.TB, resp *authv3.CheckResponse, err error, want grpcWant) {
	t.Helper()
	if err != nil {
		t.Fatalf("Check returned an RPC error (Envoy's failure mode decides then): %v", err)
	}
	if got := codes.Code(resp.GetStatus().GetCode()); got != want.code {
		t.Fatalf("status %v (%s), want %v", got, resp.GetStatus().GetMessage(), want.code)
	}
	var hdrs []*corev3.HeaderValueOption
	if want.code == codes.OK {
		ok := resp.GetOkResponse()
		if ok == nil || resp.GetDeniedResponse() != nil {
			t.Fatalf("allow without ok_response: %v", resp)
		}
		hdrs = ok.GetHeaders()
	} else {
		d := resp.GetDeniedResponse()
		if d == nil || resp.GetOkResponse() != nil {
			t.Fatalf("deny without denied_response: %v", resp)
		}
		if int(d.GetStatus().GetCode()) != want.status {
			t.Fatalf("denied_response status %d, want %d", d.GetStatus().GetCode(), want.status)
		}
		var body map[string]map[string]any
		if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body["error"]["reason"] != want.reason || body["error"]["code"] == "" {
			t.Fatalf("denied body %q (%v)", d.GetBody(), err)
		}
		hdrs = d.GetHeaders()
	}
	got := map[string]string{}
	for _, h := range hdrs {
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s is not set with OVERWRITE_IF_EXISTS_OR_ADD", h.GetHeader().GetKey())
		}
	}
	if got["x-authz-reason"] != want.reason || got["x-authz-decision-id"] == "" {
		t.Fatalf("headers %v, want x-authz-reason %q and a decision id", got, want.reason)
	}
	if want.status == 401 && !strings.HasPrefix(got["www-authenticate"], "Bearer") {
		t.Fatalf("401 without www-authenticate: %v", got)
	}
}

func TestGRPCCheck(t *testing.T) {
	g := newGW(t, func(c *Config) { c.MaxDecisionBytes = 4 << 10 })
	client, _, _ := grpcGW(t, g)
	fol := map[string]string{"x-user-id": "u-fol"}
	owner := map[string]string{"x-user-id": "u-owner"}
	allow := func(reason string) grpcWant { return grpcWant{codes.OK, 0, reason} }
	deny := func(reason string) grpcWant { return grpcWant{codes.PermissionDenied, 403, reason} }
	cases := []struct {
		name string
		req  *authv3.CheckRequest
		want grpcWant
	}{
		{"owner views", checkReq("GET", "/contacts/c-1", owner, ""), allow("owner")},
		{"follower views an opportunity", checkReq("GET", "/opportunities/o-1?x=1", fol, ""), allow("follower")},
		{"follower deletes", checkReq("DELETE", "/contacts/c-1", fol, ""), deny("follower_not_permitted")},
		{"non-follower", checkReq("GET", "/contacts/c-1", map[string]string{"x-user-id": "u-none"}, ""), deny("not_assigned")},
		{"admin", checkReq("DELETE", "/contacts/c-1", map[string]string{"x-user-id": "u-admin"}, ""), allow("admin")},
		{"no identity", checkReq("GET", "/contacts/c-1", nil, ""), grpcWant{codes.Unauthenticated, 401, "unauthenticated"}},
		{"unmapped", checkReq("GET", "/reports", owner, ""), deny("unmapped_route")},

		// bodies
		{"follower edits", checkReq("PUT", "/contacts/c-1", fol, `{"firstName":"Ann","assignedTo":"u-owner"}`), allow("follower")},
		{"follower sets assignedTo to another user", checkReq("PUT", "/contacts/c-1", fol, `{"assignedTo":"u-fol"}`), deny("followers_cannot_change_owner")},
		{"follower sets owner to another user", checkReq("PATCH", "/contacts/c-1", fol, `{"owner":"u-none"}`), deny("followers_cannot_change_owner")},
		{"follower unassigns", checkReq("PATCH", "/contacts/c-1", fol, `{"assignedTo":null}`), deny("followers_cannot_change_owner")},
		{"owner sets assignedTo to another user", checkReq("PUT", "/contacts/c-1", owner, `{"assignedTo":"u-fol"}`), allow("owner")},
		{"owner hands over to another location", checkReq("PUT", "/contacts/c-1", owner, `{"assignedTo":"u-far"}`), deny("target_cross_location")},
		{"followers list, all allowed", checkReq("POST", "/contacts/c-1/followers", owner, `{"followers":["u-none","u-admin"]}`), allow("owner")},
		{"followers list, one denied", checkReq("POST", "/contacts/c-1/followers", owner, `{"followers":["u-none","u-far"]}`), deny("target_cross_location")},
		{"followers list, one unknown", checkReq("POST", "/contacts/c-1/followers", owner, `{"followers":["u-ghost","u-none"]}`), deny("unknown_target")},
		{"follower unfollows", checkReq("DELETE", "/contacts/c-1/followers", fol, `{"followers":["u-fol"]}`), allow("follower_unfollow")},
		{"follower removes another", checkReq("DELETE", "/contacts/c-1/followers", fol, `{"followers":["u-fol","u-fol2"]}`), deny("follower_not_permitted")},
		{"partial body", checkReq("PUT", "/contacts/c-1", with(fol, "x-envoy-auth-partial-body", "true"), `{"firstName":"A`), deny("body_truncated")},
		{"partial body, complete JSON", checkReq("PUT", "/contacts/c-1", with(owner, "x-envoy-auth-partial-body", "true"), `{}`), deny("body_truncated")},
		{"body over the limit", checkReq("PUT", "/contacts/c-1", fol, `{"x":"`+strings.Repeat("a", 5<<10)+`"}`), grpcWant{codes.PermissionDenied, 413, "payload_too_large"}},
		{"body not JSON", checkReq("PUT", "/contacts/c-1", fol, `assignedTo=u-fol`), deny("invalid_body")},
		{"duplicate key", checkReq("PUT", "/contacts/c-1", fol, `{"assignedTo":"u-owner","assignedTo":"u-fol"}`), deny("ambiguous_body")},
		{"key in another case", checkReq("PUT", "/contacts/c-1", fol, `{"AssignedTo":"u-fol"}`), deny("followers_cannot_change_owner")},
		{"key with a long s", checkReq("PUT", "/contacts/c-1", fol, `{"aſſignedTo":"u-none"}`), deny("followers_cannot_change_owner")},
		{"followers with a long s over the maximum", checkReq("POST", "/contacts/c-nine/followers", owner, `{"followerſ":["u-none","u-fol2"]}`), deny("follower_limit_reached")},
		{"one key in two cases", checkReq("PUT", "/contacts/c-1", fol, `{"assignedTo":"a","ASSIGNEDTO":"b"}`), deny("ambiguous_body")},
		{"owner in the query", checkReq("PUT", "/contacts/c-1?assignedTo=u-none", fol, ""), deny("followers_cannot_change_owner")},
		{"owner in the query and the body", checkReq("PUT", "/contacts/c-1?assignedTo=u-owner", fol, `{"assignedTo":"u-owner"}`), deny("ambiguous_body")},

		// malformed requests
		{"no http attributes", &authv3.CheckRequest{}, deny("invalid_request")},
		{"no path", checkReq("GET", "", owner, ""), deny("invalid_request")},
		{"dot segments", checkReq("GET", "/contacts/../contacts/c-1", owner, ""), deny("invalid_path")},
		{"method override", checkReq("GET", "/contacts/c-1", with(fol, "x-http-method-override", "DELETE"), ""), deny("method_override")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := client.Check(ctx, tc.req)
			checkGRPC(t, resp, err, tc.want)
		})
	}

	t.Run("raw body (pack_as_bytes)", func(t *testing.T) {
		req := checkReq("PUT", "/contacts/c-1", fol, "")
		req.Attributes.Request.Http.RawBody = []byte(`{"assignedTo":"u-fol"}`)
		resp, err := client.Check(context.Background(), req)
		checkGRPC(t, resp, err, deny("followers_cannot_change_owner"))
	})
	t.Run("raw headers (encode_raw_headers)", func(t *testing.T) {
		req := checkReq("GET", "/contacts/c-1", nil, "")
		req.Attributes.Request.Http.Headers = nil
		req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":path", RawValue: []byte("/contacts/c-1")},
			{Key: "x-user-id", RawValue: []byte("u-owner")},
		}}
		resp, err := client.Check(context.Background(), req)
		checkGRPC(t, resp, err, allow("owner"))

		// a subject header given twice is not an identity
		req.Attributes.Request.Http.HeaderMap.Headers = append(req.Attributes.Request.Http.HeaderMap.Headers,
			&corev3.HeaderValue{Key: "X-User-Id", RawValue: []byte("u-admin")})
		resp, err = client.Check(context.Background(), req)
		checkGRPC(t, resp, err, grpcWant{codes.Unauthenticated, 401, "unauthenticated"})
	})
	t.Run("metrics", func(t *testing.T) {
		if got := counter(t, g.m, "crmauthz_decisions_total", map[string]string{"endpoint": "ext_authz_grpc", "action": "change_owner", "allow": "false", "reason": "followers_cannot_change_owner"}); got < 4 {
			t.Errorf("ext_authz_grpc change_owner denials counted: %v, want >= 4", got)
		}
	})
}

func TestGRPCHealthAndStop(t *testing.T) {
	g := newGW(t, nil)
	client, conn, gs := grpcGW(t, g)
	hc := healthpb.NewHealthClient(conn)
	resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", resp, err)
	}
	// a call in flight finishes; then the server stops
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, checkReq("GET", "/contacts/c-1", map[string]string{"x-user-id": "u-owner"}, "")); err != nil {
		t.Fatal(err)
	}
	gs.Stop(ctx)
	if _, err := client.Check(ctx, checkReq("GET", "/contacts/c-1", nil, "")); err == nil {
		t.Fatal("Check answered after Stop")
	}
}
