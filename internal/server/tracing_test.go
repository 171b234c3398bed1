package server

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/metadata"

	"github.com/crmauthz/crmauthz/internal/server/gateway"
	"github.com/crmauthz/crmauthz/internal/tracing"
	"github.com/crmauthz/crmauthz/internal/tracing/tracingtest"
)

// tracedGW is a gateway test server whose spans go to an OTLP receiver over
// loopback (sampling 100%).
func tracedGW(tb testing.TB) (*gwServer, *tracing.Tracer, *tracingtest.Receiver) {
	tb.Helper()
	rcv := tracingtest.Start(tb)
	tr := rcv.Tracer(tb, 1)
	return newGW(tb, func(c *Config) { c.Tracer = tr }), tr, rcv
}

// traceparent is a sampled W3C trace context of trace n, as Envoy and nginx send it.
func traceparent(n int) (header, traceID, parentID string) {
	traceID = fmt.Sprintf("%032x", 0x4bf92f3577b3+n)
	parentID = fmt.Sprintf("%016x", 0xa0ba902b7+n)
	return "00-" + traceID + "-" + parentID + "-01", traceID, parentID
}

// secret is in every request body and subject: no span may hold it.
const secret = "u-owner"

func TestTracingSpans(t *testing.T) {
	g, tr, rcv := tracedGW(t)
	client, _, _ := grpcGW(t, g)
	admin := g.AdminHandler()
	rev := g.eng.Revision()
	type want struct {
		span, reason, action, typ string
		allow                     bool
		status                    int64 // crmauthz.gateway.status; 0: none
	}
	cases := []struct {
		name string
		do   func(t *testing.T, tp string) // sends one request carrying traceparent tp
		want want
	}{
		{"POST /v1/decision", func(t *testing.T, tp string) {
			rec := serve(g.h, "POST", "/v1/decision", `{"subject":"u-owner","action":"view","resource":{"type":"contact","id":"c-1"}}`,
				map[string]string{"traceparent": tp})
			if rec.Code != 200 {
				t.Fatal(rec.Body)
			}
		}, want{span: tracing.SpanDecision, reason: "owner", action: "view", typ: "contact", allow: true}},
		{"POST /v1/decision of an unknown action and type", func(t *testing.T, tp string) {
			rec := serve(g.h, "POST", "/v1/decision", `{"subject":"u-owner","action":"u-owner-act","resource":{"type":"u-owner-type","id":"c-1"}}`,
				map[string]string{"traceparent": tp})
			if rec.Code != 200 {
				t.Fatal(rec.Body)
			}
		}, want{span: tracing.SpanDecision, reason: "unknown_action", action: "other", typ: "other"}},
		{"POST /v1/data", func(t *testing.T, tp string) {
			rec := serve(g.h, "POST", "/v1/data/crmauthz/decision",
				`{"input":{"subject":"u-owner","action":"view","resource":{"type":"contact","id":"c-1"}}}`, map[string]string{"traceparent": tp})
			if rec.Code != 200 {
				t.Fatal(rec.Body)
			}
		}, want{span: tracing.SpanData, reason: "owner", action: "view", allow: true}},
		{"forward auth", func(t *testing.T, tp string) {
			got := g.do(t, "GET", "/v1/forward-auth", with(caddy("GET", "/contacts/c-1", "u-owner"), "traceparent", tp), "")
			checkReply(t, got, 200, "owner")
		}, want{span: tracing.SpanForwardAuth, reason: "owner", action: "view", typ: "contact", allow: true, status: 200}},
		{"Envoy HTTP ext_authz, denied", func(t *testing.T, tp string) {
			got := g.do(t, "PUT", gateway.ExtAuthzPrefix+"/contacts/c-1", map[string]string{"X-User-Id": "u-fol", "traceparent": tp,
				"Content-Type": "application/json"}, `{"assignedTo":"u-none","note":"u-owner"}`)
			checkReply(t, got, 403, "followers_cannot_change_owner")
		}, want{span: tracing.SpanExtAuthzHTTP, reason: "followers_cannot_change_owner", action: "change_owner", typ: "contact", status: 403}},
		{"gRPC ext_authz, traceparent in the CheckRequest", func(t *testing.T, tp string) {
			resp, err := client.Check(context.Background(), checkReq("PUT", "/contacts/c-1",
				map[string]string{"x-user-id": "u-owner", "traceparent": tp, "content-type": "application/json"}, `{"name":"u-owner"}`))
			if err != nil || resp.GetStatus().GetCode() != 0 {
				t.Fatal(resp, err)
			}
		}, want{span: tracing.SpanExtAuthzGRPC, reason: "owner", action: "edit", typ: "contact", allow: true, status: 200}},
		{"gRPC ext_authz, traceparent in the metadata", func(t *testing.T, tp string) {
			// Envoy's own span of the call is in the metadata; the request's
			// headers hold the client's, an ancestor.
			other, _, _ := traceparent(99)
			ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", tp)
			resp, err := client.Check(ctx, checkReq("GET", "/contacts/c-1", map[string]string{"x-user-id": "u-none", "traceparent": other}, ""))
			if err != nil || resp.GetStatus().GetCode() == 0 {
				t.Fatal(resp, err)
			}
		}, want{span: tracing.SpanExtAuthzGRPC, reason: "not_assigned", action: "view", typ: "contact", status: 403}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp, traceID, parentID := traceparent(i)
			tc.do(t, tp)
			sp := flushedSpan(t, tr, rcv, tc.want.span, traceID, parentID)
			checkAttrs(t, sp, map[string]any{
				"crmauthz.decision.reason": tc.want.reason,
				"crmauthz.decision.allow":  tc.want.allow,
				"crmauthz.policy.revision": rev,
				"crmauthz.applied_seq":     int64(10),
			})
			if tc.want.action != "" {
				checkAttrs(t, sp, map[string]any{"crmauthz.decision.action": tc.want.action})
			}
			if tc.want.typ != "" {
				checkAttrs(t, sp, map[string]any{"crmauthz.resource.type": tc.want.typ})
			}
			if tc.want.status != 0 {
				checkAttrs(t, sp, map[string]any{"crmauthz.gateway.status": tc.want.status})
			}
			if id, _ := tracingtest.Attr(sp, "crmauthz.decision_id"); id == "" || id == nil {
				t.Error("no decision id")
			}
			noSecret(t, sp)
		})
	}

	t.Run("POST /v1/decisions", func(t *testing.T) {
		tp, traceID, parentID := traceparent(20)
		rec := serve(g.h, "POST", "/v1/decisions", `{"subject":"u-fol","checks":[
			{"action":"view","resource":{"type":"contact","id":"c-1"}},
			{"action":"delete","resource":{"type":"contact","id":"c-1"}}]}`, map[string]string{"traceparent": tp})
		if rec.Code != 200 {
			t.Fatal(rec.Body)
		}
		sp := flushedSpan(t, tr, rcv, tracing.SpanDecisions, traceID, parentID)
		checkAttrs(t, sp, map[string]any{
			"crmauthz.decisions.checks": int64(2),
			"crmauthz.decision.allow":   []any{true, false},
			"crmauthz.decision.reason":  []any{"follower", "follower_not_permitted"},
			"crmauthz.decision.action":  []any{"view", "delete"},
			"crmauthz.policy.revision":  rev,
		})
	})
	t.Run("a bad request is an error span", func(t *testing.T) {
		tp, traceID, parentID := traceparent(21)
		rec := serve(g.h, "POST", "/v1/decision", `{"subject":"u-owner"}`, map[string]string{"traceparent": tp})
		if rec.Code != 400 {
			t.Fatal(rec.Body)
		}
		sp := flushedSpan(t, tr, rcv, tracing.SpanDecision, traceID, parentID)
		if sp.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR || sp.GetStatus().GetMessage() != "http_400" {
			t.Errorf("status %v, want an error http_400", sp.GetStatus())
		}
		checkAttrs(t, sp, map[string]any{"http.response.status_code": int64(400)})
	})
	t.Run("a caller that does not sample gets no span", func(t *testing.T) {
		tp, traceID, _ := traceparent(24)
		tp = tp[:len(tp)-2] + "00" // the sampled flag off
		before := len(rcv.Spans())
		for range 2 {
			rec := serve(g.h, "POST", "/v1/decision", `{"subject":"u-owner","action":"view","resource":{"type":"contact","id":"c-1"}}`,
				map[string]string{"traceparent": tp})
			if rec.Code != 200 {
				t.Fatal(rec.Body)
			}
		}
		got := g.do(t, "GET", "/v1/forward-auth", with(caddy("GET", "/contacts/c-1", "u-owner"), "traceparent", tp), "")
		checkReply(t, got, 200, "owner")
		if err := tr.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, sp := range rcv.Spans()[before:] {
			if hex.EncodeToString(sp.GetTraceId()) == traceID {
				t.Errorf("span %s exported for an unsampled trace", sp.GetName())
			}
		}
	})
	t.Run("replication batch", func(t *testing.T) {
		tp, traceID, parentID := traceparent(22)
		body := `{"events":[{"seq":11,"op":"user.upsert","user":{"id":"u-owner-2","role":"user","location_ids":["loc-1"]}}]}`
		rec := serveFrom(admin, "POST", "/v1/replication/events", body, map[string]string{"traceparent": tp})
		if rec.Code != 200 {
			t.Fatal(rec.Body)
		}
		sp := flushedSpan(t, tr, rcv, tracing.SpanReplication, traceID, parentID)
		checkAttrs(t, sp, map[string]any{"crmauthz.replication.events": int64(1), "crmauthz.replication.applied": int64(1),
			"crmauthz.applied_seq": int64(11), "crmauthz.replication.source": "http"})
		noSecret(t, sp)
	})
	t.Run("snapshot load", func(t *testing.T) {
		tp, traceID, parentID := traceparent(23)
		rec := serveFrom(admin, "PUT", "/v1/replication/snapshot", gwFacts, map[string]string{"traceparent": tp})
		if rec.Code != 200 {
			t.Fatal(rec.Body)
		}
		sp := flushedSpan(t, tr, rcv, tracing.SpanSnapshotLoad, traceID, parentID)
		checkAttrs(t, sp, map[string]any{"crmauthz.snapshot.users": int64(6), "crmauthz.snapshot.records": int64(4),
			"crmauthz.applied_seq": int64(10)})
		noSecret(t, sp)
	})
}

