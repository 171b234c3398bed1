package gateway

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/crmauthz/crmauthz/internal/coldtest"
)

// BenchmarkGatewayGRPCServer is BenchmarkGateway's ext-authz-grpc through
// the real gRPC server of --grpc-addr (NewGRPC) over loopback, 32 calls in
// flight on one HTTP/2 connection as crmauthz-bench --endpoint
// ext-authz-grpc asks: what the server's options (its stream workers, its
// buffers) cost besides the handler. The CPU per call is the process's,
// the client's included.
func BenchmarkGatewayGRPCServer(b *testing.B) {
	g, world := benchGateway(b)
	calls := benchCalls(world, 1<<14, true)
	reqs := checkRequests(calls)
	client := grpcClient(b, g)
	ctx := context.Background()
	if _, err := client.Check(ctx, reqs[0]); err != nil { // connect before the clock
		b.Fatal(err)
	}
	const inFlight = 32
	var next atomic.Uint64
	b.SetParallelism(max(1, inFlight/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	defer coldtest.ReportCPU(b)()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Check(ctx, reqs[next.Add(1)%uint64(len(reqs))])
			if err != nil {
				b.Error(err)
				return
			}
			if c := codes.Code(resp.GetStatus().GetCode()); c != codes.OK && c != codes.PermissionDenied {
				b.Errorf("code %v", c)
				return
			}
		}
	})
}

// BenchmarkCheckResponse is the CheckResponse of a policy's deny (the
// error body inside it) and of an allow.
func BenchmarkCheckResponse(b *testing.B) {
	g, err := New(fullConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	for _, a := range []gatewayAnswer{
		{status: 403, code: "denied", reason: "follower_not_permitted", id: "0123456789abcdef-1a2b3", policyDeny: true},
		{allow: true, status: 200, reason: "owner", id: "0123456789abcdef-1a2b3"},
	} {
		b.Run(strconv.FormatBool(a.allow), func(b *testing.B) {
			b.ReportAllocs()
			defer coldtest.ReportCPU(b)()
			for b.Loop() { // b.Loop keeps the call: no sink needed
				g.checkResponse(&a)
			}
		})
	}
}

// grpcClient serves g's gRPC server (NewGRPC) on a loopback port until the
// test ends and returns a client of it.
func grpcClient(tb testing.TB, g *Gateway) authv3.AuthorizationClient {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := g.NewGRPC()
	go func() { _ = gs.Serve(ln) }()
	tb.Cleanup(func() { gs.Stop(context.Background()) })
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}
