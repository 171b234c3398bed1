package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestLimitInFlight(t *testing.T) {
	const max = 3
	release := make(chan struct{})
	entered := make(chan struct{}, 16)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.WriteHeader(http.StatusOK)
	})
	var rejected atomic.Int32
	srv := httptest.NewServer(Limit(h, Limits{MaxInFlight: max, OnReject: func() { rejected.Add(1) }}))
	defer srv.Close()

	codes := make(chan int, max)
	for i := 0; i < max; i++ {
		go func() {
			resp, err := http.Get(srv.URL)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for i := 0; i < max; i++ {
		<-entered // max requests are in flight now
	}

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct {
		Error struct{ Code, Message string }
	}
	if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || e.Error.Code != "overloaded" ||
		resp.Header.Get("Retry-After") != "1" || rejected.Load() != 1 {
		t.Fatalf("request over the limit: %d %s %v (rejected %d)", resp.StatusCode, body, resp.Header, rejected.Load())
	}

	close(release)
	for i := 0; i < max; i++ {
		if c := <-codes; c != http.StatusOK {
			t.Fatalf("request within the limit: %d", c)
		}
	}
	// Capacity is back.
	resp, err = http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after release: %d", resp.StatusCode)
	}
}

// TestSlowBodiesDoNotHoldSlots: connections that trickle their bodies wait
// outside the in-flight limit, so decisions of other clients still get
// their 200 while twice as many slow clients as slots are connected. A
// slow body is answered 408 request_timeout after its BodyTimeout.
func TestSlowBodiesDoNotHoldSlots(t *testing.T) {
	const (
		slots = 8
		slow  = 16 // trickling connections
		fast  = 40 // decisions sent while they trickle
	)
	ts := newTestServer(t, nil)
	var active, timeouts atomic.Int32
	newServer := func(bodyTimeout time.Duration) *httptest.Server {
		srv := httptest.NewUnstartedServer(Limit(ts.decision, Limits{MaxInFlight: slots, BodyBytes: 1 << 20,
			BodyTimeout: bodyTimeout, ReadTimeout: time.Minute, OnBodyError: func(code int) {
				if code == http.StatusRequestTimeout {
					timeouts.Add(1)
				}
			}}))
		srv.Config.ReadTimeout = time.Minute // the slow clients stay within it
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateActive {
				active.Add(1)
			}
		}
		srv.Start()
		t.Cleanup(srv.Close)
		return srv
	}
	// trickle opens a connection that sends its headers and one byte of a
	// 100-byte body.
	trickle := func(tb testing.TB, srv *httptest.Server) net.Conn {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "POST /v1/decision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"); err != nil {
			tb.Fatal(err)
		}
		return c
	}
	const decision = `{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}`

	t.Run("decisions pass slow bodies", func(t *testing.T) {
		active.Store(0)
		srv := newServer(time.Minute)
		for i := 0; i < slow; i++ {
			trickle(t, srv)
		}
		for active.Load() < slow { // every slow request has started
			runtime.Gosched()
		}
		for i := 0; i < fast; i++ {
			resp, err := http.Post(srv.URL+"/v1/decision", "application/json", strings.NewReader(decision))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("decision %d beside %d slow bodies and %d slots: %d %s", i, slow, slots, resp.StatusCode, body)
			}
		}
	})

	t.Run("a slow body times out", func(t *testing.T) {
		srv := newServer(100 * time.Millisecond)
		c := trickle(t, srv)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Error struct{ Code string }
		}
		if resp.StatusCode != http.StatusRequestTimeout || json.Unmarshal(body, &e) != nil || e.Error.Code != "request_timeout" {
			t.Fatalf("slow body: %d %s", resp.StatusCode, body)
		}
		if timeouts.Load() != 1 {
			t.Fatalf("OnBodyError called %d times with 408, want 1", timeouts.Load())
		}
	})
}

// A body Limit read whole reaches the decision endpoints' readBody as is
// (wholeBody, not copied again), with the same result and the same limit
// as a body read from the connection; a body longer than the pre-read, or
// one a handler started reading, is read the usual way.
func TestLimitHandsTheWholeBodyOn(t *testing.T) {
	const limit = 64
	cases := []struct {
		name      string
		body      string
		bodyBytes int64 // Limits.BodyBytes
		readFirst int   // bytes the handler reads itself before readBody
		whole     bool  // readBody takes Limit's buffer
		tooLarge  bool
	}{
		{"small body", `{"subject":"u-1"}`, limit, 0, true, false},
		{"exactly the limit", strings.Repeat("a", limit), limit, 0, true, false},
		{"over the limit, within the pre-read", strings.Repeat("a", limit+1), 4 * limit, 0, false, true},
		{"over the pre-read", strings.Repeat("a", 3*limit), limit, 0, false, true},
		{"partly read by the handler", `{"subject":"u-1"}`, limit, 3, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var (
				got      []byte
				err      error
				wasWhole bool
			)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				wb, isWhole := r.Body.(*wholeBody)
				var head []byte
				if tc.readFirst > 0 {
					head = make([]byte, tc.readFirst)
					if _, err := io.ReadFull(r.Body, head); err != nil {
						t.Error(err)
					}
				}
				got, err = readBody(r, limit)
				if head != nil {
					got = append(head, got...)
				}
				wasWhole = isWhole && len(got) > 0 && len(wb.b) > 0 && &got[0] == &wb.b[0]
				w.WriteHeader(http.StatusNoContent)
			})
			srv := httptest.NewServer(Limit(h, Limits{BodyBytes: tc.bodyBytes, BodyTimeout: 5 * time.Second}))
			defer srv.Close()
			resp, rerr := http.Post(srv.URL, "application/json", strings.NewReader(tc.body))
			if rerr != nil {
				t.Fatal(rerr)
			}
			resp.Body.Close()
			var mbe *http.MaxBytesError
			if tc.tooLarge {
				if !errors.As(err, &mbe) {
					t.Fatalf("readBody: %v, want a *http.MaxBytesError", err)
				}
				return
			}
			if err != nil || string(got) != tc.body {
				t.Fatalf("readBody = %q, %v; want %q", got, err, tc.body)
			}
			if wasWhole != tc.whole {
				t.Errorf("Limit's buffer taken as is: %v, want %v", wasWhole, tc.whole)
			}
		})
	}
}

