package highlevel

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkWebhookAccept: webhooks accepted per second by the handler (read, Ed25519 check,
// parse, durable enqueue with its webhookId in bbolt), from 8 senders per CPU at once (bbolt
// batches their transactions). Bodies are signed before the timer starts.
//
//	go test -run '^$' -bench WebhookAccept -benchtime 2000x ./internal/connect/highlevel
func BenchmarkWebhookAccept(b *testing.B) {
	e := newEnv(b, 1)
	e.cfg.MaxPending = 1 << 30
	c, err := New(e.cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	h := c.WebhookHandler()
	type signed struct {
		body []byte
		sig  string
	}
	bodies := make([]signed, b.N)
	for i := range bodies {
		body := hook("ContactUpdate", "loc-0", fmt.Sprintf("c-%d", i))
		bodies[i] = signed{body, sign(body)["X-GHL-Signature"]}
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s := bodies[next.Add(1)-1]
			req := httptest.NewRequest(http.MethodPost, WebhookPath, strings.NewReader(string(s.body)))
			req.Header.Set("X-GHL-Signature", s.sig)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), "accepted") {
				b.Errorf("%d %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.StopTimer()
	if n := c.st.pending(); n != uint64(b.N) {
		b.Fatalf("pending %d, want %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "webhooks/s")
}

// BenchmarkReconcile: records per second through a full sync against the fake (2 locations of
// 3,000 records and 50 users each, pages of 100, rate limit lifted), into a real crmauthz: the
// first copy (written as a snapshot) and a later reconcile that finds nothing changed.
//
//	go test -run '^$' -bench Reconcile -benchtime 3x ./internal/connect/highlevel
func BenchmarkReconcile(b *testing.B) {
	const locs, users, records = 2, 50, 3000
	for _, mode := range []string{"first_copy", "no_change"} {
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b, locs)
			e.fake.GenWorld(9, locs, users, records)
			e.fake.Limit = 1 << 30
			e.cfg.RateLimit = 1 << 30
			var c *Connector
			open := func() {
				var err error
				e.cfg.StateDir = b.TempDir()
				if c, err = New(e.cfg); err != nil {
					b.Fatal(err)
				}
			}
			if mode == "no_change" {
				open()
				if err := c.Sync(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				if mode == "first_copy" {
					b.StopTimer()
					e.side = newSidecar(b)
					e.sink.point(b, e.side.admin.URL)
					open()
					b.StartTimer()
				}
				if err := c.Sync(context.Background()); err != nil {
					b.Fatal(err)
				}
				if mode == "first_copy" {
					b.StopTimer()
					c.Close()
					b.StartTimer()
				}
			}
			b.StopTimer()
			if mode == "no_change" {
				c.Close()
			}
			b.ReportMetric(float64(locs*records*b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
