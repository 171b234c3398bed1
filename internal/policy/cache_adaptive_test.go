package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/crmauthz/crmauthz/policies"
)

// manyRecords adds n contacts to f (owners and followers among the golden
// users) and returns n distinct inputs, one per contact, and the user ids.
func manyRecords(f *memFacts, n int) ([]Input, []string) {
	users := make([]string, 0, len(f.users))
	for id := range f.users {
		users = append(users, id)
	}
	slices.Sort(users) // the same world in every run
	ins := make([]Input, n)
	for i := range ins {
		id := fmt.Sprintf("n-%d", i)
		f.records["contact\x00"+id] = fmt.Appendf(nil, `{"type":"contact","id":%q,"location_id":"loc-1","owner":%q,"followers":[%q]}`,
			id, users[i%len(users)], users[(i/len(users))%len(users)])
		ins[i] = Input{Subject: users[(i*7)%len(users)], Action: []string{"view", "edit"}[i%2], ResourceType: "contact", ResourceID: id}
	}
	return ins, users
}

// cacheOf is the decision cache of e's revision in service.
func cacheOf(tb testing.TB, e *Engine) *decisionCache {
	tb.Helper()
	c := e.cur.Load().cache
	if c == nil {
		tb.Fatal("no decision cache")
	}
	return c
}

// entries counts the cache's entries in sampled and other slots.
func (c *decisionCache) entries() (sampled, other int) {
	off := c.offset.Load()
	for i := range c.len() {
		if c.entry(i) == nil {
			continue
		}
		if (i+off)&c.sampleMask == 0 {
			sampled++
		} else {
			other++
		}
	}
	return sampled, other
}

// livePages counts the cache's pages of slots that are allocated.
func (c *decisionCache) livePages() int {
	n := 0
	for i := range c.pages {
		if c.pages[i].Load() != nil {
			n++
		}
	}
	return n
}

// decideBoth decides in with both engines and fails when they differ.
func decideBoth(tb testing.TB, cached, plain *Engine, facts Facts, in Input) {
	tb.Helper()
	ctx := context.Background()
	want, _, errWant := plain.Decide(ctx, facts, in)
	got, _, errGot := cached.Decide(ctx, facts, in)
	if (errWant == nil) != (errGot == nil) || got != want {
		tb.Fatalf("%+v: cached %+v (%v), uncached %+v (%v)", in, got, errGot, want, errWant)
	}
}

