package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/policies"
)

// TestDecisionCacheIsExact changes facts at random between decisions and
// checks that a cached engine always answers as an engine without a cache,
// with caches of several sizes (one slot: every input collides).
func TestDecisionCacheIsExact(t *testing.T) {
	for _, slots := range []int{1, 64, 0} {
		t.Run(fmt.Sprintf("slots=%d", slots), func(t *testing.T) {
			cached, plain := cachedAndPlain(t, slots)
			g := loadGolden(t)
			facts := newMemFacts(t, g)
			userIDs := []string{}
			for id := range facts.users {
				userIDs = append(userIDs, id)
			}
			rng := rand.New(rand.NewPCG(1, uint64(slots)))
			ctx := context.Background()
			for step := 0; step < 3000; step++ {
				if rng.IntN(4) == 0 { // change one fact: a user's role/restriction or a record's followers/owner
					mutate(facts, rng, userIDs)
				}
				c := g.Cases[rng.IntN(len(g.Cases))]
				in := c.input()
				want, _, errWant := plain.Decide(ctx, facts, in)
				got, _, errGot := cached.Decide(ctx, facts, in)
				if (errWant == nil) != (errGot == nil) || got != want {
					t.Fatalf("step %d, %s: cached %+v (%v), uncached %+v (%v)", step, c.Name, got, errGot, want, errWant)
				}
			}
			hits, misses := cached.CacheStats()
			if hits == 0 || misses == 0 {
				t.Fatalf("hits %d, misses %d: the test did not exercise both paths", hits, misses)
			}
			if h, m := plain.CacheStats(); h != 0 || m != 0 {
				t.Fatalf("a disabled cache counted %d hits, %d misses", h, m)
			}
		})
	}
}

// mutate rewrites one user or one record of facts.
func mutate(f *memFacts, rng *rand.Rand, userIDs []string) {
	if rng.IntN(2) == 0 {
		id := userIDs[rng.IntN(len(userIDs))]
		role := []string{"admin", "user"}[rng.IntN(2)]
		locs := []string{`["loc-1"]`, `["loc-2"]`, `["loc-1","loc-2"]`}[rng.IntN(3)]
		f.users[id] = fmt.Appendf(nil, `{"id":%q,"role":%q,"location_ids":%s,"assigned_data_only":%v,"contacts_enabled":%v,"opportunities_enabled":true}`,
			id, role, locs, rng.IntN(3) > 0, rng.IntN(5) > 0)
		if rng.IntN(10) == 0 {
			delete(f.users, id)
		}
		return
	}
	keys := make([]string, 0, len(f.records))
	for k := range f.records {
		keys = append(keys, k)
	}
	k := keys[rng.IntN(len(keys))]
	var typ, id string
	for i := range k {
		if k[i] == 0 {
			typ, id = k[:i], k[i+1:]
		}
	}
	owner := userIDs[rng.IntN(len(userIDs))]
	followers := `[]`
	if rng.IntN(2) == 0 {
		followers = fmt.Sprintf(`[%q]`, userIDs[rng.IntN(len(userIDs))])
	}
	f.records[k] = fmt.Appendf(nil, `{"type":%q,"id":%q,"location_id":"loc-1","owner":%q,"followers":%s}`, typ, id, owner, followers)
}

func TestDecisionCacheOffForNondeterministicPolicy(t *testing.T) {
	dir := t.TempDir()
	files := defaultPolicyFiles(t, false)
	files["clock.rego"] = "package crmauthz\n\nnow := time.now_ns()\n"
	writeFiles(t, dir, files)
	e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	for i := 0; i < 3; i++ {
		if _, _, err := e.Decide(context.Background(), facts, g.Cases[0].input()); err != nil {
			t.Fatal(err)
		}
	}
	if h, m := e.CacheStats(); h != 0 || m != 0 {
		t.Fatalf("a policy calling time.now_ns was cached: %d hits, %d misses", h, m)
	}
	// The default policy is deterministic and cached.
	d := newDefaultEngine(t)
	for i := 0; i < 3; i++ {
		if _, _, err := d.Decide(context.Background(), facts, g.Cases[0].input()); err != nil {
			t.Fatal(err)
		}
	}
	if h, m := d.CacheStats(); h != 2 || m != 1 {
		t.Fatalf("default policy: %d hits, %d misses, want 2 and 1", h, m)
	}
}

