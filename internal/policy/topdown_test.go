package policy

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/crmauthz/crmauthz/policies"
)

// topdownUse is one path that evaluates with topdown, checked against the
// answer the interpreter's Decide gives (or a fixed one).
type topdownUse struct {
	name string
	run  func(tb testing.TB, e *Engine, facts Facts)
	// ir: the interpreter answers it when it decides (no topdown use)
	ir bool
}

// topdownUses are the engine's topdown paths (topdown.go), each asserting
// its answer.
func topdownUses() []topdownUse {
	in := Input{Subject: "u-fol", Action: "delete", ResourceType: "contact", ResourceID: "c-1"}
	return []topdownUse{
		{"Query", func(tb testing.TB, e *Engine, facts Facts) {
			d, _, err := e.Decide(context.Background(), facts, in)
			if err != nil {
				tb.Fatal(err)
			}
			res, defined, rev, err := e.Query(context.Background(), facts, DecisionPath, e.cur.Load().input(in))
			want := map[string]any{"allow": d.Allow, "reason": d.Reason}
			if err != nil || !defined || rev != e.Revision() || !reflect.DeepEqual(res, want) {
				tb.Fatalf("Query = %v, %v, %q, %v; want %v", res, defined, rev, err, want)
			}
		}, false},
		{"ListScope", func(tb testing.TB, e *Engine, facts Facts) {
			got, _, err := e.ListScope(context.Background(), facts, ListInput{Subject: "u-owner", Type: "contact", LocationID: "loc-1"})
			if err != nil || got != ScopeAssigned {
				tb.Fatalf("ListScope = %q, %v; want %q", got, err, ScopeAssigned)
			}
		}, false},
		{"DecideTraced", func(tb testing.TB, e *Engine, facts Facts) {
			want, _, err := e.Decide(context.Background(), facts, in)
			if err != nil {
				tb.Fatal(err)
			}
			tr := topdown.NewBufferTracer()
			got, _, err := e.DecideTraced(context.Background(), facts, in, tr)
			if err != nil || got != want || len(*tr) == 0 {
				tb.Fatalf("DecideTraced = %+v, %v (%d events); want %+v", got, err, len(*tr), want)
			}
		}, false},
		{"DecideHTTP", func(tb testing.TB, e *Engine, facts Facts) {
			got, _, err := e.DecideHTTP(context.Background(), facts, HTTPInput{Subject: "u-owner", Method: "GET", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"}})
			if err != nil || !got.Allow || got.Reason != "owner" {
				tb.Fatalf("DecideHTTP = %+v, %v; want an owner's allow", got, err)
			}
		}, true},
		{"PartialView", func(tb testing.TB, e *Engine, facts Facts) {
			p, _, err := e.PartialView(context.Background(), facts, FilterInput{Subject: "u-owner", Type: "contact", LocationID: "loc-1"})
			if err != nil || len(p.Branches) == 0 {
				tb.Fatalf("PartialView = %+v, %v", p, err)
			}
		}, false},
		{"UnknownsOf", func(tb testing.TB, e *Engine, facts Facts) {
			if u := e.UnknownsOf(DecisionPath); u != nil {
				tb.Fatalf("UnknownsOf(decision) = %v, want none declared", u)
			}
		}, false},
	}
}

// TestTopdownLazy: an engine whose decisions the interpreter makes keeps no
// topdown side after New; each topdown path builds it at its first use, once,
// and answers as before; the gateway's decision (DecideHTTP) builds none,
// the interpreter decides it. An engine on topdown keeps the one build made.
func TestTopdownLazy(t *testing.T) {
	for _, ev := range []Evaluator{EvaluatorAuto, EvaluatorTopdown} {
		for _, use := range topdownUses() {
			t.Run(fmt.Sprintf("%s/%s", evName(ev), use.name), func(t *testing.T) {
				e, err := New(Config{EvalTimeout: testEvalTimeout, FS: policies.FS, Evaluator: ev})
				if err != nil {
					t.Fatal(err)
				}
				p := e.cur.Load()
				lazy := ev != EvaluatorTopdown
				if (p.td.Load() == nil) != lazy {
					t.Fatalf("after New: topdown side built %v, want %v", p.td.Load() != nil, !lazy)
				}
				facts := httpFacts()
				if _, _, err := e.Decide(context.Background(), facts, followerDelete); err != nil {
					t.Fatal(err)
				}
				if lazy && p.td.Load() != nil {
					t.Fatal("Decide built the topdown side")
				}
				use.run(t, e, facts)
				use.run(t, e, facts)
				built := !lazy || !use.ir
				if (p.td.Load() != nil) != built {
					t.Fatalf("after its use: topdown side built %v, want %v", p.td.Load() != nil, built)
				}
				want := uint32(0)
				if lazy && !use.ir {
					want = 1
				}
				if n := p.tdBuilds.Load(); n != want {
					t.Errorf("%d builds of the topdown side, want %d", n, want)
				}
			})
		}
	}
}

func evName(ev Evaluator) string {
	if ev == EvaluatorAuto {
		return "auto"
	}
	return string(ev)
}

// TestTopdownConcurrentFirstUse: every topdown path at once on a new
// revision: one build, every answer right (run with -race).
func TestTopdownConcurrentFirstUse(t *testing.T) {
	e := newDefaultEngine(t)
	facts := httpFacts()
	uses := topdownUses()
	const rounds = 4
	var wg sync.WaitGroup
	for _, use := range uses {
		for range rounds {
			wg.Go(func() { use.run(t, e, facts) })
		}
	}
	wg.Wait()
	if n := e.cur.Load().tdBuilds.Load(); n != 1 {
		t.Errorf("%d builds of the topdown side, want 1", n)
	}
}

// newDirEngine is an engine on a directory holding the default policy
// (without its tests), with the directory and the files written.
func newDirEngine(tb testing.TB) (*Engine, string, map[string]string) {
	tb.Helper()
	dir := tb.TempDir()
	files := defaultPolicyFiles(tb, false)
	writeFiles(tb, dir, files)
	e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	return e, dir, files
}

// TestTopdownReloadBetween: a reload before the first topdown use: the
// topdown paths answer with the new revision's sources; a revision taken
// before the reload still builds its own (its evaluations in flight finish
// on it, as with Decide).
func TestTopdownReloadBetween(t *testing.T) {
	e, dir, files := newDirEngine(t)
	facts := newMemFacts(t, loadGolden(t))
	old := e.cur.Load()
	if old.td.Load() != nil {
		t.Fatal("topdown side built by New")
	}
	writeFiles(t, dir, map[string]string{"config.rego": flipDelete(t, files["config.rego"], true)})
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	cur := e.cur.Load()
	if cur == old || cur.td.Load() != nil {
		t.Fatalf("after the reload: same revision %v, topdown side built %v", cur == old, cur.td.Load() != nil)
	}
	queryReason := func(p *prepared) string {
		td, err := p.topdown(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		rs, err := p.eval(context.Background(), td.decision, p.decisionOpts, facts, p.input(followerDelete))
		if err != nil {
			t.Fatal(err)
		}
		d, err := p.decisionOf(rs)
		if err != nil {
			t.Fatal(err)
		}
		return d.Reason
	}
	res, _, rev, err := e.Query(context.Background(), facts, DecisionPath, cur.input(followerDelete))
	if err != nil || rev != cur.revision || rev == old.revision {
		t.Fatalf("Query = %v, %q, %v; want revision %s", res, rev, err, cur.revision)
	}
	if got := res.(map[string]any)["reason"]; got != "follower" {
		t.Errorf("Query after the reload: reason %v, want the new policy's follower", got)
	}
	if got := queryReason(cur); got != "follower" {
		t.Errorf("the new revision's topdown decision: %s, want follower", got)
	}
	if got := queryReason(old); got != "follower_not_permitted" {
		t.Errorf("the old revision's topdown decision: %s, want follower_not_permitted", got)
	}
	if cur.tdBuilds.Load() != 1 || old.tdBuilds.Load() != 1 {
		t.Errorf("builds: new revision %d, old %d; want 1 each", cur.tdBuilds.Load(), old.tdBuilds.Load())
	}
}

// TestTopdownKeptAcrossReload: once a revision's topdown side is in use, the
// revisions reloads bring keep the one their build made (no build at the
// first request after a reload); a reload before any use keeps none.
func TestTopdownKeptAcrossReload(t *testing.T) {
	e, dir, files := newDirEngine(t)
	facts := httpFacts()
	config := files["config.rego"]
	steps := []struct {
		useBefore, wantBuilt bool
	}{
		{false, false}, // never used: none
		{true, true},   // used: the next revision has one
		{false, true},  // and the one after it
	}
	for i, st := range steps {
		if st.useBefore {
			topdownUses()[0].run(t, e, facts)
		}
		config = flipDelete(t, config, i%2 == 0)
		writeFiles(t, dir, map[string]string{"config.rego": config})
		if err := e.Reload(); err != nil {
			t.Fatal(err)
		}
		p := e.cur.Load()
		if built := p.td.Load() != nil; built != st.wantBuilt {
			t.Fatalf("reload %d: topdown side built %v, want %v", i, built, st.wantBuilt)
		}
		if st.wantBuilt {
			topdownUses()[0].run(t, e, facts)
			if n := p.tdBuilds.Load(); n != 0 {
				t.Errorf("reload %d: %d builds after the reload, want 0", i, n)
			}
		}
	}
}
