package highlevel

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel/hlfake"
)

const companyChanged = `crmauthz_connector_source_anomalies_total{connector="highlevel",kind="company_changed"}`

// logBuffer collects a connector's log lines for a test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCompanyMoved: a location moved to another company after its company was learned. The
// users search under the old company lists no users, or is refused (HighLevel's reference does
// not say which: both), so the connector looks the location's company up again, once per
// reconcile, stores it (counted as the anomaly company_changed, and logged), asks the locations
// that were in the same company too, and searches again: no user is deleted for it. Locations
// that no longer share one company, or a configured company they left, stop it with the
// mismatch, nothing deleted. (Before the fix an empty listing under the old company deleted the
// location's users, and a refused one failed every reconcile until the state dir was replaced.)
func TestCompanyMoved(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mismatch   int      // hlfake.Fake.MismatchStatus
		moved      []string // the locations moved to co-2
		configured string   // --company-id
		lookups    int      // GET /locations/{locationId} in the second sync
		want       string   // the second sync's error ("": none)
	}{
		{"all move, the search lists none", 0, []string{"loc-0", "loc-1"}, "", 2, ""},
		{"all move, the search is refused 400", 400, []string{"loc-0", "loc-1"}, "", 2, ""},
		{"all move, the search is refused 403", 403, []string{"loc-0", "loc-1"}, "", 2, ""},
		{"all move, the search is refused 422", 422, []string{"loc-1", "loc-0"}, "", 2, ""},
		{"one moves", 0, []string{"loc-1"}, "", 2, "location loc-1 belongs to company co-2, location loc-0 to company co-1"},
		{"the configured company is left", 403, []string{"loc-0", "loc-1"}, "co-1", 2,
			"location loc-0 belongs to company co-2, not to the configured company co-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 2)
			e.fake.GenWorld(33, 2, 6, 10)
			e.cfg.CompanyID = tc.configured
			logs := &logBuffer{}
			e.cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			c := newConnector(t, e.cfg)
			defer c.Close()
			if err := c.Sync(context.Background()); err != nil {
				t.Fatalf("first Sync: %v", err)
			}
			before := e.fake.model(e.cfg.LocationIDs)
			e.fake.Set(func(f *hlfake.Fake) { f.MismatchStatus, f.Hits = tc.mismatch, map[string]int{} })
			for _, loc := range tc.moved {
				e.fake.MoveLocation(loc, "co-2")
			}
			err := c.Sync(context.Background())
			if n := e.fake.hits(hitLocation); n != tc.lookups {
				t.Errorf("%d location lookups, want %d", n, tc.lookups)
			}
			if n := counter(t, c, companyChanged); n != float64(len(tc.moved)) {
				t.Errorf("%s = %v, want %d", companyChanged, n, len(tc.moved))
			}
			if !strings.Contains(logs.String(), "kind=company_changed") || !strings.Contains(logs.String(), "looked the company of a location up again") {
				t.Errorf("no log line of the change:\n%s", logs)
			}
			_, got := e.side.model(t)
			if !sameModel(t, got, before) {
				t.Fatalf("the index changed:\n%s", diffModels(got, before))
			}
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errCompanyMismatch) {
					t.Fatalf("second Sync: %v, want the mismatch %q", err, tc.want)
				}
				c.Close()
				if _, err := New(e.cfg); !errors.Is(err, errCompanyMismatch) {
					t.Fatalf("New on the same state dir: %v, want the mismatch", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("second Sync: %v", err)
			}
			if co := c.api.companyID(); co != "co-2" {
				t.Fatalf("company %q, want co-2", co)
			}
			c.Close()
			// a restart on the same state dir knows the new company and asks nothing again
			e.fake.Set(func(f *hlfake.Fake) { f.Hits = map[string]int{} })
			c2 := newConnector(t, e.cfg)
			defer c2.Close()
			if err := c2.Sync(context.Background()); err != nil {
				t.Fatalf("Sync after a restart: %v", err)
			}
			if n := e.fake.hits(hitLocation); n != 0 {
				t.Errorf("%d location lookups after a restart, want 0", n)
			}
		})
	}
}

