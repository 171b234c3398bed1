package policy

import (
	"context"
	"testing"

	"github.com/crmauthz/crmauthz/policies"
)

// httpBenchCase is a gateway request of the route table and, where there is
// one, the plain decision it amounts to (one check, no target or one).
type httpBenchCase struct {
	name  string
	in    HTTPInput
	plain *Input
}

func httpBenchCases(tb testing.TB) []httpBenchCase {
	seg := func(s ...string) []string { return s }
	plain := func(subject, action, target string) *Input {
		in := &Input{Subject: subject, Action: action, ResourceType: "contact", ResourceID: "c-1"}
		if target != "" {
			in.Target, in.HasTarget = target, true
		}
		return in
	}
	return []httpBenchCase{
		{"view", HTTPInput{Subject: "u-owner", Method: "GET", Path: "/contacts/c-1", Segments: seg("contacts", "c-1")},
			plain("u-owner", "view", "")},
		{"edit", HTTPInput{Subject: "u-fol", Method: "PUT", Path: "/contacts/c-1", Segments: seg("contacts", "c-1"),
			Body: mustBody(tb, `{"firstName":"Ann"}`)}, plain("u-fol", "edit", "")},
		{"delete", HTTPInput{Subject: "u-fol", Method: "DELETE", Path: "/contacts/c-1", Segments: seg("contacts", "c-1")},
			plain("u-fol", "delete", "")},
		{"change_owner_body", HTTPInput{Subject: "u-owner", Method: "PATCH", Path: "/contacts/c-1", Segments: seg("contacts", "c-1"),
			Body: mustBody(tb, `{"assignedTo":"u-fol"}`)}, plain("u-owner", "change_owner", "u-fol")},
		{"followers_list", HTTPInput{Subject: "u-owner", Method: "POST", Path: "/contacts/c-1/followers", Segments: seg("contacts", "c-1", "followers"),
			Body: mustBody(tb, `{"followers":["u-far"]}`)}, plain("u-owner", "add_follower", "u-far")},
		{"followers_list_3", HTTPInput{Subject: "u-owner", Method: "POST", Path: "/contacts/c-1/followers", Segments: seg("contacts", "c-1", "followers"),
			Body: mustBody(tb, `{"followers":["u-fol","u-owner","u-far"]}`)}, nil},
		{"owner_route", HTTPInput{Subject: "u-owner", Method: "PUT", Path: "/contacts/c-1/owner", Segments: seg("contacts", "c-1", "owner"),
			Body: mustBody(tb, `{"owner":"u-fol"}`)}, plain("u-owner", "change_owner", "u-fol")},
		{"unmapped", HTTPInput{Subject: "u-owner", Method: "GET", Path: "/users", Segments: seg("users")}, nil},
		{"invalid_body", HTTPInput{Subject: "u-owner", Method: "PUT", Path: "/contacts/c-1", Segments: seg("contacts", "c-1"),
			Body: mustBody(tb, `[1]`)}, nil},
	}
}

// BenchmarkDecideHTTP decides the gateway's requests of the route table
// (DecideHTTP, the evaluator the engine chooses; never cached) and, beside
// each, the plain decision it amounts to (Decide with the IR interpreter,
// decision cache off: what /v1/decision costs uncached). "all" is every
// case in turn.
func BenchmarkDecideHTTP(b *testing.B) {
	facts := httpFacts()
	e := newDefaultEngine(b)
	uncached, err := New(Config{FS: policies.FS, DecisionCacheSlots: -1, Evaluator: EvaluatorIR})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	cases := httpBenchCases(b)
	for _, c := range cases {
		if _, _, err := e.DecideHTTP(ctx, facts, c.in); err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
	}
	b.Run("all/http", func(b *testing.B) {
		b.ReportAllocs()
		cpu := startCPU(b)
		i := 0
		for b.Loop() {
			if _, _, err := e.DecideHTTP(ctx, facts, cases[i%len(cases)].in); err != nil {
				b.Fatal(err)
			}
			i++
		}
		cpu.report(b)
	})
	for _, c := range cases {
		b.Run(c.name+"/http", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := e.DecideHTTP(ctx, facts, c.in); err != nil {
					b.Fatal(err)
				}
			}
		})
		if c.plain == nil {
			continue
		}
		b.Run(c.name+"/plain", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := uncached.Decide(ctx, facts, *c.plain); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecideHTTPFirst is the first gateway decision of a revision just
// loaded (New: what a reload builds), the engine's evaluator as chosen by
// default: the load itself is not timed.
func BenchmarkDecideHTTPFirst(b *testing.B) {
	facts := httpFacts()
	in := httpBenchCases(b)[0].in
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		e := newDefaultEngine(b)
		b.StartTimer()
		if _, _, err := e.DecideHTTP(ctx, facts, in); err != nil {
			b.Fatal(err)
		}
	}
}
