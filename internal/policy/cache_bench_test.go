package policy

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"slices"
	"testing"
)

// The decision cache's cost to the garbage collector and on its own paths
// (BENCHMARKS.md, "Session 6: the collector"):
//
//	go test -run '^$' -bench 'Cache(Collect|Hit|Store)' -benchmem ./internal/policy/

// cacheBenchWorld is n inputs with UUID-like ids, each reading its subject,
// its record and its target, and the facts they read.
func cacheBenchWorld(n int) ([]Input, *memFacts) {
	facts := &memFacts{users: map[string][]byte{}, records: map[string][]byte{}}
	ins := make([]Input, n)
	for i := range ins {
		u, t, r := fmt.Sprintf("%08x-aaaa-4bbb-8ccc-%012x", i, i), fmt.Sprintf("%08x-dddd-4eee-8fff-%012x", i%977, i), fmt.Sprintf("%08x-1111-4222-8333-%012x", i, i)
		ins[i] = Input{Subject: u, Action: "reassign", ResourceType: "opportunity", ResourceID: r, Target: t, HasTarget: true}
		facts.users[u] = fmt.Appendf(nil, `{"id":%q,"role":"user","location_ids":["loc-1"]}`, u)
		facts.users[t] = fmt.Appendf(nil, `{"id":%q,"role":"user","location_ids":["loc-2"]}`, t)
		facts.records["opportunity\x00"+r] = fmt.Appendf(nil, `{"type":"opportunity","id":%q,"owner":%q}`, r, u)
	}
	return ins, facts
}

// storeAll decides each input of ins into c (reading its facts through a
// recorder, as Decide does).
func storeAll(tb testing.TB, c *decisionCache, ins []Input, facts Facts) {
	for i := range ins {
		in := &ins[i]
		rec := c.recorder(facts)
		for _, id := range []string{in.Subject, in.Target} {
			if _, err := rec.UserJSON(id); err != nil {
				tb.Fatal(err)
			}
		}
		if _, err := rec.RecordJSON(in.ResourceType, in.ResourceID); err != nil {
			tb.Fatal(err)
		}
		c.store(c.slot(in), in, rec.deps, Decision{Allow: i%3 == 0, Reason: []string{"owner", "follower", "not_assigned"}[i%3]})
		c.release(rec)
	}
}

// BenchmarkCacheCollect is a full collection with a cache of the default
// size alive, empty and full: what each cycle of the collector pays for it.
func BenchmarkCacheCollect(b *testing.B) {
	for _, full := range []bool{false, true} {
		b.Run(map[bool]string{false: "empty", true: "full"}[full], func(b *testing.B) {
			c := newDecisionCache(defaultCacheSlots)
			if full {
				ins, facts := cacheBenchWorld(4 * defaultCacheSlots)
				storeAll(b, c, ins, facts)
			}
			n := 0
			for i := range c.len() {
				if c.entry(i) != nil {
					n++
				}
			}
			runtime.GC()
			for b.Loop() {
				runtime.GC()
			}
			s := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}, {Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/objects:objects"}}
			metrics.Read(s)
			b.ReportMetric(float64(n), "entries")
			b.ReportMetric(float64(s[0].Value.Uint64())/(1<<20), "scan-MiB")
			b.ReportMetric(float64(s[1].Value.Uint64())/(1<<20), "live-MiB")
			b.ReportMetric(float64(s[2].Value.Uint64()), "objects")
			runtime.KeepAlive(c)
		})
	}
}

// BenchmarkCacheHit is a lookup that hits: the input compared, its three
// facts re-read and hashed.
func BenchmarkCacheHit(b *testing.B) {
	ins, facts := cacheBenchWorld(1024)
	c := newDecisionCache(defaultCacheSlots)
	storeAll(b, c, ins, facts)
	// the inputs whose slot another one did not take
	ins = slices.DeleteFunc(ins, func(in Input) bool { _, ok, _ := c.lookup(facts, &in); return !ok })
	i := 0
	for b.Loop() {
		if _, ok, _ := c.lookup(facts, &ins[i%len(ins)]); !ok {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkCacheStore is a miss's recording: three facts noted and hashed,
// an entry made and stored.
func BenchmarkCacheStore(b *testing.B) {
	ins, facts := cacheBenchWorld(1024)
	c := newDecisionCache(defaultCacheSlots)
	i := 0
	for b.Loop() {
		storeAll(b, c, ins[i%len(ins):i%len(ins)+1], facts)
		i++
	}
}
