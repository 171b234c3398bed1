package hlfake

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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

// TestCompanyAndLocation: GET /users/search without companyId is refused as apps/users.json
// (GoHighLevel/highlevel-api-docs) requires it, with HighLevel's BadRequestDTO; under another
// company a location has no users; GET /locations/{locationId} answers the location's companyId
// (apps/locations.json) to that location's token only.
func TestCompanyAndLocation(t *testing.T) {
	f := New()
	f.Tokens["tok-0"] = "loc-0"
	f.Tokens["tok-all"] = "*"
	f.GenWorld(1, 2, 3, 3)
	f.Locations["loc-1"].CompanyID = "co-2"
	srv := httptest.NewServer(f)
	defer srv.Close()
	for _, tc := range []struct {
		name, tok, path string
		code            int
		want            string // the JSON reply, re-encoded
	}{
		{"users without companyId", "tok-0", "/users/search?locationId=loc-0&skip=0&limit=2", 400,
			`{"message":"companyId is required","statusCode":400}`},
		{"users with companyId", "tok-0", "/users/search?companyId=co-1&locationId=loc-0&skip=0&limit=1", 200, ""},
		{"users of another company", "tok-0", "/users/search?companyId=co-2&locationId=loc-0&skip=0&limit=10", 200,
			`{"count":0,"users":[]}`},
		{"location", "tok-0", "/locations/loc-0", 200,
			`{"location":{"companyId":"co-1","id":"loc-0","name":"Location loc-0"}}`},
		{"location with an agency token", "tok-all", "/locations/loc-1", 200,
			`{"location":{"companyId":"co-2","id":"loc-1","name":"Location loc-1"}}`},
		{"location of another token", "tok-0", "/locations/loc-1", 401,
			`{"message":"bad token or version","statusCode":401}`},
		{"unknown location", "tok-all", "/locations/loc-9", 400,
			`{"message":"location not found","statusCode":400}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := getJSON(t, srv, tc.tok, tc.path)
			got, _ := json.Marshal(out)
			if code != tc.code || (tc.want != "" && string(got) != tc.want) {
				t.Fatalf("%d %s, want %d %s", code, got, tc.code, tc.want)
			}
			if tc.want == "" {
				if us, _ := out["users"].([]any); len(us) != 1 || out["count"] != float64(3) {
					t.Fatalf("users %s: want 1 of 3", got)
				}
			}
		})
	}
	if n := f.Hits["GET /locations/{locationId}"]; n != 4 {
		t.Fatalf("%d location requests counted, want 4", n)
	}
}

// TestMoveLocation: a moved location answers its new company to GET /locations/{locationId};
// a users search under the old company lists none of its users (MismatchStatus 0) or is answered
// with MismatchStatus and a BadRequestDTO-shaped body; under the new company it lists them.
func TestMoveLocation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mismatch int
		code     int
		want     string
	}{
		{"no users", 0, 200, `{"count":0,"users":[]}`},
		{"an error", 403, 403, `{"message":"the location loc-0 does not belong to the company co-1","statusCode":403}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := New()
			f.Tokens["tok"] = "*"
			f.GenWorld(1, 1, 3, 3)
			f.MismatchStatus = tc.mismatch
			f.MoveLocation("loc-0", "co-2")
			srv := httptest.NewServer(f)
			defer srv.Close()
			get := func(path string) (int, string) {
				code, out := getJSON(t, srv, "tok", path)
				if us, ok := out["users"].([]any); ok && len(us) > 0 {
					return code, strconv.Itoa(len(us)) + " users"
				}
				got, _ := json.Marshal(out)
				return code, string(got)
			}
			if code, got := get("/users/search?companyId=co-1&locationId=loc-0&skip=0&limit=10"); code != tc.code || got != tc.want {
				t.Errorf("under the old company: %d %s, want %d %s", code, got, tc.code, tc.want)
			}
			if code, got := get("/users/search?companyId=co-2&locationId=loc-0&skip=0&limit=10"); code != 200 || got != "3 users" {
				t.Errorf("under the new company: %d %s, want 3 users", code, got)
			}
			if code, got := get("/locations/loc-0"); code != 200 || !strings.Contains(got, `"companyId":"co-2"`) {
				t.Errorf("the location: %d %s, want companyId co-2", code, got)
			}
		})
	}
}

// getJSON sends GET path to srv with the token and HighLevel's Version header, and returns the
// status and the decoded JSON reply.
func getJSON(tb testing.TB, srv *httptest.Server, tok, path string) (int, map[string]any) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Version", apiVersion)
	resp, err := srv.Client().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, out
}
