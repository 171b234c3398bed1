package hlfake

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// TestRateLimitHeaders: every answer carries the five rate-limit headers HighLevel documents
// (docs/oauth/Authorization.md of GoHighLevel/highlevel-api-docs, "What are current rate limits
// for API 2.0?"), with the fake's limits, and the remaining counts go down per resource.
func TestRateLimitHeaders(t *testing.T) {
	f := New()
	f.Tokens["tok"] = "*"
	f.GenWorld(1, 1, 3, 3)
	srv := httptest.NewServer(f)
	defer srv.Close()
	get := func(tb testing.TB) http.Header {
		tb.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/users/search?companyId=co-1&locationId=loc-0&skip=0&limit=10", nil)
		if err != nil {
			tb.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer tok")
		req.Header.Set("Version", apiVersion)
		resp, err := srv.Client().Do(req)
		if err != nil {
			tb.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			tb.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header
	}
	first, second := get(t), get(t)
	for _, tc := range []struct {
		header        string
		first, second int
	}{
		{"X-RateLimit-Limit-Daily", 200000, 200000},
		{"X-RateLimit-Daily-Remaining", 199999, 199998},
		{"X-RateLimit-Interval-Milliseconds", 10000, 10000},
		{"X-RateLimit-Max", 100, 100},
		{"X-RateLimit-Remaining", 99, 98},
	} {
		t.Run(tc.header, func(t *testing.T) {
			for i, h := range []http.Header{first, second} {
				want := []int{tc.first, tc.second}[i]
				if got := h.Get(tc.header); got != strconv.Itoa(want) {
					t.Fatalf("answer %d: %s = %q, want %d", i+1, tc.header, got, want)
				}
			}
		})
	}
}