// TestLimitSlotsComeBack: a slot is given back however the handler ends (a
// reply, a panic), so after any number of requests exactly MaxInFlight run at
// once again and the next one is refused.
func TestLimitSlotsComeBack(t *testing.T) {
	const max = 2
	release := make(chan struct{})
	entered := make(chan struct{}, max)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic(http.ErrAbortHandler) // net/http closes the connection, logs nothing
		case "/hold":
			entered <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(Limit(h, Limits{MaxInFlight: max}))
	defer srv.Close()
	get := func(path string) (int, error) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for i := 0; i < 3*max; i++ {
		if _, err := get("/panic"); err == nil {
			t.Fatal("a panicking handler's request got a reply")
		}
		if code, err := get("/ok"); err != nil || code != http.StatusNoContent {
			t.Fatalf("request %d: %d %v", i, code, err)
		}
	}
	codes := make(chan int, max)
	for i := 0; i < max; i++ {
		go func() {
			code, err := get("/hold")
			if err != nil {
				code = -1
			}
			codes <- code
		}()
	}
	for i := 0; i < max; i++ {
		<-entered
	}
	if code, err := get("/ok"); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("with %d requests in flight: %d %v, want 503", max, code, err)
	}
	close(release)
	for i := 0; i < max; i++ {
		if c := <-codes; c != http.StatusNoContent {
			t.Fatalf("held request: %d", c)
		}
	}
}

// TestInFlightNeverOverAdmits: goroutines taking and giving back slots never
// hold more than max at once, and every slot comes back.
func TestInFlightNeverOverAdmits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		max        int64
		goroutines int
	}{
		{"one slot", 1, 8},
		{"three slots", 3, 8},
		{"more slots than takers", 16, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f inFlight
			var held, peak, taken atomic.Int64
			done := make(chan struct{})
			for g := 0; g < tc.goroutines; g++ {
				go func() {
					defer func() { done <- struct{}{} }()
					for i := 0; i < 2000; i++ {
						if !f.take(tc.max) {
							runtime.Gosched()
							continue
						}
						taken.Add(1)
						n := held.Add(1)
						for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
						}
						if i%7 == 0 {
							runtime.Gosched()
						}
						held.Add(-1)
						f.release()
					}
				}()
			}
			for g := 0; g < tc.goroutines; g++ {
				<-done
			}
			if p := peak.Load(); p > tc.max {
				t.Fatalf("%d slots held at once, max %d", p, tc.max)
			}
			if taken.Load() == 0 {
				t.Fatal("no slot was ever taken")
			}
			if n := f.n.Load(); n != 0 {
				t.Fatalf("%d slots still taken after every release", n)
			}
			for i := int64(0); i < tc.max; i++ {
				if !f.take(tc.max) {
					t.Fatalf("slot %d of %d refused on an idle limiter", i+1, tc.max)
				}
			}
			if f.take(tc.max) {
				t.Fatalf("a slot over max %d was taken", tc.max)
			}
		})
	}
}

// TestLimitWholeBodyOutlivesItsDeadline: once Limit has read a whole body,
// the body's deadline (BodyTimeout) no longer applies: a handler that runs
// past it keeps its request's context and answers (net/http's background
// read, started at the body's end, must not time out and cancel it).
func TestLimitWholeBodyOutlivesItsDeadline(t *testing.T) {
	const bodyTimeout = 20 * time.Millisecond
	body := `{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}`
	for _, tc := range []struct {
		name    string
		chunked bool // no Content-Length: the body's end is its last chunk
	}{
		{"content length", false},
		{"chunked", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got, err := readBody(r, 1<<10)
				if err != nil || string(got) != body {
					http.Error(w, "body", http.StatusBadRequest)
					return
				}
				// Outlive the body's deadline several times over; a cancelled
				// context ends the wait at once.
				select {
				case <-r.Context().Done():
					http.Error(w, "context cancelled: "+context.Cause(r.Context()).Error(), http.StatusInternalServerError)
				case <-time.After(10 * bodyTimeout):
					w.WriteHeader(http.StatusNoContent)
				}
			})
			srv := httptest.NewServer(Limit(h, Limits{MaxInFlight: 4, BodyBytes: 1 << 10, BodyTimeout: bodyTimeout}))
			defer srv.Close()
			for i := 0; i < 3; i++ { // the same connection again: its deadlines are right for the next request too
				var rd io.Reader = strings.NewReader(body)
				if tc.chunked {
					rd = io.MultiReader(rd) // hides the length: the client sends chunks
				}
				req, err := http.NewRequest(http.MethodPost, srv.URL, rd)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("request %d: %d %s", i, resp.StatusCode, msg)
				}
				if (req.ContentLength <= 0) != tc.chunked {
					t.Fatalf("request %d: Content-Length %d, chunked %v", i, req.ContentLength, tc.chunked)
				}
			}
		})
	}
}
