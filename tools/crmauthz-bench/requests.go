package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"golang.org/x/sys/unix"
)

// The load generator's connections and, with --requests-out, every request
// of every step (BENCHMARKS.md, "Against the floor": what the slowest 1 %
// wait for). vegeta's own client, rebuilt here as NewAttacker builds it, with
// a dialer that notes each connection it opens: at a fixed rate vegeta adds a
// worker, and so a connection, whenever the others are busy at a tick.

// connInfo is one connection the generator opened.
type connInfo struct {
	at   time.Time     // dial start
	took time.Duration // the dial (TCP handshake on loopback)
}

// connUse is the connection a request went out on, and how many requests
// that connection had carried before it (0: the connection's first).
type connUse struct {
	conn, nth int32
	sent      time.Duration // when the request was written on it, from the step's start
}

// connLog is the load generator's HTTP client to one side, with a dialer
// that notes each connection it opens and, when record is set, which
// connection each request (by vegeta's sequence number) was written on.
// One connLog per side serves every step of a run (a warm pool of
// keep-alive connections, as a gateway keeps to its authorizer) unless
// --cold-connections gives each step its own (BENCHMARKS.md, "Method").
type connLog struct {
	record bool
	http   *http.Client

	mu    sync.Mutex
	began time.Time // the current step's start
	first int       // conns[first:] were opened during the current step
	conns []connInfo
	uses  map[uint64]connUse // the current step's requests
}

// newConnLog returns a connLog with its client: vegeta's default client
// (NewAttacker), dialing through the log, with keep-alive on and HTTP/2 off
// (what vegeta's KeepAlive(true) and HTTP2(false) set); Timeout then
// applies to it as to vegeta's own.
func newConnLog(record bool) *connLog {
	l := &connLog{record: record, began: time.Now()}
	d := &net.Dialer{
		LocalAddr: &net.TCPAddr{IP: vegeta.DefaultLocalAddr.IP, Zone: vegeta.DefaultLocalAddr.Zone},
		KeepAlive: 30 * time.Second,
	}
	l.http = &http.Client{
		Timeout: vegeta.DefaultTimeout,
		Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				t0 := time.Now()
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				l.mu.Lock()
				id := int32(len(l.conns))
				l.conns = append(l.conns, connInfo{at: t0, took: time.Since(t0)})
				l.mu.Unlock()
				if !l.record {
					return c, nil
				}
				return &seqConn{Conn: c, log: l, id: id}, nil
			},
			TLSClientConfig:     vegeta.DefaultTLSConfig,
			MaxIdleConnsPerHost: vegeta.DefaultConnections,
			MaxConnsPerHost:     vegeta.DefaultMaxConnections,
			// What vegeta.KeepAlive(true) and vegeta.HTTP2(false) set, once
			// here rather than by each step's attacker (runStep).
			DisableKeepAlives: false,
			ForceAttemptHTTP2: false,
			TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		},
	}
	return l
}

// step starts a step: the connections and requests noted from now on are
// the step's.
func (l *connLog) step() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.began, l.first = time.Now(), len(l.conns)
	if l.record {
		l.uses = make(map[uint64]connUse)
	}
}

// opened is the number of connections dialed during the current step.
func (l *connLog) opened() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns) - l.first
}

// close closes the client's idle connections.
func (l *connLog) close() { l.http.CloseIdleConnections() }

var seqHeader = []byte("\r\nX-Vegeta-Seq: ")

// seqConn notes the X-Vegeta-Seq header vegeta sets on each request as the
// request is written, so that each result can be matched to its connection.
type seqConn struct {
	net.Conn
	log *connLog
	id  int32
	n   int32 // requests written so far
}

func (c *seqConn) Write(p []byte) (int, error) {
	if i := bytes.Index(p, seqHeader); i >= 0 {
		rest := p[i+len(seqHeader):]
		if j := bytes.IndexByte(rest, '\r'); j > 0 {
			if seq, err := strconv.ParseUint(string(rest[:j]), 10, 64); err == nil {
				c.log.mu.Lock()
				if c.log.uses != nil {
					c.log.uses[seq] = connUse{conn: c.id, nth: c.n, sent: time.Since(c.log.began)}
				}
				c.log.mu.Unlock()
				c.n++
			}
		}
	}
	return c.Conn.Write(p)
}

// reqRecord is one request of a step, as --requests-out writes it.
type reqRecord struct {
	dial    time.Duration // when its connection was dialed, from the step's start (< 0: before it); use.conn -1: unknown
	seq     uint64
	start   time.Duration // vegeta's timestamp (the worker took the tick), from the attack's start
	latency time.Duration
	ok      bool
	use     connUse // conn -1: not seen
}

// monotonicNow is CLOCK_MONOTONIC, the clock `perf record -k CLOCK_MONOTONIC`
// stamps its events with: it lets a step's requests be laid over the
// kernel's scheduling events of the same moment.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// requestsHeader is the first line of --requests-out. sched_us is when the
// constant pacer meant the request to go (seq ÷ rate; 0 at saturation),
// start_us when a worker took it, both from the attack's start; mono_ns is
// the attack's start on CLOCK_MONOTONIC; conn and nth the connection it
// went out on and the requests that connection carried before it; dial_us
// when that connection was dialed, from the step's start (negative: in an
// earlier step; empty: unknown); sent_us when the request was written on
// it, from the step's start (empty: unknown). start_us − sched_us is how
// late the generator took the request; sent_us − start_us what it spent
// before writing it (building it, waiting for its connection); latency_us
// counts from start_us (vegeta's), not from sched_us.
const requestsHeader = "run,step,slice,side,rate,seq,sched_us,start_us,latency_us,ok,conn,nth,dial_us,mono_ns,sent_us"

// writeRequests appends the requests of one side's step (one slice) to w.
func writeRequests(w *bufio.Writer, run, slice int, res stepResult) {
	for _, r := range res.reqs {
		var sched int64
		if res.spec.rate > 0 {
			sched = int64(r.seq) * 1_000_000 / int64(res.spec.rate)
		}
		dial, sent := "", ""
		if r.use.conn >= 0 {
			dial = strconv.FormatInt(r.dial.Microseconds(), 10)
			sent = strconv.FormatInt(r.use.sent.Microseconds(), 10)
		}
		ok := 0
		if r.ok {
			ok = 1
		}
		fmt.Fprintf(w, "%d,%q,%d,%s,%d,%d,%d,%d,%d,%d,%d,%d,%s,%d,%s\n", run, res.spec.name, slice, res.side, res.spec.rate,
			r.seq, sched, r.start.Microseconds(), r.latency.Microseconds(), ok, r.use.conn, r.use.nth, dial, res.mono.Nanoseconds(), sent)
	}
}

// requestsOut is --requests-out: a CSV file every step's requests go to.
type requestsOut struct {
	w     *bufio.Writer
	close func() error
}

func newRequestsOut(f io.WriteCloser) *requestsOut {
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(requestsHeader + "\n")
	return &requestsOut{w: w, close: func() error {
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}}
}
