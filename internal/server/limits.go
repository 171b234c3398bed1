package server

import (
	"net/http"
	"strconv"
)

// overloadedBody is SPEC's error body for a request refused by LimitInFlight.
const overloadedBody = `{"error":{"code":"overloaded","message":"too many requests in flight; retry shortly"}}`

// LimitInFlight caps the requests h serves at once. Beyond max, a request is
// answered at once with 503 "overloaded" and Retry-After: 1, instead of
// queueing without bound (memory) or timing out (latency): the gateway can
// retry or fail over, and a denial is never mistaken for an allow.
// max <= 0 means no limit.
func LimitInFlight(h http.Handler, max int, onReject func()) http.Handler {
	if max <= 0 {
		return h
	}
	sem := make(chan struct{}, max)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
			h.ServeHTTP(w, r)
		default:
			if onReject != nil {
				onReject()
			}
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Length", strconv.Itoa(len(overloadedBody)))
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(overloadedBody))
		}
	})
}
