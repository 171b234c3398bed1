package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/policies"

	"github.com/crmauthz/crmauthz/internal/coldtest"
)

// benchGateway is a Gateway over a real index holding a 100,000-record
// world and the real policy, deciding as internal/server does (one read
// transaction, DecideHTTP), in header identity mode (X-User-Id), with the
// allow reply a fixed body.
func benchGateway(tb testing.TB) (*Gateway, dataset.World) {
	tb.Helper()
	world := dataset.New(dataset.Config{Records: 100_000, Users: 10_000})
	ix, err := index.Open(index.Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ix.Close() })
	repl, err := replication.New(replication.Config{Index: ix})
	if err != nil {
		tb.Fatal(err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(world.WriteSnapshot(pw, 1)) }()
	if _, err := repl.LoadSnapshot(pr); err != nil {
		tb.Fatal(err)
	}
	eng, err := policy.New(policy.Config{FS: policies.FS})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := fullConfig(tb)
	cfg.Decide = func(ctx context.Context, in policy.HTTPInput) (d policy.HTTPDecision, rev string, seq uint64, err error) {
		err = ix.View(func(tx *index.ReadTx) error {
			seq = tx.AppliedSeq()
			var err error
			d, rev, err = eng.DecideHTTP(ctx, tx, in)
			return err
		})
		return d, rev, seq, err
	}
	allow := []byte(`{"allow":true}`)
	cfg.WriteAllow = func(w http.ResponseWriter, _, _, _ string, _ uint64) { _, _ = w.Write(allow) }
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	id, err := identity.New(identity.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Identity, cfg.Metrics = id, metrics.New(metrics.DefaultConfig())
	g, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return g, world
}

// benchCall is one request of the load mix as a gateway asks it: the
// original method, path and query, the body Envoy would send, the subject.
type benchCall struct {
	method, uri, subject string
	body                 []byte
}

// benchCalls is request i of world's mix as crmauthz-bench --endpoint asks
// it (tools/crmauthz-bench, gateway.go): the target in the query for
// forward auth, in the body for Envoy (withBody).
func benchCalls(world dataset.World, n int, withBody bool) []benchCall {
	colls := map[string]string{"contact": "contacts", "opportunity": "opportunities"}
	out := make([]benchCall, n)
	for i := range out {
		r := world.RequestAt(i)
		rec := "/" + colls[r.Type] + "/" + url.PathEscape(r.ID)
		c := benchCall{method: http.MethodGet, uri: rec, subject: r.Subject}
		switch r.Action {
		case "edit":
			c.method = http.MethodPut
		case "delete":
			c.method = http.MethodDelete
		case "change_owner":
			c.method, c.uri = http.MethodPut, rec+"/owner"
			if withBody {
				c.body = []byte(`{"assignedTo":` + strconv.Quote(r.Target) + `}`)
			} else {
				c.uri += "?assignedTo=" + url.QueryEscape(r.Target)
			}
		case "add_follower", "remove_follower":
			c.method, c.uri = http.MethodPost, rec+"/followers"
			if r.Action == "remove_follower" {
				c.method = http.MethodDelete
			}
			if withBody {
				c.body = []byte(`{"followers":[` + strconv.Quote(r.Target) + `]}`)
			} else {
				c.uri += "?" + url.QueryEscape("followers[]") + "=" + url.QueryEscape(r.Target)
			}
		}
		out[i] = c
	}
	return out
}

// benchWriter is a ResponseWriter that keeps the status, with a header map
// each request starts empty (net/http gives each reply a map of its own).
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *benchWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}

// BenchmarkGateway is the gateway endpoints' handlers in process over the
// load mix of a 100,000-record world (BENCHMARKS.md "Session 8: the gateway
// request beyond the decision"): forward auth (the original request in
// X-Forwarded-Method and X-Forwarded-Uri, the target in the query), Envoy's
// HTTP ext_authz (the body as with_request_body sends it) and Envoy's gRPC
// Check, each with the real decision; deny401 is forward auth without an
// identity (no decision).
func BenchmarkGateway(b *testing.B) {
	g, world := benchGateway(b)
	benchEndpoints(b, g, world, true)
}

