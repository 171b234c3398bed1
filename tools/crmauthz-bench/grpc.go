package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// --endpoint ext-authz-grpc: the mix as Envoy's gRPC ext_authz asks it
// (envoy.service.auth.v3.Authorization/Check on crmauthz's --grpc-addr,
// docs/gateways.md): each request is ext-authz-http's (gateway.go) as a
// CheckRequest, the original method and path in attributes.request.http,
// X-User-Id among its headers (in lower case, as Envoy sends them), the body
// as with_request_body sends it. The generator keeps one gRPC connection
// (HTTP/2) per side for the run, as Envoy keeps to its authorization
// cluster, and is its own (vegeta speaks HTTP/1.1 only): at a fixed rate it
// starts each call when it is due, up to fixedRateMaxWorkers in flight; at
// saturation it keeps that many calls in flight. The floor is a bare gRPC
// server answering every Check with one constant OK (floorCheck).

const endpointExtAuthzGRPC = "ext-authz-grpc"

// grpcClient is the generator's connection to one side's gRPC listener.
type grpcClient struct {
	conn  *grpc.ClientConn
	authz authv3.AuthorizationClient
}

// dialGRPC connects to addr (a loopback listener; no TLS).
func dialGRPC(addr string) (*grpcClient, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("gRPC client of %s: %w", addr, err)
	}
	return &grpcClient{conn: conn, authz: authv3.NewAuthorizationClient(conn)}, nil
}

// checkRequest is request r of the mix of w as Envoy's CheckRequest.
func checkRequest(w dataset.World, r dataset.Request) *authv3.CheckRequest {
	c := gatewayCall(endpointExtAuthzHTTP, w, r)
	h := make(map[string]string, len(c.header))
	for k, v := range c.header {
		h[strings.ToLower(k)] = v[0]
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{
			Method: c.method, Path: strings.TrimPrefix(c.path, "/v1/ext-authz"), Headers: h, Body: string(c.body),
		},
	}}}
}

// grpcVerdict reads a CheckResponse: an allow (OK), or the policy's deny
// (PERMISSION_DENIED with the error body of code "denied"); ok is false for
// anything else (crmauthz's own refusals, UNAUTHENTICATED). The reason is
// the x-authz-reason header ("" from the floor).
func grpcVerdict(resp *authv3.CheckResponse) (v verdict, ok bool) {
	var hdrs []*corev3.HeaderValueOption
	switch codes.Code(resp.GetStatus().GetCode()) {
	case codes.OK:
		v.Allow, hdrs = true, resp.GetOkResponse().GetHeaders()
	case codes.PermissionDenied:
		d := resp.GetDeniedResponse()
		if d == nil || !strings.Contains(d.GetBody(), `"code":"denied"`) {
			return v, false
		}
		hdrs = d.GetHeaders()
	default:
		return v, false
	}
	for _, h := range hdrs {
		if h.GetHeader().GetKey() == "x-authz-reason" {
			v.Reason = h.GetHeader().GetValue()
		}
	}
	return v, true
}

// askGRPC sends request r of the mix as a Check and reads the answer.
func (s *side) askGRPC(ctx context.Context, timeout time.Duration, w dataset.World, r dataset.Request) (verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := s.grpc.authz.Check(ctx, checkRequest(w, r))
	if err != nil {
		return verdict{}, fmt.Errorf("%s: Check: %w", s.name, err)
	}
	v, ok := grpcVerdict(resp)
	if !ok {
		return verdict{}, fmt.Errorf("%s answered no decision: %v", s.name, resp)
	}
	return v, nil
}

// grpcAttack runs one step of Checks against s for dur and sends each
// call's result as vegeta's (Seq, Timestamp, Latency; Code 200 and no
// Error when it holds a decision, see grpcVerdict), closing the channel at
// the end.
func grpcAttack(ctx context.Context, s *side, spec stepSpec, w dataset.World, dur, timeout time.Duration) <-chan *vegeta.Result {
	out := make(chan *vegeta.Result, 4096)
	var n atomic.Uint64
	call := func() *vegeta.Result {
		seq := n.Add(1) - 1
		i := seq
		if spec.hot > 0 {
			i %= uint64(spec.hot)
		}
		req := checkRequest(w, w.RequestAt(int(spec.base+i)))
		cctx, cancel := context.WithTimeout(ctx, timeout)
		t0 := time.Now()
		resp, err := s.grpc.authz.Check(cctx, req)
		res := &vegeta.Result{Attack: spec.name, Seq: seq, Timestamp: t0, Latency: time.Since(t0), Code: 200}
		cancel()
		switch {
		case err != nil:
			res.Code, res.Error = 0, err.Error()
		default:
			if _, ok := grpcVerdict(resp); !ok {
				res.Code, res.Error = 0, fmt.Sprintf("no decision: %.200v", resp)
			}
		}
		return res
	}
	go func() {
		defer close(out)
		var wg sync.WaitGroup
		begin := time.Now()
		end := begin.Add(dur)
		if spec.rate > 0 {
			inFlight := make(chan struct{}, fixedRateMaxWorkers)
			for i := int64(0); ctx.Err() == nil; i++ {
				due := begin.Add(time.Duration(i * int64(time.Second) / int64(spec.rate)))
				if !due.Before(end) {
					break
				}
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				inFlight <- struct{}{} // late when fixedRateMaxWorkers are in flight, as vegeta
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := call()
					<-inFlight
					out <- r
				}()
			}
		} else {
			for range spec.workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil && time.Now().Before(end) {
						out <- call()
					}
				}()
			}
		}
		wg.Wait()
	}()
	return out
}

// floorCheck is the floor's one answer to a Check: OK with the headers of
// crmauthz's allow (gateway.checkResponse), constant.
var floorCheck = &authv3.CheckResponse{
	Status: &rpcstatus.Status{},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: "x-authz-reason", Value: "owner"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
		{Header: &corev3.HeaderValue{Key: "x-authz-decision-id", Value: "floor-00000000000000000000"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
	}}},
}

// floorAuthz is the floor's Authorization service: gRPC decodes the
// request (it cannot be left unread), nothing more is done with it.
type floorAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (floorAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return floorCheck, nil
}

// serveFloorGRPC serves floorAuthz on addr (loopback only) until ctx ends.
func serveFloorGRPC(ctx context.Context, addr string) (wait func(), err error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, floorAuthz{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(l)
	}()
	stop := context.AfterFunc(ctx, gs.Stop)
	return func() { stop(); gs.Stop(); <-done }, nil
}
