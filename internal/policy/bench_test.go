package policy

import (
	"context"
	"testing"
)

// BenchmarkDecide runs the golden cases through Decide against in-memory facts
// returning fixed JSON bytes, one case per iteration in turn.
func BenchmarkDecide(b *testing.B) {
	g := loadGolden(b)
	facts := newMemFacts(b, g)
	e := newDefaultEngine(b)
	inputs := make([]Input, len(g.Cases))
	for i, c := range g.Cases {
		inputs[i] = c.input()
	}
	ctx := context.Background()
	b.Run("golden", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, _, err := e.Decide(ctx, facts, inputs[i%len(inputs)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	// Typical requests: the owner and a follower editing a contact.
	for _, bc := range []struct {
		name string
		in   Input
	}{
		{"owner", Input{Subject: "u-owner", Action: "edit", ResourceType: "contact", ResourceID: "c-1"}},
		{"follower", Input{Subject: "u-fol", Action: "edit", ResourceType: "contact", ResourceID: "c-1"}},
		{"not_assigned", Input{Subject: "u-none", Action: "view", ResourceType: "opportunity", ResourceID: "o-1"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := e.Decide(ctx, facts, bc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("follower/cancelable-context", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		in := Input{Subject: "u-fol", Action: "edit", ResourceType: "contact", ResourceID: "c-1"}
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := e.Decide(ctx, facts, in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("follower/parallel", func(b *testing.B) {
		in := Input{Subject: "u-fol", Action: "edit", ResourceType: "contact", ResourceID: "c-1"}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := e.Decide(ctx, facts, in); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