// BenchmarkGatewayBeyond is BenchmarkGateway's requests with a fixed
// decision in place of the policy's (allow and a deny in turn, one answer
// in two a 403 as in the load mix): the gateway's own work around
// DecideHTTP — the original request, the identity, the query's or body's
// parameters, the reply's headers and error body, the metrics.
func BenchmarkGatewayBeyond(b *testing.B) {
	g, world := benchGateway(b)
	n := 0
	g.cfg.Decide = func(context.Context, policy.HTTPInput) (policy.HTTPDecision, string, uint64, error) {
		n++
		d := policy.HTTPDecision{Allow: n%2 == 0, Reason: "owner", Action: "view", ResourceType: "contact", ResourceID: "c-1"}
		if !d.Allow {
			d.Reason = "not_owner"
		}
		return d, "rev", 1, nil
	}
	benchEndpoints(b, g, world, false)
}

// benchEndpoints runs the endpoints' sub-benchmarks on g; with401 adds
// forward auth without an identity.
func benchEndpoints(b *testing.B, g *Gateway, world dataset.World, with401 bool) {
	const n = 1 << 14
	query, bodies := benchCalls(world, n, false), benchCalls(world, n, true)
	serve := func(b *testing.B, build func(c benchCall, req *http.Request), calls []benchCall, h func(http.ResponseWriter, *http.Request) int) {
		w := &benchWriter{h: http.Header{}}
		reqs := make([]*http.Request, len(calls))
		for i, c := range calls {
			reqs[i] = httptest.NewRequest(http.MethodGet, "/", nil)
			build(c, reqs[i])
		}
		br := bytes.NewReader(nil)
		b.ReportAllocs()
		defer coldtest.ReportCPU(b)()
		i := 0
		for b.Loop() {
			c, req := calls[i%len(calls)], reqs[i%len(calls)]
			i++
			r := *req
			if c.body != nil {
				br.Reset(c.body)
				r.Body, r.ContentLength = io.NopCloser(br), int64(len(c.body))
			}
			clear(w.h)
			w.status = 0
			if st := h(w, &r); st != http.StatusOK && st != http.StatusForbidden && st != http.StatusUnauthorized {
				b.Fatalf("status %d for %s %s", st, c.method, c.uri)
			}
		}
	}
	forward := func(c benchCall, req *http.Request) {
		req.Header = http.Header{"X-Forwarded-Method": {c.method}, "X-Forwarded-Uri": {c.uri}, "X-User-Id": {c.subject}}
		req.RequestURI, req.URL.Path = ForwardAuthPath, ForwardAuthPath
	}
	b.Run("forward-auth", func(b *testing.B) { serve(b, forward, query, g.ForwardAuth) })
	b.Run("ext-authz-http", func(b *testing.B) {
		serve(b, func(c benchCall, req *http.Request) {
			req.Method, req.RequestURI = c.method, ExtAuthzPrefix+c.uri
			req.URL, _ = url.ParseRequestURI(req.RequestURI)
			req.Header = http.Header{"X-User-Id": {c.subject}}
			if c.body != nil {
				req.Header["Content-Type"] = []string{"application/json"}
			}
		}, bodies, g.ExtAuthzHTTP)
	})
	if with401 {
		b.Run("deny401", func(b *testing.B) {
			serve(b, func(c benchCall, req *http.Request) {
				forward(c, req)
				delete(req.Header, "X-User-Id")
			}, query, g.ForwardAuth)
		})
	}
	b.Run("ext-authz-grpc", func(b *testing.B) {
		s := &extAuthz{g: g}
		reqs := checkRequests(bodies)
		ctx := context.Background()
		b.ReportAllocs()
		defer coldtest.ReportCPU(b)()
		i := 0
		for b.Loop() {
			resp, err := s.Check(ctx, reqs[i%len(reqs)])
			i++
			if err != nil {
				b.Fatal(err)
			}
			if c := codes.Code(resp.GetStatus().GetCode()); c != codes.OK && c != codes.PermissionDenied {
				b.Fatalf("code %v", c)
			}
		}
	})
}

// checkRequests are the CheckRequests Envoy sends for calls (the body as a
// string, with_request_body's default).
func checkRequests(calls []benchCall) []*authv3.CheckRequest {
	reqs := make([]*authv3.CheckRequest, len(calls))
	for i, c := range calls {
		h := map[string]string{":method": c.method, ":path": c.uri, ":authority": "crm.example", "x-user-id": c.subject}
		if c.body != nil {
			h["content-type"] = "application/json"
		}
		reqs[i] = &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Id: "r-1", Method: c.method, Path: c.uri, Host: "crm.example",
				Scheme: "http", Protocol: "HTTP/1.1", Headers: h, Body: string(c.body), Size: int64(len(c.body))},
		}}}
	}
	return reqs
}
