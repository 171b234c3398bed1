package policy

import (
	"context"
	"encoding/json"
	"io/fs"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/crmauthz/crmauthz/policies"
)

// BenchmarkDecide runs the golden cases through Decide against in-memory facts
// returning fixed JSON bytes, one case per iteration in turn.
func BenchmarkDecide(b *testing.B) {
	g := loadGolden(b)
	facts := newMemFacts(b, g)
	e := newDefaultEngine(b)
	uncached, err := New(Config{FS: policies.FS, DecisionCacheSlots: -1, Evaluator: EvaluatorIR})
	if err != nil {
		b.Fatal(err)
	}
	topdownUncached, err := New(Config{FS: policies.FS, DecisionCacheSlots: -1, Evaluator: EvaluatorTopdown})
	if err != nil {
		b.Fatal(err)
	}
	// One slot: the golden cases in turn always miss (each evicts the one
	// before), so every decision is a miss: lookup, evaluation, store.
	missing, err := New(Config{FS: policies.FS, DecisionCacheSlots: 1, Evaluator: EvaluatorIR})
	if err != nil {
		b.Fatal(err)
	}
	inputs := make([]Input, len(g.Cases))
	for i, c := range g.Cases {
		inputs[i] = c.input()
	}
	ctx := context.Background()
	// golden: after the first round every case is a cache hit (the facts it
	// read are re-read and compared, the policy is not evaluated);
	// golden-miss is a cache miss every time (evaluated and stored);
	// golden-uncached evaluates the policy every time with the IR
	// interpreter, golden-uncached-topdown with topdown.
	for _, bc := range []struct {
		name string
		e    *Engine
	}{{"golden", e}, {"golden-miss", missing}, {"golden-uncached", uncached}, {"golden-uncached-topdown", topdownUncached}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := startCPU(b)
			i := 0
			for b.Loop() {
				if _, _, err := bc.e.Decide(ctx, facts, inputs[i%len(inputs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			cpu.report(b)
		})
	}
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
		b.Run(bc.name+"-uncached", func(b *testing.B) {
			b.ReportAllocs()
			cpu := startCPU(b)
			for b.Loop() {
				if _, _, err := uncached.Decide(ctx, facts, bc.in); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report(b)
		})
	}
	b.Run("follower/cancelable-context", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		in := Input{Subject: "u-fol", Action: "edit", ResourceType: "contact", ResourceID: "c-1"}
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := uncached.Decide(ctx, facts, in); err != nil {
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

// BenchmarkOPAFactsAsInput is the reference the issue compares with: stock
// OPA (rego.PreparedEvalQuery, prepared once) evaluating the default policy
// with the facts handed in as input (input.facts.subject, .record, .target,
// as Go values decoded from the same JSON), one golden case per iteration.
// It is what an application embedding OPA without crmauthz's built-ins does.
func BenchmarkOPAFactsAsInput(b *testing.B) {
	g := loadGolden(b)
	facts := newMemFacts(b, g)
	src, err := fs.ReadFile(policies.FS, "crmauthz/authz.rego")
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := fs.ReadFile(policies.FS, "crmauthz/config.rego")
	if err != nil {
		b.Fatal(err)
	}
	var code []string // without comments, which name the built-ins too
	for _, line := range strings.Split(string(src), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			code = append(code, line)
		}
	}
	mod := strings.NewReplacer(
		"crm.user(input.subject)", "input.facts.subject",
		"crm.record(input.resource.type, input.resource.id)", "input.facts.record",
		"crm.user(input.target)", "input.facts.target",
	).Replace(strings.Join(code, "\n"))
	if strings.Contains(mod, "crm.") {
		b.Fatal("the policy reads facts in a way this benchmark does not replace")
	}
	pq, err := rego.New(rego.Query("data.crmauthz.decision"), rego.Module("authz.rego", mod),
		rego.Module("config.rego", string(cfg))).PrepareForEval(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	decode := func(js []byte) any {
		if js == nil {
			return nil
		}
		var v any
		if err := json.Unmarshal(js, &v); err != nil {
			b.Fatal(err)
		}
		return v
	}
	inputs := make([]map[string]any, len(g.Cases))
	for i, c := range g.Cases {
		in := map[string]any{"subject": c.Input.Subject, "action": c.Input.Action,
			"resource": map[string]any{"type": c.Input.Resource.Type, "id": c.Input.Resource.ID}}
		fm := map[string]any{}
		if u := decode(facts.users[c.Input.Subject]); u != nil {
			fm["subject"] = u
		}
		if r := decode(facts.records[c.Input.Resource.Type+"\x00"+c.Input.Resource.ID]); r != nil {
			fm["record"] = r
		}
		if c.Input.Target != nil {
			in["target"] = *c.Input.Target
			if t := decode(facts.users[*c.Input.Target]); t != nil {
				fm["target"] = t
			}
		}
		in["facts"] = fm
		inputs[i] = in
		rs, err := pq.Eval(context.Background(), rego.EvalInput(in))
		if err != nil || len(rs) != 1 {
			b.Fatalf("%s: %v %v", c.Name, rs, err)
		}
		d := rs[0].Expressions[0].Value.(map[string]any)
		if d["allow"] != c.Allow || d["reason"] != c.Reason {
			b.Fatalf("%s: %v, want %v %s", c.Name, d, c.Allow, c.Reason)
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := pq.Eval(ctx, rego.EvalInput(inputs[i%len(inputs)])); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
