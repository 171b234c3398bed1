package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"

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
	if e := c.newEntry(&Input{Subject: strings.Repeat("u", entryData+1)}, nil, want); e != nil {
		t.Fatal("an entry for a subject longer than the entry holds")
	}
}

// TestCacheEntryIsPointerFree: the collector marks an entry without scanning
// it only while cacheEntry holds no pointer; and it is one size class.
func TestCacheEntryIsPointerFree(t *testing.T) {
	if p := pointerIn(reflect.TypeFor[cacheEntry](), "cacheEntry"); p != "" {
		t.Fatalf("cacheEntry holds a pointer: %s", p)
	}
	if size := unsafe.Sizeof(cacheEntry{}); size != 256 {
		t.Fatalf("cacheEntry is %d bytes, want 256 (adjust entryData)", size)
	}
	// The decision an entry stores is Allow and Reason: a new field of
	// Decision must be stored too.
	if n := reflect.TypeFor[Decision]().NumField(); n != 2 {
		t.Fatalf("Decision has %d fields; the cache entry stores Allow and Reason only", n)
	}
}

// pointerIn names a pointer inside a value of type t ("" if none).
func pointerIn(t reflect.Type, path string) string {
	switch t.Kind() {
	case reflect.Array:
		return pointerIn(t.Elem(), path+"[]")
	case reflect.Struct:
		for i := range t.NumField() {
			if p := pointerIn(t.Field(i).Type, path+"."+t.Field(i).Name); p != "" {
				return p
			}
		}
		return ""
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return ""
	}
	return path + " (" + t.String() + ")"
}

// TestCacheEntryBounds: what an entry cannot hold is not cached (the lookup
// misses and the policy decides), and what it can is answered whole.
func TestCacheEntryBounds(t *testing.T) {
	in := Input{Subject: "u-1", Action: "view", ResourceType: "contact", ResourceID: "c-1"}
	user := func(id string) factDep { return factDep{id: id, present: true, n: 2, sum: 7} }
	cases := []struct {
		name   string
		in     Input
		deps   []factDep
		reason string
		cached bool
	}{
		{"input fields only", in, []factDep{user("u-1"), {record: true, typ: "contact", id: "c-1", present: true, n: 3}}, "owner", true},
		{"facts outside the input", in, []factDep{user("u-9"), {record: true, typ: "deal", id: "d-1"}}, "", true},
		{"maxDeps facts", in, []factDep{user("a"), user("b"), user("c"), user("d"), user("e"), user("f")}, "r", true},
		{"more facts than maxDeps", in, []factDep{user("a"), user("b"), user("c"), user("d"), user("e"), user("f"), user("g")}, "r", false},
		{"strings that just fit", Input{Subject: strings.Repeat("s", entryData-10), Action: "view", ResourceType: "x", ResourceID: "y"},
			[]factDep{user(strings.Repeat("u", 4))}, "r", true},
		{"an id past the data", Input{Subject: strings.Repeat("s", entryData-10), Action: "view", ResourceType: "x", ResourceID: "y"},
			[]factDep{user(strings.Repeat("u", 5))}, "r", false},
		{"the target", Input{Subject: "u-1", Action: "assign", ResourceType: "contact", ResourceID: "c-1", Target: "u-2", HasTarget: true},
			[]factDep{user("u-2")}, "assign", true},
		{"a fact of a GiB", in, []factDep{{id: "u-1", present: true, n: depLenMask + 1}}, "r", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newDecisionCache(16)
			want := Decision{Allow: true, Reason: tc.reason}
			e := c.newEntry(&tc.in, tc.deps, want)
			if (e != nil) != tc.cached {
				t.Fatalf("entry %v, want cached %v", e != nil, tc.cached)
			}
			if e == nil {
				return
			}
			if got := entryDeps(c, e, &tc.in); !slices.Equal(got, tc.deps) {
				t.Fatalf("deps %+v, want %+v", got, tc.deps)
			}
			facts := &memFacts{users: map[string][]byte{}, records: map[string][]byte{}}
			for _, d := range tc.deps {
				if d.present && !d.record {
					facts.users[d.id] = []byte(strings.Repeat("x", d.n))
				}
			}
			rec := &depRecorder{Facts: facts, seed: c.seed}
			for _, d := range tc.deps {
				if d.record {
					rec.RecordJSON(d.typ, d.id)
				} else {
					rec.UserJSON(d.id)
				}
			}
			c.store(c.slot(&tc.in), &tc.in, rec.deps, want)
			if d, ok, _ := c.lookup(facts, &tc.in); !ok || d != want {
				t.Fatalf("lookup: %+v %v, want %+v", d, ok, want)
			}
		})
	}
}

// entryDeps decodes e's facts read.
func entryDeps(c *decisionCache, e *cacheEntry, in *Input) []factDep {
	fields := inputFields(in)
	var deps []factDep
	for _, d := range e.deps[:e.ndeps] {
		f := factDep{record: d.n&depRecord != 0, present: d.n&depPresent != 0, n: int(d.n & depLenMask), sum: d.sum}
		switch {
		case d.typ < numFields:
			f.typ = fields[d.typ]
		case d.typ >= typeBase:
			f.typ = c.types.get(int(d.typ - typeBase))
		}
		if d.id < numFields {
			f.id = fields[d.id]
		} else {
			f.id = string(e.data[d.idOff : d.idOff+d.idLen])
		}
		deps = append(deps, f)
	}
	return deps
}

// TestCacheReasonsBounded: past maxReasons distinct reasons a decision is
// decided every time (not cached), still with its own reason.
func TestCacheReasonsBounded(t *testing.T) {
	c := newDecisionCache(1)
	facts := &memFacts{users: map[string][]byte{"u-1": []byte(`{}`)}}
	in := Input{Subject: "u-1", Action: "view", ResourceType: "contact", ResourceID: "c-1"}
	for i := range maxReasons + 10 {
		want := Decision{Reason: fmt.Sprintf("reason %d", i)}
		rec := &depRecorder{Facts: facts, seed: c.seed}
		rec.UserJSON("u-1")
		c.store(c.slot(&in), &in, rec.deps, want)
		d, ok, _ := c.lookup(facts, &in)
		if i < maxReasons && (!ok || d != want) {
			t.Fatalf("reason %d: %+v %v, want a hit with %+v", i, d, ok, want)
		}
		if i >= maxReasons && ok && d.Reason != fmt.Sprintf("reason %d", maxReasons-1) {
			t.Fatalf("reason %d: a hit with %+v", i, d)
		}
	}
	if _, ok := c.reasons.index("reason 1"); !ok {
		t.Fatal("a full table forgot a reason it holds")
	}
}

// TestStringTableConcurrent: entries' readers and a growing table, under
// -race.
func TestStringTableConcurrent(t *testing.T) {
	var tab stringTable
	tab.max = 1000
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				s := fmt.Sprint((i*7 + w) % 800)
				j, ok := tab.index(s)
				if !ok {
					t.Errorf("table full at %q", s)
					return
				}
				if got := tab.get(j); got != s {
					t.Errorf("get(%d) = %q, want %q", j, got, s)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(*tab.list.Load()); n != 800 {
		t.Fatalf("%d strings, want 800", n)
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