// TestCompanyRelearnBounded: a location's company is looked up again at most once per
// reconcile, whatever the answers: a location that lists no users under an unchanged company
// costs one lookup per reconcile and its empty listing is taken (its users are deleted); a
// search refused for another reason (a revoked token, which the lookup meets too) costs one
// lookup per reconcile and fails that location, deleting nothing.
func TestCompanyRelearnBounded(t *testing.T) {
	e := newEnv(t, 2)
	e.fake.GenWorld(34, 2, 6, 10)
	e.cfg.CompanyID = ""
	e.cfg.MaxAttempts = 2
	c := newConnector(t, e.cfg)
	defer c.Close()
	if err := c.Sync(context.Background()); err != nil {
		t.Fatalf("first Sync: %v", err)
	}

	// loc-1 loses every user
	e.fake.Set(func(f *hlfake.Fake) {
		for id, u := range f.Users {
			if len(u.Locations) == 1 && u.Locations[0] == "loc-1" {
				delete(f.Users, id)
			} else {
				u.Locations = []string{"loc-0"}
			}
		}
		f.Hits = map[string]int{}
	})
	for round := 1; round <= 2; round++ {
		if err := c.Sync(context.Background()); err != nil {
			t.Fatalf("Sync %d: %v", round, err)
		}
		if n := e.fake.hits(hitLocation); n != round {
			t.Fatalf("after %d reconciles %d location lookups, want %d", round, n, round)
		}
	}
	// the users are the fake's (their records lost the deleted owners and followers)
	_, got := e.side.model(t)
	if want := e.fake.model(e.cfg.LocationIDs); !reflect.DeepEqual(got.Users, want.Users) {
		t.Fatalf("the empty listing was not taken: users %v, want %v", slices.Sorted(maps.Keys(got.Users)), slices.Sorted(maps.Keys(want.Users)))
	}
	if n := counter(t, c, companyChanged); n != 0 {
		t.Errorf("%s = %v, want 0", companyChanged, n)
	}

	// loc-0's token is revoked: its search and its lookup are refused 401
	_, before := e.side.model(t)
	e.fake.Set(func(f *hlfake.Fake) { delete(f.Tokens, "tok-loc-0"); f.Hits = map[string]int{} })
	for round := 1; round <= 2; round++ {
		err := c.Sync(context.Background())
		if err == nil || !strings.Contains(err.Error(), "looking the company of location loc-0 up again") || !strings.Contains(err.Error(), "HTTP 401") {
			t.Fatalf("Sync %d: %v, want the failed lookup", round, err)
		}
		if n := e.fake.hits(hitLocation); n != 2*round { // loc-0's, and loc-1's empty listing's
			t.Fatalf("after %d reconciles %d location lookups, want %d", round, n, 2*round)
		}
	}
	if _, got := e.side.model(t); !sameModel(t, got, before) {
		t.Fatalf("the index changed:\n%s", diffModels(got, before))
	}
}

// TestRunStopsOnMovedLocation: a running connector whose locations no longer share a company
// (found by a periodic reconcile) stops with the mismatch rather than reconciling on.
func TestRunStopsOnMovedLocation(t *testing.T) {
	e := newEnv(t, 2)
	e.fake.GenWorld(35, 2, 4, 6)
	e.cfg.CompanyID = ""
	e.cfg.ReconcileInterval = time.Second
	c := newConnector(t, e.cfg)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !c.ready.Load() {
		if time.Now().After(deadline) {
			t.Fatal("not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.fake.MoveLocation("loc-1", "co-2")
	if err := <-done; !errors.Is(err, errCompanyMismatch) {
		t.Fatalf("Run: %v, want the mismatch", err)
	}
}
