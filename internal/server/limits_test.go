package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
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
	srv := httptest.NewServer(LimitInFlight(h, max, func() { rejected.Add(1) }))
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