// serveFrom serves a request from a loopback client (the replication API
// takes those without a token).
func serveFrom(h http.Handler, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:1234"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// flushedSpan exports what is finished and returns the span named name of
// traceID, checking that its parent is parentID.
func flushedSpan(tb testing.TB, tr *tracing.Tracer, rcv *tracingtest.Receiver, name, traceID, parentID string) *tracepb.Span {
	tb.Helper()
	if err := tr.ForceFlush(context.Background()); err != nil {
		tb.Fatal(err)
	}
	sp := rcv.WaitSpan(tb, name, traceID)
	if got := hex.EncodeToString(sp.GetParentSpanId()); got != parentID {
		tb.Errorf("span %s: parent %s, want %s (the traceparent sent)", name, got, parentID)
	}
	if sp.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		tb.Errorf("span %s: kind %v, want server", name, sp.GetKind())
	}
	return sp
}

func checkAttrs(tb testing.TB, sp *tracepb.Span, want map[string]any) {
	tb.Helper()
	for k, w := range want {
		got, ok := tracingtest.Attr(sp, k)
		if !ok || fmt.Sprint(got) != fmt.Sprint(w) {
			tb.Errorf("span %s: %s = %v (present %v), want %v", sp.GetName(), k, got, ok, w)
		}
	}
}

