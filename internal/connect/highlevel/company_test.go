package highlevel

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel/hlfake"
)

// The fake's routes the company tests count (hlfake.Fake.Hits).
const (
	hitLocation    = "GET /locations/{locationId}"
	hitUsersSearch = "GET /users/search"
	hitUser        = "GET /users/{userId}"
)

func (f *fakeHL) hits(route string) (n int) {
	f.Set(func(f *hlfake.Fake) { n = f.Hits[route] })
	return n
}

// counter reads one series of the connector's /metrics (over loopback HTTP) as a number; 0 when
// absent.
func counter(tb testing.TB, c *Connector, series string) float64 {
	tb.Helper()
	srv := httptest.NewServer(c.AdminHandler())
	defer srv.Close()
	for _, l := range strings.Split(metricsAt(tb, srv.URL), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	return 0
}

const locationRequests200 = `crmauthz_connector_source_requests_total{code="200",connector="highlevel",resource="locations"}`

func newConnector(tb testing.TB, cfg Config) *Connector {
	tb.Helper()
	c, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestCompanyLearned: without a configured company the connector learns it from
// GET /locations/{locationId} (once per location, counted in the metrics) and sends it with
// every users search, which HighLevel refuses without it; the sidecar then holds the fake's
// world. A restart on the same state dir knows the company at once and asks no location again.
// (Before the fix the users search went out without companyId and the sync failed.)
func TestCompanyLearned(t *testing.T) {
	e := newEnv(t, 2)
	e.fake.GenWorld(31, 2, 8, 20)
	e.cfg.CompanyID = ""
	c := newConnector(t, e.cfg)
	if co := c.api.companyID(); co != "" {
		t.Fatalf("company %q before any lookup", co)
	}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	want := e.fake.model(e.cfg.LocationIDs)
	if _, got := e.side.model(t); !sameModel(t, got, want) {
		t.Fatalf("after the sync the index differs from the fake's world:\n%s", diffModels(got, want))
	}
	if n := e.fake.hits(hitLocation); n != 2 {
		t.Fatalf("%d location lookups, want 2 (one per location)", n)
	}
	if n := counter(t, c, locationRequests200); n != 2 {
		t.Fatalf("%s = %v, want 2", locationRequests200, n)
	}
	if co := c.api.companyID(); co != "co-1" {
		t.Fatalf("learned company %q, want co-1", co)
	}
	c.Close()

	t.Run("restart asks no location again", func(t *testing.T) {
		e.fake.Set(func(f *hlfake.Fake) { f.Hits = map[string]int{} })
		c := newConnector(t, e.cfg)
		defer c.Close()
		if co := c.api.companyID(); co != "co-1" {
			t.Fatalf("company after a restart %q, want co-1 from the state dir", co)
		}
		if err := c.Sync(context.Background()); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if n := e.fake.hits(hitLocation); n != 0 {
			t.Fatalf("%d location lookups after a restart, want 0", n)
		}
		if n := e.fake.hits(hitUsersSearch); n < 2 {
			t.Fatalf("%d users searches, want at least one per location", n)
		}
		if _, got := e.side.model(t); !sameModel(t, got, want) {
			t.Fatalf("after the second sync the index differs:\n%s", diffModels(got, want))
		}
	})
}

// TestCompanyErrors: locations of two companies, a location the API will not describe, and a
// configured company that is not the locations' fail the sync with an error naming the
// location (and both companies); no users search is sent and nothing reaches the sink.
func TestCompanyErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		configured string
		fake       func(f *hlfake.Fake)
		want       []string
		mismatch   bool // errCompanyMismatch: Run stops rather than retrying
	}{
		{"locations disagree", "", func(f *hlfake.Fake) { f.Locations["loc-1"].CompanyID = "co-2" },
			[]string{"location loc-1 belongs to company co-2", "location loc-0 to company co-1"}, true},
		{"lookup fails", "", func(f *hlfake.Fake) { delete(f.Locations, "loc-1") },
			[]string{"company of location loc-1", "GET /locations/loc-1", "HTTP 400"}, false},
		{"lookup reply without companyId", "", func(f *hlfake.Fake) { f.Locations["loc-0"].CompanyID = "" },
			[]string{"company of location loc-0", "no location.companyId"}, false},
		{"configured company differs", "co-9", func(*hlfake.Fake) {},
			[]string{"location loc-0 belongs to company co-1, not to the configured company co-9"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 2)
			e.fake.GenWorld(32, 2, 5, 10)
			e.fake.Set(tc.fake)
			e.cfg.CompanyID = tc.configured
			e.cfg.MaxAttempts = 2
			c := newConnector(t, e.cfg)
			err := c.Sync(context.Background())
			if err == nil {
				t.Fatal("Sync succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if errors.Is(err, errCompanyMismatch) != tc.mismatch {
				t.Errorf("errCompanyMismatch %v, want %v", errors.Is(err, errCompanyMismatch), tc.mismatch)
			}
			if n := e.fake.hits(hitUsersSearch); n != 0 {
				t.Fatalf("%d users searches sent", n)
			}
			if seq, m := e.side.model(t); seq != 0 || len(m.Users) != 0 {
				t.Fatalf("the sink got seq %d, %d users", seq, len(m.Users))
			}
			c.Close()
			if !tc.mismatch {
				return
			}
			// on the same state dir (the companies were kept) New fails at once
			if _, err := New(e.cfg); !errors.Is(err, errCompanyMismatch) {
				t.Fatalf("New on the same state dir: %v, want the mismatch", err)
			}
			// on a new one, Run stops with the error rather than retrying it
			cfg := e.cfg
			cfg.StateDir = t.TempDir()
			c = newConnector(t, cfg)
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.Run(ctx); !errors.Is(err, errCompanyMismatch) {
				t.Fatalf("Run: %v, want the mismatch", err)
			}
		})
	}
}

