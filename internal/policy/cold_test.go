package policy

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/coldtest"
	"github.com/crmauthz/crmauthz/policies"
)

// BenchmarkDecideCold is an uncached decision (IR interpreter) as it runs in
// the server: with the caches cold. Between two decisions the server runs
// net/http, the kernel's loopback and the load generator on the same cores,
// which evict the interpreter's code and data; a decision's facts are new
// bytes (bbolt's pages) and its ids new strings. Here each decision is one
// of coldWorld copies of the golden cases (every id renamed, every fact its
// own JSON bytes, so no two decisions in a row read the same memory), and
// between two decisions the loop reads evict bytes of a 64 MiB buffer at
// random lines (and, for "+code", runs some unrelated code: JSON, strconv,
// sorting) — outside the timed part. Only the decision is timed, one clock
// reading on each side: decide-ns/op is the mean, p50-ns the median (a
// preemption lands in the mean, hardly in the median). See BENCHMARKS.md,
// "CPU per decision", session 5.
func BenchmarkDecideCold(b *testing.B) {
	e, err := New(Config{FS: policies.FS, DecisionCacheSlots: -1, Evaluator: EvaluatorIR})
	if err != nil {
		b.Fatal(err)
	}
	world := newColdWorld(b, e, coldWorld)
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	ctx := context.Background()
	for _, bc := range []struct {
		name  string
		evict int
		code  bool
	}{
		{"hot", 0, false}, // the same loop, nothing evicted
		{"evict=256KiB", 256 << 10, false},
		{"evict=2MiB", 2 << 20, false},
		{"evict=2MiB+code", 2 << 20, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ev := evictor{coldtest.Evictor{Buf: buf, Seed: 1}}
			durs := make([]time.Duration, 0, 1<<16)
			facts := &coldFacts{}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c := &world[i%len(world)]
				i++
				ev.Touch(bc.evict)
				if bc.code {
					ev.code(c)
				}
				facts.cur = c
				t0 := time.Now()
				_, _, err := e.Decide(ctx, facts, c.in)
				durs = append(durs, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
			}
			var sum time.Duration
			for _, d := range durs {
				sum += d
			}
			slices.Sort(durs)
			b.ReportMetric(float64(sum)/float64(len(durs)), "decide-ns/op")
			b.ReportMetric(float64(durs[len(durs)/2]), "p50-ns")
			sink = ev.Sum
		})
	}
}

// coldWorld is how many renamed copies of the golden cases the cold
// benchmark decides in turn (75 cases each: 37,500 decisions, ~25 MB with
// their facts, more than the L2 caches hold).
const coldWorld = 500

// sink keeps the evictor's reads alive.
var sink uint64

// coldCase is one decision of the cold benchmark: its input and its facts,
// each its own bytes.
type coldCase struct {
	in                   Input
	user, record, target []byte
	allow                bool
	reason               string
}

// coldFacts answers the facts of the current case (and nothing else: a
// read of another id is absent, as in the golden world).
type coldFacts struct{ cur *coldCase }

func (f *coldFacts) UserJSON(id string) ([]byte, error) {
	switch c := f.cur; {
	case id == c.in.Subject:
		return c.user, nil
	case c.in.HasTarget && id == c.in.Target:
		return c.target, nil
	}
	return nil, nil
}

func (f *coldFacts) RecordJSON(typ, id string) ([]byte, error) {
	if c := f.cur; typ == c.in.ResourceType && id == c.in.ResourceID {
		return c.record, nil
	}
	return nil, nil
}

// newColdWorld makes n copies of the golden cases, the k-th with every user
// and record id suffixed "~k" (in the input and in the facts' JSON), the
// cases of all copies interleaved at random; it checks each copy's first
// decision against the golden answer.
func newColdWorld(tb testing.TB, e *Engine, n int) []coldCase {
	tb.Helper()
	g := loadGolden(tb)
	facts := newMemFacts(tb, g)
	var ids []string
	for id := range facts.users {
		ids = append(ids, id)
	}
	for k := range facts.records {
		ids = append(ids, k[strings.IndexByte(k, 0)+1:])
	}
	world := make([]coldCase, 0, n*len(g.Cases))
	for k := range n {
		suffix := "~" + strconv.Itoa(k)
		var pairs []string
		for _, id := range ids {
			pairs = append(pairs, `"`+id+`"`, `"`+id+suffix+`"`)
		}
		rep := strings.NewReplacer(pairs...)
		rename := func(id string) string {
			if slices.Contains(ids, id) {
				return id + suffix
			}
			return id
		}
		doc := func(js []byte) []byte {
			if js == nil {
				return nil
			}
			return []byte(rep.Replace(string(js)))
		}
		for _, gc := range g.Cases {
			in := gc.input()
			c := coldCase{in: in, allow: gc.Allow, reason: gc.Reason,
				user: doc(facts.users[in.Subject]), record: doc(facts.records[in.ResourceType+"\x00"+in.ResourceID])}
			if in.HasTarget {
				c.target = doc(facts.users[in.Target])
			}
			c.in.Subject, c.in.ResourceID = rename(in.Subject), rename(in.ResourceID)
			if in.HasTarget {
				c.in.Target = rename(in.Target)
			}
			world = append(world, c)
		}
	}
	for i := range world[:len(g.Cases)] {
		c := &world[i]
		d, _, err := e.Decide(context.Background(), &coldFacts{cur: c}, c.in)
		if err != nil || d.Allow != c.allow || d.Reason != c.reason {
			tb.Fatalf("cold world case %d: %+v %v, want %v %s", i, d, err, c.allow, c.reason)
		}
	}
	ev := coldtest.Evictor{Seed: 7}
	for i := len(world) - 1; i > 0; i-- { // shuffle
		j := int(ev.Next() % uint64(i+1))
		world[i], world[j] = world[j], world[i]
	}
	return world
}

// evictor reads memory (coldtest.Evictor) and runs code between two decisions.
type evictor struct{ coldtest.Evictor }

// code runs code of other packages on c (as a server's HTTP layer does
// between two decisions: JSON, formatting, sorting).
//
//go:noinline
func (ev *evictor) code(c *coldCase) {
	body, _ := json.Marshal(map[string]any{"subject": c.in.Subject, "action": c.in.Action,
		"resource": map[string]string{"type": c.in.ResourceType, "id": c.in.ResourceID}})
	var back map[string]any
	_ = json.Unmarshal(body, &back)
	keys := strings.Fields(strings.ReplaceAll(string(body), `"`, " "))
	slices.Sort(keys)
	ev.Sum += uint64(len(strconv.AppendQuote(nil, strings.Join(keys, ","))) + len(back))
}