// TestDecisionCacheSamplesWithoutRepeats: on a mix that never repeats the
// cache stops recording outside its sampled slots and empties them; when the
// mix repeats again it records every miss again and hits. Every answer is the
// uncached engine's.
func TestDecisionCacheSamplesWithoutRepeats(t *testing.T) {
	cached := newDefaultEngine(t)
	plain, err := New(Config{EvalTimeout: testEvalTimeout, FS: policies.FS, DecisionCacheSlots: -1})
	if err != nil {
		t.Fatal(err)
	}
	facts := newMemFacts(t, loadGolden(t))
	// past the first window, but short of a whole sampling window (which
	// would move the sample to other, empty slots)
	ins, _ := manyRecords(facts, 2*fullWindow+1000)
	c := cacheOf(t, cached)
	if c.sampling.Load() {
		t.Fatal("a new cache samples")
	}

	// No input repeats: after the first window the cache samples.
	for _, in := range ins {
		decideBoth(t, cached, plain, facts, in)
	}
	if !c.sampling.Load() {
		t.Fatalf("no repeats over %d decisions and the cache still records every miss", len(ins))
	}
	sampled, other := c.entries()
	if other != 0 || sampled == 0 {
		t.Fatalf("while sampling: %d entries outside the sampled slots (want 0), %d in them (want > 0)", other, sampled)
	}
	if sampled > 2*len(ins)/(1<<sampleSlotsShift) {
		t.Fatalf("%d entries in the sampled slots, more than the sample of %d inputs", sampled, len(ins))
	}
	if pages := c.livePages(); pages != 1 {
		t.Fatalf("while sampling: %d pages of slots alive, want 1 (the sampled one)", pages)
	}

	// A hot set of 1,000 inputs over and over: the sampled slots hit, and
	// the cache records again well before a whole window of sampled lookups
	// (sampledWindow<<sampleSlotsShift decisions) has passed; then nearly
	// everything hits.
	hot := ins[:1000]
	n := sampledWindow << sampleSlotsShift / 2
	for i := range n {
		decideBoth(t, cached, plain, facts, hot[i%len(hot)])
	}
	if c.sampling.Load() {
		t.Fatalf("a hot set of %d inputs over %d decisions and the cache still samples", len(hot), n)
	}
	if pages := c.livePages(); pages != 1<<sampleSlotsShift {
		t.Fatalf("recording again: %d pages of slots alive, want all %d", pages, 1<<sampleSlotsShift)
	}
	h0, m0 := cached.CacheStats()
	for i := range 10 * len(hot) {
		decideBoth(t, cached, plain, facts, hot[i%len(hot)])
	}
	h1, m1 := cached.CacheStats()
	if h1-h0 < uint64(9*len(hot)) {
		t.Fatalf("recording again: %d hits, %d misses over %d decisions of a hot set of %d", h1-h0, m1-m0, 10*len(hot), len(hot))
	}
	if got := c.switches.Load(); got != 2 {
		t.Fatalf("%d changes of mode, want 2 (sampling, then recording)", got)
	}
}

// TestDecisionCacheNoticesOneHotInput: one input repeated among inputs that
// never repeat, its slot outside the sample when the cache starts sampling.
// The sample moves window by window, so the cache records again once it
// reaches that slot, and the input hits.
func TestDecisionCacheNoticesOneHotInput(t *testing.T) {
	e := newDefaultEngine(t)
	c := cacheOf(t, e)
	c.fullWindow, c.sampledWindow = 256, 32
	facts := newMemFacts(t, loadGolden(t))
	ins, _ := manyRecords(facts, 40000)
	hot := -1
	for i, in := range ins {
		if (c.index(&in)+c.offset.Load())&c.sampleMask != 0 {
			hot = i
			break
		}
	}
	if hot < 0 {
		t.Fatal("every input's slot is sampled")
	}
	ctx := context.Background()
	fresh := ins[hot+1:]
	for _, in := range fresh[:2*c.fullWindow] { // no repeats: the cache samples
		if _, _, err := e.Decide(ctx, facts, in); err != nil {
			t.Fatal(err)
		}
	}
	if !c.sampling.Load() {
		t.Fatal("no repeats and the cache still records every miss")
	}
	// Half the decisions are the hot input from now on.
	fresh = fresh[2*c.fullWindow:]
	for i := 0; c.sampling.Load(); i++ {
		if i == len(fresh) {
			t.Fatalf("a hot input in half of %d decisions and the cache still samples (%d changes of mode)", 2*i, c.switches.Load())
		}
		for _, in := range []Input{ins[hot], fresh[i]} {
			if _, _, err := e.Decide(ctx, facts, in); err != nil {
				t.Fatal(err)
			}
		}
	}
	h0, _ := e.CacheStats()
	for range 100 {
		if _, _, err := e.Decide(ctx, facts, ins[hot]); err != nil {
			t.Fatal(err)
		}
	}
	if h1, _ := e.CacheStats(); h1-h0 < 99 {
		t.Fatalf("recording again: %d hits of 100 decisions of the hot input", h1-h0)
	}
}