// noSecret checks that no attribute holds the subject or a body's bytes.
func noSecret(tb testing.TB, sp *tracepb.Span) {
	tb.Helper()
	for _, s := range tracingtest.AllText(sp) {
		if strings.Contains(s, secret) || strings.ContainsAny(s, `{"`) {
			tb.Errorf("span %s holds %q, from a request's body or header", sp.GetName(), s)
		}
	}
}

// BenchmarkTracing is POST /v1/decision through the Gin handler, as
// BenchmarkHandlerGolden/decision, with tracing off (a nil Tracer), on at
// 100% sampling exporting to an OTLP receiver in this process, and on with
// roots unsampled (ratio 0): the cost stated in BENCHMARKS.md.
func BenchmarkTracing(b *testing.B) {
	rcv := tracingtest.StartDiscarding(b)
	for _, mode := range []struct {
		name  string
		on    bool
		ratio float64
	}{{"off", false, 0}, {"sampled", true, 1}, {"unsampled", true, 0}} {
		b.Run(mode.name, func(b *testing.B) {
			ts, all := newGoldenServer(b)
			if mode.on {
				tr := rcv.Tracer(b, mode.ratio)
				ts.tr = tr // read per request by the handlers
			}
			var bodies []string
			for _, c := range all {
				if c.in.Subject != "" && c.in.Action != "" {
					bodies = append(bodies, string(c.Input))
				}
			}
			before := rcv.Count()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				rec := serve(ts.decision, http.MethodPost, "/v1/decision", bodies[i%len(bodies)], nil)
				i++
				if rec.Code != 200 {
					b.Fatal(rec.Body.String())
				}
			}
			if ts.tr != nil {
				if err := ts.tr.ForceFlush(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			// below 1 when the queue was full (spans dropped, never waited for)
			b.ReportMetric(float64(rcv.Count()-before)/float64(b.N), "exported/op")
		})
	}
}
