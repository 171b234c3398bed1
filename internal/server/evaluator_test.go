package server

import (
	"testing"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/policies"
)

// TestIREvaluatorMatchesTopdownOnTheMix decides the load mix over a bbolt
// index with the IR interpreter and with topdown: every answer is the same.
func TestIREvaluatorMatchesTopdownOnTheMix(t *testing.T) {
	w := dataset.New(dataset.Config{Records: 20_000, Users: 1_000})
	ts := newTestServer(t, &w)
	engines := map[policy.Evaluator]*policy.Engine{}
	for _, ev := range []policy.Evaluator{policy.EvaluatorIR, policy.EvaluatorTopdown} {
		e, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, FS: policies.FS, DecisionCacheSlots: -1, Evaluator: ev})
		if err != nil {
			t.Fatal(err)
		}
		engines[ev] = e
	}
	n := 20_000
	if testing.Short() {
		n = 2_000
	}
	reasons := map[string]int{}
	for i := 0; i < n; i++ {
		r := w.RequestAt(i)
		in := policy.Input{Subject: r.Subject, Action: r.Action, ResourceType: r.Type, ResourceID: r.ID, Target: r.Target, HasTarget: r.Target != ""}
		var got [2]policy.Decision
		err := ts.ix.View(func(tx *index.ReadTx) error {
			for k, ev := range []policy.Evaluator{policy.EvaluatorIR, policy.EvaluatorTopdown} {
				d, _, err := engines[ev].Decide(t.Context(), tx, in)
				if err != nil {
					return err
				}
				got[k] = d
			}
			return nil
		})
		if err != nil {
			t.Fatalf("request %d %+v: %v", i, in, err)
		}
		if got[0] != got[1] {
			t.Fatalf("request %d %+v: IR %+v, topdown %+v", i, in, got[0], got[1])
		}
		reasons[got[0].Reason]++
	}
	if len(reasons) < 10 {
		t.Fatalf("the mix reached only %d reasons: %v", len(reasons), reasons)
	}
}