// TestDecisionCacheAdaptiveIsExact changes facts at random between decisions
// of a mix of repeated and new inputs, with windows short enough that the
// cache changes mode many times, and checks every answer against an engine
// without a cache.
func TestDecisionCacheAdaptiveIsExact(t *testing.T) {
	for _, slots := range []int{1, 64, 1024} {
		t.Run(fmt.Sprintf("slots=%d", slots), func(t *testing.T) {
			cached, plain := cachedAndPlain(t, slots)
			c := cacheOf(t, cached)
			c.fullWindow, c.sampledWindow = 16, 8
			g := loadGolden(t)
			facts := newMemFacts(t, g)
			fresh, users := manyRecords(facts, 4000)
			rng := rand.New(rand.NewPCG(2, uint64(slots)))
			next := 0
			for step := range 6000 {
				if rng.IntN(8) == 0 {
					mutate(facts, rng, users)
				}
				// phases of 500 steps: mostly repeats, then mostly new inputs
				var in Input
				if (step/500)%2 == 0 || rng.IntN(10) == 0 {
					in = g.Cases[rng.IntN(len(g.Cases))].input()
				} else {
					in = fresh[next%len(fresh)]
					next++
				}
				decideBoth(t, cached, plain, facts, in)
			}
			hits, misses := cached.CacheStats()
			if hits == 0 || misses == 0 {
				t.Fatalf("hits %d, misses %d: the test did not exercise both paths", hits, misses)
			}
			if slots > 1<<sampleSlotsShift && c.switches.Load() < 4 {
				t.Fatalf("%d changes of mode: the test did not exercise the sampling", c.switches.Load())
			}
		})
	}
}

// TestDecisionCacheAdaptiveConcurrent decides from several goroutines while
// short windows change the mode (run it with -race); every answer is the
// uncached engine's. The facts do not change.
func TestDecisionCacheAdaptiveConcurrent(t *testing.T) {
	cached := newDefaultEngine(t)
	plain, err := New(Config{EvalTimeout: testEvalTimeout, FS: policies.FS, DecisionCacheSlots: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := cacheOf(t, cached)
	c.fullWindow, c.sampledWindow = 64, 8
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	fresh, _ := manyRecords(facts, 2000)
	want := map[Input]Decision{}
	for _, in := range fresh {
		d, _, err := plain.Decide(context.Background(), facts, in)
		if err != nil {
			t.Fatal(err)
		}
		want[in] = d
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4000 {
				// a hot set of 50 in the first and third quarters, new inputs otherwise
				in := fresh[(w*997+i)%len(fresh)]
				if (i/1000)%2 == 0 {
					in = fresh[(w+i)%50]
				}
				d, _, err := cached.Decide(context.Background(), facts, in)
				if err != nil || d != want[in] {
					errs <- fmt.Errorf("%+v: %+v (%v), want %+v", in, d, err, want[in])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c.switches.Load() == 0 {
		t.Fatal("the mode never changed: the test did not exercise the sampling")
	}
}

// BenchmarkDecideNoRepeats is a mix that never repeats (20,000 records,
// every user and both actions: the first 480,000 decisions are
// distinct): "adaptive" is the default cache (sampling after its first
// window), "recording" a cache that records and stores every miss (the cache
// before sampling), "uncached" no cache.
func BenchmarkDecideNoRepeats(b *testing.B) {
	facts := newMemFacts(b, loadGolden(b))
	ins, users := manyRecords(facts, 20000)
	input := func(i int) Input {
		in := ins[i%len(ins)]
		in.Subject = users[(i/len(ins))%len(users)]
		in.Action = [2]string{"view", "edit"}[(i/len(ins)/len(users))%2]
		return in
	}
	adaptive := newDefaultEngine(b)
	recording := newDefaultEngine(b)
	cacheOf(b, recording).fullWindow = 1 << 40 // never judged: records every miss
	uncached, err := New(Config{FS: policies.FS, DecisionCacheSlots: -1})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		e    *Engine
	}{{"adaptive", adaptive}, {"recording", recording}, {"uncached", uncached}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := startCPU(b)
			i := 0
			for b.Loop() {
				if _, _, err := bc.e.Decide(ctx, facts, input(i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
			cpu.report(b)
		})
	}
}
