package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// boundedPolicy has a decision for each bound: "huge" asks numbers.range for
// a billion numbers (OPA would allocate gigabytes), "step" and "cidr" the
// same through numbers.range_step and net.cidr_expand, "slow" loops 10^10
// times without allocating, "small" is a range within the limit.
const boundedPolicy = `package crmauthz

default decision := {"allow": false, "reason": "none"}

decision := {"allow": false, "reason": "huge"} if {
	input.action == "huge"
	count(numbers.range(1, 1e9)) > 0
}

decision := {"allow": false, "reason": "huge_int"} if {
	input.action == "huge_int"
	count(numbers.range(-1000000000, 1000000000)) > 0
}

decision := {"allow": false, "reason": "step"} if {
	input.action == "step"
	count(numbers.range_step(0, 1e12, 2)) > 0
}

decision := {"allow": false, "reason": "cidr"} if {
	input.action == "cidr"
	count(net.cidr_expand("10.0.0.0/8")) > 0
}

decision := {"allow": false, "reason": "slow"} if {
	input.action == "slow"
	every i in numbers.range(1, 100000) {
		every j in numbers.range(1, 100000) {
			i + j > 1
		}
	}
}

decision := {"allow": true, "reason": "small"} if {
	input.action == "small"
	count(numbers.range(1, 10)) == 10
	count(numbers.range_step(0, 10, 5)) == 3
	count(net.cidr_expand("10.0.0.0/30")) == 4
}
`

func newBoundedEngine(tb testing.TB, ev Evaluator, timeout time.Duration) *Engine {
	tb.Helper()
	dir := tb.TempDir()
	writeFiles(tb, dir, map[string]string{"bounded.rego": boundedPolicy})
	e, err := New(Config{Dir: dir, Evaluator: ev, EvalTimeout: timeout, DecisionCacheSlots: -1})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return e
}

// TestEvaluationBounds: a built-in call that would build a huge value is
// refused with ErrBuiltinLimit before it allocates, a rule that runs past
// Config.EvalTimeout stops with ErrEvalTimeout, on both evaluators and on
// the Data API path; both are counted, and a small range still works.
func TestEvaluationBounds(t *testing.T) {
	facts := &memFacts{}
	for _, ev := range []Evaluator{EvaluatorIR, EvaluatorTopdown} {
		t.Run(string(ev), func(t *testing.T) {
			e := newBoundedEngine(t, ev, 50*time.Millisecond)
			if got, _ := e.Evaluator(); got != ev {
				t.Fatalf("evaluator %s, want %s", got, ev)
			}
			cases := []struct {
				action string
				want   error // nil: the decision below
				reason string
			}{
				{"huge", ErrBuiltinLimit, ""},
				{"huge_int", ErrBuiltinLimit, ""},
				{"step", ErrBuiltinLimit, ""},
				{"cidr", ErrBuiltinLimit, ""},
				{"slow", ErrEvalTimeout, ""},
				{"small", nil, "small"},
				{"other", nil, "none"},
			}
			var wantLimits LimitStats
			for _, tc := range cases {
				t.Run(tc.action, func(t *testing.T) {
					in := Input{Subject: "u-1", Action: tc.action, ResourceType: "contact", ResourceID: "c-1"}
					d, _, err := e.Decide(context.Background(), facts, in)
					switch {
					case tc.want != nil && !errors.Is(err, tc.want):
						t.Fatalf("Decide: %+v %v, want %v", d, err, tc.want)
					case tc.want == nil && (err != nil || d.Reason != tc.reason):
						t.Fatalf("Decide: %+v %v, want reason %s", d, err, tc.reason)
					case tc.want != nil && d.Allow:
						t.Fatalf("Decide: an allow with %v", err)
					}
					// The Data API (topdown, always).
					obj := ast.NewObject(
						[2]*ast.Term{ast.StringTerm("subject"), ast.StringTerm("u-1")},
						[2]*ast.Term{ast.StringTerm("action"), ast.StringTerm(tc.action)})
					_, _, _, err = e.Query(context.Background(), facts, []string{"crmauthz", "decision"}, obj)
					if tc.want != nil && !errors.Is(err, tc.want) || tc.want == nil && err != nil {
						t.Fatalf("Query: %v, want %v", err, tc.want)
					}
				})
				switch tc.want {
				case ErrEvalTimeout:
					wantLimits.Timeouts += 2
				case ErrBuiltinLimit:
					wantLimits.Builtins += 2
				}
			}
			if got := e.LimitStats(); got != wantLimits {
				t.Errorf("LimitStats %+v, want %+v", got, wantLimits)
			}
		})
	}
}

// TestEvalTimeoutConfig: a negative EvalTimeout is refused; 0 is the default.
func TestEvalTimeoutConfig(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"bounded.rego": boundedPolicy})
	if _, err := New(Config{Dir: dir, EvalTimeout: -time.Second}); err == nil {
		t.Fatal("a negative EvalTimeout was accepted")
	}
	e, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if e.cfg.EvalTimeout != DefaultEvalTimeout || e.cur.Load().evalTimeout != DefaultEvalTimeout {
		t.Fatalf("EvalTimeout %s, want %s", e.cfg.EvalTimeout, DefaultEvalTimeout)
	}
}

// TestWithEvalDeadline: a caller's deadline (a batch's, for the request as
// a whole) stops an evaluation as Config.EvalTimeout does: ErrEvalTimeout,
// counted, on both evaluators and on a call made after it passed.
func TestWithEvalDeadline(t *testing.T) {
	facts := &memFacts{}
	slow := Input{Subject: "u-1", Action: "slow", ResourceType: "contact", ResourceID: "c-1"}
	for _, ev := range []Evaluator{EvaluatorIR, EvaluatorTopdown} {
		t.Run(string(ev), func(t *testing.T) {
			e := newBoundedEngine(t, ev, time.Hour)
			if e.EvalTimeout() != time.Hour {
				t.Fatalf("EvalTimeout() = %s", e.EvalTimeout())
			}
			ctx, cancel := WithEvalDeadline(context.Background(), 20*time.Millisecond)
			defer cancel()
			if _, _, err := e.Decide(ctx, facts, slow); !errors.Is(err, ErrEvalTimeout) {
				t.Fatalf("Decide past the caller's deadline: %v, want ErrEvalTimeout", err)
			}
			// The deadline has passed: the next call stops at once.
			small := Input{Subject: "u-1", Action: "small", ResourceType: "contact", ResourceID: "c-1"}
			if _, _, err := e.Decide(ctx, facts, small); !errors.Is(err, ErrEvalTimeout) {
				t.Fatalf("Decide after the caller's deadline: %v, want ErrEvalTimeout", err)
			}
			if got := e.LimitStats(); got.Timeouts != 2 {
				t.Errorf("LimitStats %+v, want 2 timeouts", got)
			}
			// A context cancelled otherwise is not a timeout.
			cctx, ccancel := context.WithCancel(context.Background())
			ccancel()
			if _, _, err := e.Decide(cctx, facts, small); !errors.Is(err, context.Canceled) || errors.Is(err, ErrEvalTimeout) {
				t.Fatalf("Decide with a cancelled context: %v", err)
			}
		})
	}
}
