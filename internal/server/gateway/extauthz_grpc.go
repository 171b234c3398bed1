package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
)

// authzServiceName is the gRPC service Envoy's ext_authz calls.
const authzServiceName = "envoy.service.auth.v3.Authorization"

// GRPC serves Envoy's ext_authz v3 (envoy.service.auth.v3.Authorization/Check)
// and the standard gRPC health service.
//
// Check always answers with a CheckResponse, never with a gRPC error: Envoy
// treats an RPC error as a failure of the authorization service, which
// failure_mode_allow turns into an allow. A panic is recovered into a deny
// for the same reason. Allow is OK with ok_response headers x-authz-reason
// and x-authz-decision-id (overwriting any a client sent); deny is
// PERMISSION_DENIED with denied_response status 403 (413 for a body over
// --max-decision-bytes); no or a bad identity is UNAUTHENTICATED with 401.
type GRPC struct {
	*grpc.Server
	health *health.Server
}

// NewGRPC returns the gRPC server of the ext_authz listener (--grpc-addr),
// with keepalive and message size limits.
func (g *Gateway) NewGRPC() *GRPC {
	gs := grpc.NewServer(
		// The body may be up to MaxDecisionBytes (a larger one is answered
		// 413); the headers and attributes get room beside it. A message over
		// this limit fails the RPC, which Envoy counts as an error.
		grpc.MaxRecvMsgSize(int(g.cfg.MaxDecisionBytes)+4<<20),
		grpc.MaxSendMsgSize(1<<20),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 15 * time.Minute,
			Time:              2 * time.Minute,
			Timeout:           20 * time.Second,
		}),
		// Envoy's HTTP/2 keepalive may ping often; allow it down to 10s.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(1024),
		// Checks run on long-lived goroutines whose stacks stay grown
		// (the decision's evaluation is deep: a new goroutine per stream
		// grew its stack by copying, a fifth of the CPU at saturation;
		// BENCHMARKS.md "Session 9: Envoy's paths against their floors").
		// When all are busy a stream gets a goroutine of its own, as
		// before: this bounds nothing.
		grpc.NumStreamWorkers(grpcStreamWorkers),
		grpc.ChainUnaryInterceptor(g.grpcRecovery),
	)
	authv3.RegisterAuthorizationServer(gs, &extAuthz{g: g})
	hs := health.NewServer()
	hs.SetServingStatus(authzServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	return &GRPC{Server: gs, health: hs}
}

// grpcStreamWorkers is the number of goroutines the gRPC server keeps to
// run checks on (grpc.NumStreamWorkers): as many as the checks in flight
// that are to run on a grown stack.
const grpcStreamWorkers = 32

// Serve serves ln until Stop.
func (g *GRPC) Serve(ln net.Listener) error { return g.Server.Serve(ln) }

// Stop reports NOT_SERVING to health checks, lets the calls in flight
// finish until ctx is done, then closes every connection.
func (g *GRPC) Stop(ctx context.Context) {
	g.health.Shutdown()
	done := make(chan struct{})
	go func() {
		g.Server.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		g.Server.Stop()
		<-done
	}
}

// grpcRecovery turns a panic in Check into a deny (never an RPC error).
func (g *Gateway) grpcRecovery(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if v := recover(); v != nil {
			g.cfg.Logger.Error("panic in gRPC handler", "method", info.FullMethod, "panic", v, "stack", string(debug.Stack()))
			if _, ok := req.(*authv3.CheckRequest); ok {
				a := gatewayAnswer{status: http.StatusForbidden, code: errcode.InternalError, reason: "internal_error",
					message: "internal error (denied)", id: g.cfg.NextID()}
				g.extAuthzGRPC.CountLabel("other", false, "internal_error")
				resp, err = g.checkResponse(&a), nil
				return
			}
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(ctx, req)
}

type extAuthz struct {
	authv3.UnimplementedAuthorizationServer
	g *Gateway
}

// Check decides one request Envoy holds.
func (a *extAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	r := gatewayRequest{endpoint: endpointExtAuthzGRPC}
	h := req.GetAttributes().GetRequest().GetHttp()
	if h == nil {
		r.headers = identity.MapHeaders(nil)
		r.invalid = errors.New("the CheckRequest has no attributes.request.http")
	} else {
		r.method, r.uri = h.GetMethod(), h.GetPath()
		if len(h.GetHeaders()) > 0 || h.GetHeaderMap() == nil {
			r.headers = envoyHeaders(h.GetHeaders())
		} else {
			r.headers = headerList(h.GetHeaderMap().GetHeaders()) // encode_raw_headers
		}
		for _, v := range r.headers.Values(hdrPartialBodyLower) {
			if strings.EqualFold(strings.TrimSpace(v), "true") {
				r.partial = true
			}
		}
		if b := h.GetRawBody(); len(b) > 0 { // with_request_body.pack_as_bytes
			r.body = b
		} else if s := h.GetBody(); s != "" {
			// a copy: a body is tens of bytes, and unsafe.StringData's
			// bytes must never be written (BENCHMARKS.md "Session 9:
			// Envoy's paths against their floors")
			r.body = []byte(s)
		}
	}
	ans := a.g.decide(ctx, r)
	return a.g.checkResponse(&ans), nil
}

// headerList is Envoy's header_map (encode_raw_headers): repeated headers
// stay separate, so a header given twice is seen twice.
type headerList []*corev3.HeaderValue

func (l headerList) Values(name string) []string {
	var out []string
	for _, hv := range l {
		if strings.EqualFold(hv.GetKey(), name) {
			if raw := hv.GetRawValue(); len(raw) > 0 {
				out = append(out, string(raw))
			} else {
				out = append(out, hv.GetValue())
			}
		}
	}
	return out
}

// envoyHeaders is Envoy's attributes.request.http.headers, lower-case
// names to values: identity.MapHeaders, with the name lowered without an
// allocation when it is short ASCII (the names asked are).
type envoyHeaders map[string]string

func (m envoyHeaders) Values(name string) []string {
	var (
		v  string
		ok bool
	)
	var buf [64]byte
	key, ascii := buf[:0], len(name) <= len(buf)
	for i := 0; i < len(name) && ascii; i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		key, ascii = append(key, c), c < utf8.RuneSelf
	}
	if ascii {
		v, ok = m[string(key)] // no allocation: the compiler looks up key's bytes
	} else {
		v, ok = m[strings.ToLower(name)]
	}
	if ok {
		return []string{v}
	}
	return nil
}

