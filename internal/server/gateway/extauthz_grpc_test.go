package gateway

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
)

// plainCheckResponse is the CheckResponse as it was built before
// checkResponse allocated it at once: each message on its own, the error
// body marshalled.
func plainCheckResponse(tb testing.TB, a *gatewayAnswer, message string) *authv3.CheckResponse {
	hdrs := []*corev3.HeaderValueOption{setHeader("x-authz-reason", a.reason), setHeader("x-authz-decision-id", a.id)}
	if a.allow {
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: hdrs}},
		}
	}
	code := codes.PermissionDenied
	hdrs = append(hdrs, setHeader("content-type", "application/json"), setHeader("cache-control", "no-store"))
	if a.status == http.StatusUnauthorized {
		code = codes.Unauthenticated
		hdrs = append(hdrs, setHeader("www-authenticate", `Bearer realm="crmauthz"`))
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: a.reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(a.status)},
			Headers: hdrs,
			Body:    string(marshalErrorBody(tb, a.code, a.id, message, a.reason)),
		}},
	}
}

func TestCheckResponse(t *testing.T) {
	g, err := New(fullConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		a    gatewayAnswer
		msg  string
	}{
		{"allow", gatewayAnswer{allow: true, status: 200, reason: "owner", id: "d-1"}, ""},
		{"policy deny", gatewayAnswer{status: 403, code: errcode.Denied, reason: "not_owner", id: "d-2", policyDeny: true, detail: "a <b>"}, "denied: not_owner: a <b>"},
		{"401", gatewayAnswer{status: 401, code: reasonUnauthenticated, reason: reasonUnauthenticated, id: "d-3", message: `no "X-User-Id"`}, `no "X-User-Id"`},
		{"413", gatewayAnswer{status: 413, code: reasonBodyTooLarge, reason: reasonBodyTooLarge, id: "d-4", message: "big"}, "big"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := plainCheckResponse(t, &tc.a, tc.msg)
			for range 2 { // the shared headers stay as they were
				if got := g.checkResponse(&tc.a); !proto.Equal(got, want) {
					t.Fatalf("checkResponse\n got %v\nwant %v", got, want)
				}
			}
		})
	}
}

// TestEnvoyHeaders: envoyHeaders reads Envoy's header map as
// identity.MapHeaders does.
func TestEnvoyHeaders(t *testing.T) {
	m := map[string]string{"x-user-id": "u-1", "x-envoy-auth-partial-body": "true", strings.Repeat("x", 70): "long", "é": "e"}
	for _, name := range []string{"X-User-Id", "x-user-id", "X-USER-ID", "X-Envoy-Auth-Partial-Body", "Authorization", "",
		strings.Repeat("X", 70), strings.Repeat("x", 64), "É", "é"} {
		t.Run(name, func(t *testing.T) {
			got, want := envoyHeaders(m).Values(name), identity.MapHeaders(m).Values(name)
			if !slices.Equal(got, want) {
				t.Errorf("Values(%q) = %q, MapHeaders gives %q", name, got, want)
			}
		})
	}
}