// TestCompanyLookupRetried: while a location cannot be looked up the running connector is not
// ready and says which location; once HighLevel answers it learns the company and syncs.
func TestCompanyLookupRetried(t *testing.T) {
	e := newEnv(t, 2)
	e.fake.GenWorld(33, 2, 5, 10)
	e.cfg.CompanyID = ""
	e.fake.Set(func(f *hlfake.Fake) { delete(f.Locations, "loc-1") })
	r := start(t, e.cfg)
	eventually(t, "readiness to name the location", func() bool {
		resp, err := http.Get(r.admin.URL + "/health/ready")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 503 && strings.Contains(string(raw), "company of location loc-1")
	})
	if n := e.fake.hits(hitUsersSearch); n != 0 {
		t.Fatalf("%d users searches before the company is known", n)
	}
	e.fake.Set(func(f *hlfake.Fake) { f.Locations["loc-1"] = &hlfake.Location{ID: "loc-1", CompanyID: "co-1"} })
	r.waitReady(t)
	want := e.fake.model(e.cfg.LocationIDs)
	if _, got := e.side.model(t); !sameModel(t, got, want) {
		t.Fatalf("the index differs from the fake's world:\n%s", diffModels(got, want))
	}
}

// TestCompanyConfigured: --company-id is checked against each location's once (kept in the
// state dir) and sent with the users search; a restart with another --company-id fails at New,
// naming the location and both companies, before any request.
func TestCompanyConfigured(t *testing.T) {
	e := newEnv(t, 2)
	e.fake.GenWorld(34, 2, 6, 12)
	c := newConnector(t, e.cfg) // newEnv configures co-1, the fake's company
	if co := c.api.companyID(); co != "co-1" {
		t.Fatalf("company %q, want the configured co-1", co)
	}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	c.Close()
	if n := e.fake.hits(hitLocation); n != 2 {
		t.Fatalf("%d location lookups, want 2", n)
	}
	want := e.fake.model(e.cfg.LocationIDs)
	if _, got := e.side.model(t); !sameModel(t, got, want) {
		t.Fatalf("the index differs from the fake's world:\n%s", diffModels(got, want))
	}
	for _, tc := range []struct {
		name, configured string
		err              string
	}{
		{"the same company", "co-1", ""},
		{"no company", "", ""},
		{"another company", "co-2", "location loc-0 belongs to company co-1, not to the configured company co-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.fake.Set(func(f *hlfake.Fake) { f.Hits = map[string]int{} })
			cfg := e.cfg
			cfg.CompanyID = tc.configured
			c, err := New(cfg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errCompanyMismatch) {
					t.Fatalf("New: %v, want %q", err, tc.err)
				}
				var n int
				e.fake.Set(func(f *hlfake.Fake) {
					for _, h := range f.Hits {
						n += h
					}
				})
				if n != 0 {
					t.Fatalf("%d requests before the error", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Sync(context.Background()); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if n := e.fake.hits(hitLocation); n != 0 {
				t.Fatalf("%d location lookups after a restart, want 0", n)
			}
		})
	}
}

// TestAgencyWebhookLearnedCompany: an agency-level UserCreate (companyId, no locationId) taken
// before the company is learned is kept, and read only if the learned company is its own; once
// the company is known, one of another company is ignored at once.
func TestAgencyWebhookLearnedCompany(t *testing.T) {
	e := newEnv(t, 1)
	e.fake.GenWorld(35, 1, 4, 4)
	e.cfg.CompanyID = ""
	c := newConnector(t, e.cfg)
	defer c.Close()
	srv := httptest.NewServer(c.WebhookHandler())
	defer srv.Close()
	agency := func(company, id, webhookID string) []byte {
		return body(map[string]any{"type": "UserCreate", "companyId": company, "id": id, "webhookId": webhookID,
			"timestamp": time.Now().UTC().Format(time.RFC3339)})
	}
	for _, b := range [][]byte{agency("co-2", "u-other", "wh-a1"), agency("co-1", "u-0-01", "wh-a2")} {
		if code, out := post(t, srv.URL, b, sign(b)); code != 200 || out["accepted"] != true {
			t.Fatalf("before the company is known: %d %v", code, out)
		}
	}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if n := e.fake.hits(hitUser); n != 1 {
		t.Fatalf("%d user reads, want 1 (the other company's webhook is not read)", n)
	}
	if n := c.st.pending(); n != 0 {
		t.Fatalf("%d items still waiting", n)
	}
	b := agency("co-2", "u-other", "wh-a3")
	if code, out := post(t, srv.URL, b, sign(b)); code != 200 || out["ignored"] != true {
		t.Fatalf("once the company is known: %d %v", code, out)
	}
}
