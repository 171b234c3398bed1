package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// side is one server under test.
type side struct {
	name string // "crmauthz" or "opa"
	url  string // where a decision is asked
	root string // the server's root URL (http://host:port), for the gateway endpoints
	pid  int
	// endpoint, if a gateway endpoint (--endpoint, gateway.go), is how the
	// load asks this side: gatewayCall's requests from root. "": POST url.
	endpoint string
	// grpcAddr, with --endpoint ext-authz-grpc, is the side's gRPC
	// listener, and grpc the generator's connection to it (grpc.go).
	grpcAddr string
	grpc     *grpcClient
	// opa wraps the decision request as OPA's Data API input: {"input": …}.
	opa bool
	// metricsURL is crmauthz's /metrics (cache hits); "" for OPA.
	metricsURL string
	// pool, if set, is the generator's client to this side for every step
	// (a warm pool of connections); nil: each step dials its own.
	pool *connLog
}

// body returns the request body of r for this side.
func (s *side) body(r dataset.Request) []byte {
	if !s.opa {
		return r.AppendJSON(make([]byte, 0, 160))
	}
	b := append(make([]byte, 0, 170), `{"input":`...)
	return append(r.AppendJSON(b), '}')
}

// verdict is one decision as a side answered it.
type verdict struct {
	Allow  bool
	Reason string
}

// decode reads a 200 reply of this side; ok is false when it holds no decision.
func (s *side) decode(body []byte) (verdict, bool) {
	if !s.opa {
		var v struct {
			Allow  *bool   `json:"allow"`
			Reason *string `json:"reason"`
		}
		if json.Unmarshal(body, &v) != nil || v.Allow == nil || v.Reason == nil {
			return verdict{}, false
		}
		return verdict{*v.Allow, *v.Reason}, true
	}
	var v struct {
		Result *struct {
			Allow  *bool   `json:"allow"`
			Reason *string `json:"reason"`
		} `json:"result"`
	}
	if json.Unmarshal(body, &v) != nil || v.Result == nil || v.Result.Allow == nil || v.Result.Reason == nil {
		return verdict{}, false
	}
	return verdict{*v.Result.Allow, *v.Result.Reason}, true
}

// answered tells cheaply (on the load path) whether a reply with status
// code and body holds a decision: a 200 with one, or on a gateway endpoint
// also a 403 with the policy's deny (error code "denied", docs/gateways.md).
func (s *side) answered(code int, body []byte) bool {
	if code == http.StatusForbidden && isGateway(s.endpoint) {
		return bytes.Contains(body, []byte(`"code":"denied"`))
	}
	if code != http.StatusOK {
		return false
	}
	if s.opa {
		return bytes.Contains(body, []byte(`"allow":`)) && bytes.HasPrefix(body, []byte(`{"result":`))
	}
	return bytes.Contains(body, []byte(`"allow":`)) && bytes.Contains(body, []byte(`"reason":`))
}

