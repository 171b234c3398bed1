package gateway

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/policy"
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
		// long error bodies, with characters encoding/json escapes
		{"long", gatewayAnswer{status: 403, code: reasonInvalidPath, reason: reasonInvalidPath, id: "d-5", message: strings.Repeat("é<\u2028", 100)}, strings.Repeat("é<\u2028", 100)},
		{"long policy deny", gatewayAnswer{status: 403, code: errcode.Denied, reason: "not_owner", id: "d-6", policyDeny: true, detail: strings.Repeat("x", 300)}, "denied: not_owner: " + strings.Repeat("x", 300)},
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

// TestGRPCChecksBeyondStreamWorkers: more checks in flight than the server
// keeps stream workers (grpcStreamWorkers) are all answered, each with its
// own decision: the workers bound nothing.
func TestGRPCChecksBeyondStreamWorkers(t *testing.T) {
	cfg := fullConfig(t)
	release := make(chan struct{})
	var started atomic.Int32
	cfg.Decide = func(ctx context.Context, in policy.HTTPInput) (policy.HTTPDecision, string, uint64, error) {
		if started.Add(1) == 4*grpcStreamWorkers {
			close(release) // every check is in flight at once
		}
		<-release
		return policy.HTTPDecision{Allow: true, Reason: "r" + in.Path}, "rev", 1, nil
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client := grpcClient(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4*grpcStreamWorkers)
	for i := range 4 * grpcStreamWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := "/contacts/c-" + strconv.Itoa(i)
			resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Headers: map[string]string{"x-user-id": "u-1"}},
			}}})
			switch {
			case err != nil:
				errs <- err
			case resp.GetStatus().GetCode() != int32(codes.OK):
				errs <- fmt.Errorf("%s: code %d", path, resp.GetStatus().GetCode())
			case resp.GetOkResponse().GetHeaders()[0].GetHeader().GetValue() != "r"+path:
				errs <- fmt.Errorf("%s: x-authz-reason %q", path, resp.GetOkResponse().GetHeaders()[0].GetHeader().GetValue())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