// hdrPartialBodyLower is X-Envoy-Auth-Partial-Body as Envoy names it.
const hdrPartialBodyLower = "x-envoy-auth-partial-body"

// grpcHeaders are the fixed headers of a deny's CheckResponse; shared by
// every response, never modified (gRPC only reads them to marshal them).
type grpcHeaders struct {
	contentType, cacheControl, wwwAuthenticate *corev3.HeaderValueOption
}

func newGRPCHeaders() grpcHeaders {
	return grpcHeaders{
		contentType:     setHeader("content-type", "application/json"),
		cacheControl:    setHeader("cache-control", "no-store"),
		wwwAuthenticate: setHeader("www-authenticate", `Bearer realm="crmauthz"`),
	}
}

// allowResponse and denyResponse are a CheckResponse with every message it
// points to, allocated at once.
type allowResponse struct {
	resp   authv3.CheckResponse
	status rpcstatus.Status
	ok     authv3.CheckResponse_OkResponse
	okHTTP authv3.OkHttpResponse
	hdrs   [2]*corev3.HeaderValueOption
	answer answerHeaders
}

type denyResponse struct {
	resp       authv3.CheckResponse
	status     rpcstatus.Status
	denied     authv3.CheckResponse_DeniedResponse
	deniedHTTP authv3.DeniedHttpResponse
	httpStatus typev3.HttpStatus
	hdrs       [5]*corev3.HeaderValueOption
	answer     answerHeaders
}

// answerHeaders are x-authz-reason and x-authz-decision-id.
type answerHeaders struct {
	opts [2]corev3.HeaderValueOption
	vals [2]corev3.HeaderValue
}

// set fills the two headers of a into hdrs.
func (h *answerHeaders) set(hdrs []*corev3.HeaderValueOption, a *gatewayAnswer) {
	h.vals[0].Key, h.vals[0].Value = "x-authz-reason", a.reason
	h.vals[1].Key, h.vals[1].Value = "x-authz-decision-id", a.id
	for i := range h.opts {
		h.opts[i].Header, h.opts[i].AppendAction = &h.vals[i], corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		hdrs[i] = &h.opts[i]
	}
}

// checkResponse converts an answer to Envoy's CheckResponse: allow is OK
// with the answer's headers; a deny is PERMISSION_DENIED (UNAUTHENTICATED
// for a 401) with the answer's headers, content-type, cache-control (and
// www-authenticate on a 401), the status and the error body.
func (g *Gateway) checkResponse(a *gatewayAnswer) *authv3.CheckResponse {
	if a.allow {
		r := new(allowResponse)
		r.answer.set(r.hdrs[:], a)
		r.okHTTP.Headers = r.hdrs[:]
		r.ok.OkResponse = &r.okHTTP
		r.status.Code = int32(codes.OK)
		r.resp.Status, r.resp.HttpResponse = &r.status, &r.ok
		return &r.resp
	}
	r := new(denyResponse)
	r.answer.set(r.hdrs[:], a)
	hdrs := append(r.hdrs[:2], g.grpcHeaders.contentType, g.grpcHeaders.cacheControl)
	code := codes.PermissionDenied
	if a.status == http.StatusUnauthorized {
		code = codes.Unauthenticated
		hdrs = append(hdrs, g.grpcHeaders.wwwAuthenticate)
	}
	// The body's string is copied from a pooled buffer. Appending it into
	// room inside denyResponse saves that allocation but costs more (a
	// 1,024-byte object: BENCHMARKS.md "Session 9: Envoy's paths against
	// their floors").
	bp := g.bufs.errorBody(a)
	r.deniedHTTP.Body = string(*bp)
	g.bufs.put(bp)
	r.httpStatus.Code = typev3.StatusCode(a.status)
	r.deniedHTTP.Status, r.deniedHTTP.Headers = &r.httpStatus, hdrs
	r.denied.DeniedResponse = &r.deniedHTTP
	r.status.Code, r.status.Message = int32(code), a.reason
	r.resp.Status, r.resp.HttpResponse = &r.status, &r.denied
	return &r.resp
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