// ask sends one decision request and decodes the answer.
func (s *side) ask(ctx context.Context, c *http.Client, r dataset.Request) (verdict, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(s.body(r)))
	if err != nil {
		return verdict{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, body, err := roundTrip(c, req)
	if err != nil {
		return verdict{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return verdict{}, fmt.Errorf("%s answered %d: %s", s.name, resp.StatusCode, body)
	}
	v, ok := s.decode(body)
	if !ok {
		return verdict{}, fmt.Errorf("%s answered no decision: %s", s.name, body)
	}
	return v, nil
}

// roundTrip sends req and reads the reply's body (at most 1 MiB).
func roundTrip(c *http.Client, req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body, err
}

// cacheStats reads crmauthz_decision_cache_lookups_total from /metrics.
func (s *side) cacheStats(ctx context.Context) (hits, misses float64, ok bool) {
	if s.metricsURL == "" {
		return 0, 0, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.metricsURL, nil)
	if err != nil {
		return 0, 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var seen int
	for sc.Scan() {
		line := sc.Text()
		var dst *float64
		switch {
		case strings.HasPrefix(line, `crmauthz_decision_cache_lookups_total{result="hit"} `):
			dst = &hits
		case strings.HasPrefix(line, `crmauthz_decision_cache_lookups_total{result="miss"} `):
			dst = &misses
		default:
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, 0, false
		}
		*dst = v
		seen++
	}
	return hits, misses, seen == 2
}

// stepSpec is one load step.
type stepSpec struct {
	name    string
	rate    int    // requests per second; 0: saturation
	workers int    // saturation: that many concurrent requests (closed loop)
	base    uint64 // index of the step's first request in the mix
	hot     int    // > 0: only requests base … base+hot-1, over and over
}

// stepResult is what one side did in one step.
type stepResult struct {
	spec     stepSpec
	side     string
	sent     int // requests sent
	ok       int // 200 with a decision
	errs     int // anything else: transport error, other status, no decision
	firstErr string
	achieved float64 // decisions per second
	p50      time.Duration
	p90      time.Duration
	p99      time.Duration
	p999     time.Duration
	max      time.Duration
	rss      memStatus       // peak during the step
	cpu      time.Duration   // CPU time of the server during the step
	cacheHit float64         // crmauthz: share of decisions answered by the decision cache; -1 unknown
	lat      []time.Duration // the latencies of the answered requests, sorted (pooled by sliceResults)
	span     time.Duration   // first request sent to last answer read
	began    time.Time       // when a slice's timed part began (slices.go's log)
	opened   int             // connections the generator dialed during the step
	// With --requests-out: every request and the attack's start on
	// CLOCK_MONOTONIC (requests.go).
	reqs []reqRecord
	mono time.Duration
}

// fixedRateMaxWorkers bounds the concurrency vegeta may grow to at a fixed
// rate when the server falls behind (it then sends late, and says so in the
// achieved rate).
const fixedRateMaxWorkers = 1000

// runStep drives one side with vegeta for dur and measures it, through the
// side's pool of connections if it has one; record keeps every request
// (--requests-out; with a pool, the pool's own setting counts).
func runStep(ctx context.Context, s *side, spec stepSpec, w dataset.World, dur, timeout time.Duration, record bool) stepResult {
	var n atomic.Uint64
	hdr := http.Header{"Content-Type": []string{"application/json"}}
	tr := func(t *vegeta.Target) error {
		i := n.Add(1) - 1
		if spec.hot > 0 {
			i %= uint64(spec.hot)
		}
		r := w.RequestAt(int(spec.base + i))
		if isGateway(s.endpoint) {
			c := gatewayCall(s.endpoint, w, r)
			t.Method, t.URL, t.Header, t.Body = c.method, s.root+c.path, c.header, c.body
			return nil
		}
		t.Method, t.URL, t.Header = http.MethodPost, s.url, hdr
		t.Body = s.body(r)
		return nil
	}
	conns := s.pool
	if conns == nil {
		conns = newConnLog(record)
		defer conns.close()
	}
	// Keep-alive on and HTTP/2 off are set on the transport once, by
	// newConnLog: vegeta's KeepAlive and HTTP2 options write the transport,
	// which a pooled client shares with the previous step's dials still
	// under way (a data race -race found).
	opts := []func(*vegeta.Attacker){
		vegeta.Client(conns.http), vegeta.Timeout(timeout), vegeta.MaxBody(64 << 10),
	}
	var pacer vegeta.Pacer
	if spec.rate > 0 {
		pacer = &beganPacer{Pacer: vegeta.ConstantPacer{Freq: spec.rate, Per: time.Second}}
		opts = append(opts, vegeta.MaxWorkers(fixedRateMaxWorkers))
	} else {
		pacer = vegeta.ConstantPacer{} // no pacing: as fast as the workers go
		opts = append(opts, vegeta.Workers(uint64(spec.workers)), vegeta.MaxWorkers(uint64(spec.workers)))
	}
	hits0, miss0, cacheOK := s.cacheStats(ctx)
	atk := vegeta.NewAttacker(opts...)
	stopWatch := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stopWatch()
	attack := func() <-chan *vegeta.Result { return atk.Attack(tr, pacer, dur, spec.name) }
	if s.grpc != nil {
		attack = func() <-chan *vegeta.Result { return grpcAttack(ctx, s, spec, w, dur, timeout) }
	}

	res := stepResult{spec: spec, side: s.name, cacheHit: -1}
	capHint := spec.rate * int(dur/time.Second+1)
	if capHint <= 0 || capHint > 4<<20 {
		capHint = 1 << 16
	}
	lat := make([]time.Duration, 0, capHint)
	var begin, end time.Time
	rss := sampleRSS(s.pid, 50*time.Millisecond)
	cpu0, _ := cpuTime(s.pid)
	conns.step()
	res.mono = monotonicNow()
	for r := range attack() {
		res.sent++
		// vegeta sets Code only once the body is read, and then Error
		// to the status line of a 4xx: a gateway's deny (answered).
		ok := (r.Error == "" || r.Code == http.StatusForbidden) && s.answered(int(r.Code), r.Body)
		if s.grpc != nil {
			ok = r.Error == "" // grpcAttack read the answer
		}
		if conns.record {
			res.reqs = append(res.reqs, reqRecord{seq: r.Seq, start: r.Timestamp.Sub(conns.began), latency: r.Latency, ok: ok, use: connUse{conn: -1}})
		}
		if begin.IsZero() || r.Timestamp.Before(begin) {
			begin = r.Timestamp
		}
		if e := r.End(); e.After(end) {
			end = e
		}
		if ok {
			res.ok++
			lat = append(lat, r.Latency)
			continue
		}
		res.errs++
		if res.firstErr == "" {
			res.firstErr = fmt.Sprintf("%d %s %.200s", r.Code, r.Error, r.Body)
		}
	}
	res.rss = rss.finish()
	res.opened = conns.opened()
	if conns.record {
		// The times of the records count from the attack's own start,
		// the origin of the pacer's schedule (seq ÷ rate), when known.
		var off time.Duration
		if bp, ok := pacer.(*beganPacer); ok && !bp.began.IsZero() {
			off = bp.began.Sub(conns.began)
		}
		res.mono += off
		conns.mu.Lock()
		for i := range res.reqs {
			r := &res.reqs[i]
			r.start -= off
			if u, ok := conns.uses[r.seq]; ok {
				r.use = u
				r.use.sent -= off
				r.dial = conns.conns[u.conn].at.Sub(conns.began) - off
			}
		}
		conns.mu.Unlock()
	}
	if cpu1, err := cpuTime(s.pid); err == nil {
		res.cpu = cpu1 - cpu0
	}
	if span := end.Sub(begin); span > 0 {
		res.achieved = float64(res.ok) / span.Seconds()
		res.span = span
	}
	slices.Sort(lat)
	res.lat = lat
	res.p50, res.p90, res.p99, res.p999 = quantile(lat, 0.50), quantile(lat, 0.90), quantile(lat, 0.99), quantile(lat, 0.999)
	if len(lat) > 0 {
		res.max = lat[len(lat)-1]
	}
	if cacheOK {
		if hits1, miss1, ok := s.cacheStats(ctx); ok && hits1+miss1 > hits0+miss0 {
			res.cacheHit = (hits1 - hits0) / (hits1 + miss1 - hits0 - miss0)
		}
	}
	return res
}

// beganPacer is a pacer that notes when the attack began: vegeta paces
// each tick by the time elapsed since its attack's start (Pace(elapsed, …)),
// which it keeps to itself; the first call gives it. The records of a step
// (--requests-out) count from it, so that a request's start less its due
// time (seq ÷ rate) is how late the generator took it, with no offset
// between the step's start and the attack's. Pace is called by the
// attack's one pacing goroutine; began is read once the attack's results
// are all in.
type beganPacer struct {
	vegeta.Pacer
	began time.Time
}

func (p *beganPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if p.began.IsZero() {
		p.began = time.Now().Add(-elapsed)
	}
	return p.Pacer.Pace(elapsed, hits)
}

// cpuPerDecision is the server's CPU time per answered decision.
func (r stepResult) cpuPerDecision() time.Duration {
	if r.ok == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.ok)
}

// quantile is the q-quantile of sorted latencies (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
