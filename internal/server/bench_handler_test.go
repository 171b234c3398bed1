package server

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"

	"github.com/crmauthz/crmauthz/internal/coldtest"
)

// discardWriter is the http.ResponseWriter of BenchmarkDecisionHandler: it
// keeps the status and the body's length, and a header map that each
// request starts empty (net/http's writer gives each reply a map of its own).
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

// SetReadDeadline is there for Limit's body deadline (as net/http's writer's).
func (w *discardWriter) SetReadDeadline(time.Time) error { return nil }

func (w *discardWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(b)
	return len(b), nil
}

// servedHandler is the decision listener's handler as the serve command
// builds it (cmd/crmauthz: Limit around DecisionHandler, its body read
// before a slot is taken), over a 100,000-record world.
func servedHandler(tb testing.TB) (http.Handler, dataset.World) {
	tb.Helper()
	w := dataset.New(dataset.Config{Records: 100_000, Users: 10_000})
	ts := newTestServer(tb, &w)
	l := DefaultConfig().Listeners
	h := Limit(ts.decision, Limits{MaxInFlight: l.MaxInFlight, BodyBytes: ts.cfg.MaxDecisionBytes,
		BodyTimeout: l.BodyTimeout, ReadTimeout: l.ReadTimeout})
	return h, w
}

// BenchmarkDecisionHandler is POST /v1/decision (and forward auth) through
// the decision listener's whole handler in process — Limit, the body read,
// parsing, the decision in a bbolt read transaction, the metrics, the reply
// — with no network, over the load mix of a 100,000-record world (more
// distinct requests than the decision cache holds): the handler's own cost
// beside the decision's (BENCHMARKS.md "Session 7: the handler beyond the
// decision"). decision-hot is the handler around decisions the decision
// cache answers.
func BenchmarkDecisionHandler(b *testing.B) {
	h, world := servedHandler(b)
	bodies := make([][]byte, 1<<16)
	for i := range bodies {
		bodies[i] = world.RequestAt(i).AppendJSON(nil)
	}
	run := func(b *testing.B, method, target string, body func(i int) ([]byte, http.Header)) {
		w := &discardWriter{h: http.Header{}}
		req := httptest.NewRequest(method, target, nil)
		hdr := req.Header
		br := bytes.NewReader(nil)
		b.ReportAllocs()
		defer coldtest.ReportCPU(b)()
		i := 0
		for b.Loop() {
			bb, hh := body(i)
			i++
			br.Reset(bb)
			r := *req
			r.Body = io.NopCloser(br)
			r.ContentLength = int64(len(bb))
			r.Header = hdr
			if hh != nil {
				r.Header = hh
			}
			clear(w.h)
			w.status, w.n = 0, 0
			h.ServeHTTP(w, &r)
			if w.status != http.StatusOK && w.status != http.StatusForbidden {
				b.Fatalf("status %d for %s", w.status, bb)
			}
		}
	}
	b.Run("decision", func(b *testing.B) {
		run(b, http.MethodPost, "/v1/decision", func(i int) ([]byte, http.Header) {
			return bodies[i%len(bodies)], nil
		})
	})
	// 64 requests in turn: every decision after the first round is a hit of
	// the decision cache, so the handler's own work is most of the time.
	b.Run("decision-hot", func(b *testing.B) {
		run(b, http.MethodPost, "/v1/decision", func(i int) ([]byte, http.Header) {
			return bodies[i%64], nil
		})
	})
	var sb strings.Builder
	batch := make([][]byte, 1<<10)
	for i := range batch {
		sb.Reset()
		req0 := world.RequestAt(i * 10)
		sb.WriteString(`{"subject":"` + req0.Subject + `","checks":[`)
		for j := 0; j < 10; j++ {
			if j > 0 {
				sb.WriteByte(',')
			}
			r := world.RequestAt(i*10 + j)
			sb.WriteString(`{"action":"` + r.Action + `","resource":{"type":"` + r.Type + `","id":"` + r.ID + `"}`)
			if r.Target != "" {
				sb.WriteString(`,"target":"` + r.Target + `"`)
			}
			sb.WriteByte('}')
		}
		sb.WriteString(`]}`)
		batch[i] = []byte(sb.String())
	}
	b.Run("decisions10", func(b *testing.B) {
		run(b, http.MethodPost, "/v1/decisions", func(i int) ([]byte, http.Header) {
			return batch[i%len(batch)], nil
		})
	})
}

// BenchmarkDecisionLoopback is POST /v1/decision over loopback HTTP through
// the handler the serve command builds (servedHandler), from parallel
// keep-alive clients in this process: the path to profile (-cpuprofile,
// focus on decisionMux) for the handler at saturation.
func BenchmarkDecisionLoopback(b *testing.B) {
	h, world := servedHandler(b)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadHeaderTimeout = 5 * time.Second
	srv.Start()
	defer srv.Close()
	url := srv.URL + "/v1/decision"
	bodies := make([][]byte, 1<<16)
	for i := range bodies {
		bodies[i] = world.RequestAt(i).AppendJSON(nil)
	}
	defer coldtest.ReportCPU(b)()
	postParallel(b, url, bodies)
}

// postParallel posts bodies in turn to url from 4×GOMAXPROCS goroutines
// over keep-alive connections until b is done; every reply must be a 200.
func postParallel(b *testing.B, url string, bodies [][]byte) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var n atomic.Uint64
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := bodies[n.Add(1)%uint64(len(bodies))]
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