func TestDecisionCacheNeverHidesAReadError(t *testing.T) {
	e := newDefaultEngine(t)
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	var in Input
	for _, c := range g.Cases {
		if c.Reason == "owner" { // a decision that reads facts
			in = c.input()
			break
		}
	}
	if _, _, err := e.Decide(context.Background(), facts, in); err != nil {
		t.Fatal(err)
	}
	facts.err = fmt.Errorf("disk on fire")
	if d, _, err := e.Decide(context.Background(), facts, in); err == nil {
		t.Fatalf("a read error was answered from the cache: %+v", d)
	}
}

func TestCacheEntryRoundTrip(t *testing.T) {
	body := `{"subject":"u-1","action":"edit","resource":{"type":"contact","id":"c-9"},"target":"u-2"}`
	cut := func(s string) string { // a substring of body, as the request parser makes
		i := strings.Index(body, `"`+s+`"`) + 1
		return body[i : i+len(s)]
	}
	in := Input{Subject: cut("u-1"), Action: cut("edit"), ResourceType: cut("contact"), ResourceID: cut("c-9"), Target: cut("u-2"), HasTarget: true}
	facts := &memFacts{users: map[string][]byte{}, records: map[string][]byte{"contact\x00c-9": []byte(`{"id":"c-9"}`)}}
	c := newDecisionCache(16)
	// six facts read, more than the entry holds inline
	rec := &depRecorder{Facts: facts, seed: c.seed}
	for _, id := range []string{"u-1", "u-2", "u-3", "u-4", "u-5"} {
		facts.users[id] = []byte(`{"id":"` + id + `"}`)
		if _, err := rec.UserJSON(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rec.RecordJSON("contact", "c-9"); err != nil {
		t.Fatal(err)
	}
	want := Decision{Allow: true, Reason: "owner"}
	c.store(c.slot(&in), &in, rec.deps, want)
	if d, ok, _ := c.lookup(facts, &in); !ok || d != want {
		t.Fatalf("lookup after store: %+v %v", d, ok)
	}
	other := in
	other.Target = "u-3"
	if _, ok, _ := c.lookup(facts, &other); ok {
		t.Fatal("a hit for another input")
	}
	noTarget := in
	noTarget.Target, noTarget.HasTarget = "", false
	if _, ok, _ := c.lookup(facts, &noTarget); ok {
		t.Fatal("a hit for the input without its target")
	}
	facts.users["u-5"] = []byte(`{"id":"u-5","role":"admin"}`) // the sixth fact read changes
	if _, ok, _ := c.lookup(facts, &in); ok {
		t.Fatal("a hit after a fact it read changed")
	}
	if e := newCacheEntry(&Input{Subject: strings.Repeat("u", 70000)}, nil, want); e != nil {
		t.Fatal("an entry for a subject longer than the entry holds")
	}
}

// cachedAndPlain returns two engines of the default policy: one with a decision cache of slots
// slots, one without a cache, to compare their answers.
func cachedAndPlain(tb testing.TB, slots int) (cached, plain *Engine) {
	tb.Helper()
	cached, err := New(Config{EvalTimeout: testEvalTimeout, FS: policies.FS, DecisionCacheSlots: slots})
	if err != nil {
		tb.Fatal(err)
	}
	plain, err = New(Config{EvalTimeout: testEvalTimeout, FS: policies.FS, DecisionCacheSlots: -1})
	if err != nil {
		tb.Fatal(err)
	}
	return cached, plain
}
