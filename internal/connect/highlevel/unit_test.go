package highlevel

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel/hlfake"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// fakeClock is a clock that moves only when a timer of the limiter would fire.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestLimiterWindow: the limiter grants max requests per window and counts the day; a pause
// holds a resource; resources are independent.
func TestLimiterWindow(t *testing.T) {
	clk := &fakeClock{now: time.Date(2026, 1, 1, 23, 59, 0, 0, time.UTC)}
	l := newLimiter(3, 10*time.Second, 5, clk.Now)
	ready := func(res string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		return l.wait(ctx, res) == nil
	}
	for i := range 3 {
		if !ready("a") {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	if ready("a") {
		t.Fatal("a 4th request within 10 s")
	}
	if !ready("b") {
		t.Fatal("another resource held by a's window")
	}
	clk.add(10*time.Second + l.margin)
	for i := range 2 {
		if !ready("a") {
			t.Fatalf("request %d refused after the window passed", i)
		}
	}
	// a's daily budget (5) is used up until the next UTC day
	clk.add(11 * time.Second)
	if ready("a") {
		t.Fatal("a 6th request in the day")
	}
	clk.add(time.Minute) // the next day
	if !ready("a") {
		t.Fatal("refused on a new day")
	}
	l.pause("b", time.Minute)
	if ready("b") {
		t.Fatal("a paused resource served")
	}
	clk.add(time.Minute)
	if !ready("b") {
		t.Fatal("refused after its pause")
	}
}

// TestFactsFromAPI: HighLevel's objects become facts with the defaults of docs/reference.md §1.1, and each bad fact is
// normalised and reported with its kind.
func TestFactsFromAPI(t *testing.T) {
	var got []string
	report := func(kind, _, _, _ string) { got = append(got, kind) }
	t.Run("record", func(t *testing.T) {
		got = nil
		fs := []string{"u-9", "u-1", "u-1", "u-own"}
		for i := range 12 {
			fs = append(fs, "u-x"+string(rune('a'+i)))
		}
		f := recordFromAPI(kindOpportunity, hlRecord{ID: "o-1", LocationID: "l", AssignedTo: "u-own", Followers: fs, ContactID: "c-1"}, report)
		want := []string{"u-1", "u-9", "u-xa", "u-xb", "u-xc", "u-xd", "u-xe", "u-xf", "u-xg", "u-xh"}
		if !slices.Equal(f.Followers, want) || f.ContactID != "c-1" || f.Owner != "u-own" {
			t.Fatalf("%+v", f)
		}
		if !slices.Equal(got, []string{anomalyDuplicateFollower, anomalyOwnerFollower, anomalyTooManyFollowers}) {
			t.Fatalf("anomalies %v", got)
		}
	})
	t.Run("contact without followers", func(t *testing.T) {
		got = nil
		f := recordFromAPI(kindContact, hlRecord{ID: "c-1", LocationID: "l", ContactID: "ignored"}, report)
		raw, _ := json.Marshal(f)
		if string(raw) != `{"type":"contact","id":"c-1","location_id":"l","owner":"","followers":[]}` || len(got) != 0 {
			t.Fatalf("%s %v", raw, got)
		}
	})
	t.Run("users", func(t *testing.T) {
		var u hlUser
		json.Unmarshal([]byte(`{"id":"u-1","roles":{"role":"user","locationIds":["l2","l1","l2"]},"permissions":{"assignedDataOnly":true,"contactsEnabled":false}}`), &u)
		f, ok := userFromAPI(u, report)
		if !ok || !slices.Equal(f.LocationIDs, []string{"l1", "l2"}) || !f.AssignedDataOnly || f.ContactsEnabled || !f.OpportunitiesEnabled {
			t.Fatalf("%+v", f)
		}
		got = nil
		for _, raw := range []string{`{"id":"u-2","roles":{"role":"owner"}}`, `{"id":"u-3"}`} {
			var u hlUser
			json.Unmarshal([]byte(raw), &u)
			if _, ok := userFromAPI(u, report); ok {
				t.Fatalf("%s: not deleted", raw)
			}
		}
		if !slices.Equal(got, []string{anomalyUnknownRole, anomalyUnknownRole}) {
			t.Fatalf("anomalies %v", got)
		}
		json.Unmarshal([]byte(`{"id":"u-4","deleted":true,"roles":{"role":"user"}}`), &u)
		if _, ok := userFromAPI(u, report); ok {
			t.Fatal("a deleted user written")
		}
	})
}

// TestReconcileKeepsNewerWebhookWrites: a listing read before a webhook's write (a delete, or an
// upsert) does not overwrite it, and a listing that misses an object written meanwhile does not
// delete it.
func TestReconcileKeepsNewerWebhookWrites(t *testing.T) {
	e := newEnv(t, 1)
	e.fake.GenWorld(8, 1, 5, 6)
	c, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	startGen := c.seq()
	fact := func(owner string) json.RawMessage {
		raw, _ := json.Marshal(recordFact{Type: kindContact, ID: "c-0-000", LocationID: "loc-0", Owner: owner, Followers: []string{}})
		return raw
	}
	// a webhook deletes c-0-000, another writes c-new, after the reconcile began
	if err := c.commit(ctx, []change{{kind: kindContact, id: "c-0-000"}}, nil, false); err != nil {
		t.Fatal(err)
	}
	newFact, _ := json.Marshal(recordFact{Type: kindContact, ID: "c-new", LocationID: "loc-0", Followers: []string{}})
	if err := c.commit(ctx, []change{{kind: kindContact, id: "c-new", fact: newFact}}, nil, false); err != nil {
		t.Fatal(err)
	}
	seq := c.seq()
	// the reconcile's stale listing still holds c-0-000, and not c-new
	if err := c.commit(ctx, []change{{kind: kindContact, id: "c-0-000", fact: fact("u-0-01"), guard: true, guardGen: startGen}}, nil, false); err != nil {
		t.Fatal(err)
	}
	gone, err := c.absent(kindContact, "loc-0", map[string]change{"c-0-000": {}}, startGen)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gone {
		if g.id == "c-new" {
			t.Fatal("c-new, written after the listing began, would be deleted")
		}
	}
	if c.seq() != seq {
		t.Fatalf("the stale listing wrote events (seq %d, was %d)", c.seq(), seq)
	}
	_, m := e.side.model(t)
	if _, ok := m.Records[keyOf("c-0-000")]; ok {
		t.Fatal("the deleted contact came back")
	}
	if _, ok := m.Records[keyOf("c-new")]; !ok {
		t.Fatal("the new contact is missing")
	}
}

// TestRateLimitHeaders: the connector waits when X-RateLimit-Remaining reaches 0, so a fake
// allowing only 5 requests per second never has to refuse one.
func TestRateLimitHeaders(t *testing.T) {
	e := newEnv(t, 1)
	e.fake.GenWorld(10, 1, 5, 40)
	e.fake.Set(func(f *hlfake.Fake) { f.Limit, f.Window = 5, time.Second })
	e.cfg.PageSize = 5
	c, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	var over, total int
	e.fake.Set(func(f *hlfake.Fake) { over = f.OverLimit })
	total = e.fake.Total()
	if over != 0 || total < 10 {
		t.Fatalf("%d of %d requests over the fake's limit", over, total)
	}
}

// TestPruneDedupe: webhook ids older than the cutoff are forgotten, newer ones kept.
func TestPruneDedupe(t *testing.T) {
	st, err := openState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	for i, age := range []time.Duration{30 * time.Hour, 26 * time.Hour, time.Hour, 0} {
		w := workItem{Op: "delete", Kind: kindContact, ID: string(rune('a' + i))}
		if _, _, err := st.enqueue(string(rune('a'+i)), w, now.Add(-age), 100); err != nil {
			t.Fatal(err)
		}
	}
	n, err := st.pruneDedupe(now.Add(-25 * time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want 2", n, err)
	}
	for i, want := range []enqueueResult{enqueued, enqueued, duplicate, duplicate} {
		w := workItem{Op: "delete", Kind: kindContact, ID: string(rune('a' + i))}
		if res, _, _ := st.enqueue(string(rune('a'+i)), w, now, 100); res != want {
			t.Fatalf("id %d: %v, want %v", i, res, want)
		}
	}
}

func keyOf(id string) refmodel.Key { return refmodel.Key{Type: kindContact, ID: id} }

// TestSharedTokenBudget: one token file for several locations (an agency token) shares the
// company's request budget; a token per location, or one location, keeps the location's.
func TestSharedTokenBudget(t *testing.T) {
	for _, tc := range []struct {
		name   string
		file   bool
		locs   []string
		shared bool
	}{
		{"token dir", false, []string{"loc-0", "loc-1"}, false},
		{"one file, one location", true, []string{"loc-0"}, false},
		{"one file, two locations", true, []string{"loc-0", "loc-1"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 2)
			e.cfg.LocationIDs = tc.locs
			if tc.file {
				e.cfg.TokenFile, e.cfg.TokenDir = e.cfg.TokenDir+"/loc-0", ""
			}
			c, err := New(e.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.api.shared != tc.shared {
				t.Fatalf("shared %v, want %v", c.api.shared, tc.shared)
			}
		})
	}
}
