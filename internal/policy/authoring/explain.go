package authoring

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Explanation is how the policy reached one decision (see Explain).
type Explanation struct {
	Decision policy.Decision
	Revision string
	// Rule is the rule of data.crmauthz.decision whose value is the decision:
	// in an else chain, the branch that applied.
	Rule RuleRef
	// Held lists every rule (or else branch) whose body held during the
	// evaluation, each once, in the order they held; Rule is among them, and
	// so is the rule its value came from when the branch names another rule
	// (as `else := follower_decision` does).
	Held []RuleRef
	// Facts lists the calls of crm.user and crm.record and what they returned.
	Facts []FactRead
	// Trace is OPA's evaluation trace, one line per event with its location
	// (what `opa eval --explain full` prints).
	Trace []string
}

// RuleRef locates a rule (or one branch of an else chain) in the sources.
type RuleRef struct {
	Path string // the document the rule defines, e.g. data.crmauthz.decision
	File string
	Row  int
	Col  int
	Text string // the first line of the rule's source
}

// String is "file:row:col: path: text".
func (r RuleRef) String() string {
	return fmt.Sprintf("%s:%d:%d: %s: %s", r.File, r.Row, r.Col, r.Path, r.Text)
}

// FactRead is one call of a crm.* built-in during an evaluation.
type FactRead struct {
	Call  string          // e.g. crm.user("u-1")
	Value json.RawMessage // the JSON read; nil when absent (the call is undefined)
	Err   error           // the read's error, which aborts the evaluation
}

// Explain evaluates data.crmauthz.decision for in as e.Decide does, with
// OPA's tracer on (Engine.DecideTraced), and tells which rule decided. It is
// slow (a trace of every step): for tools such as `crmauthz eval --explain`,
// never the hot path. The error is Decide's; the Explanation is filled as
// far as the evaluation went, also with an error.
func Explain(ctx context.Context, e *policy.Engine, facts policy.Facts, in policy.Input) (*Explanation, error) {
	rec := &recordingFacts{facts: facts}
	var trace topdown.BufferTracer
	d, revision, err := e.DecideTraced(ctx, rec, in, &trace)
	x := &Explanation{Decision: d, Revision: revision, Facts: rec.reads}
	x.Rule, x.Held = rulesHeld(trace)
	var buf bytes.Buffer
	topdown.PrettyTraceWithLocation(&buf, trace)
	x.Trace = strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	return x, err
}

// rulesHeld returns, from a trace, the branch of data.crmauthz.decision that
// produced the value and every rule whose body held, in order, each once.
func rulesHeld(trace []*topdown.Event) (decided RuleRef, held []RuleRef) {
	seen := map[*ast.Rule]bool{}
	want := ast.MustParseRef(decisionPath)
	for _, ev := range trace {
		if ev.Op != topdown.ExitOp {
			continue
		}
		rule, ok := ev.Node.(*ast.Rule)
		if !ok || seen[rule] {
			continue
		}
		seen[rule] = true
		ref := ruleRef(rule)
		held = append(held, ref)
		if rulePath(rule).Equal(want) {
			decided = ref
		}
	}
	return decided, held
}

// rulePath is the path of the document a rule contributes to, up to its first variable
// (what the deprecated ast.Rule.Path returned).
func rulePath(rule *ast.Rule) ast.Ref {
	return rule.Ref().GroundPrefix()
}

func ruleRef(rule *ast.Rule) RuleRef {
	r := RuleRef{Path: rulePath(rule).String()}
	if loc := rule.Location; loc != nil {
		r.File, r.Row, r.Col = loc.File, loc.Row, loc.Col
		text, _, _ := strings.Cut(string(loc.Text), "\n")
		r.Text = strings.TrimSpace(text)
	}
	if rule.Default {
		// the location's text is only the keyword "default"
		r.Text = rule.String()
	}
	return r
}

// decisionPath is the policy's entry point.
const decisionPath = "data.crmauthz.decision"

// recordingFacts records what the built-ins read.
type recordingFacts struct {
	facts policy.Facts
	reads []FactRead
}

func (r *recordingFacts) UserJSON(id string) ([]byte, error) {
	if r.facts == nil {
		return nil, policy.ErrNoFacts
	}
	b, err := r.facts.UserJSON(id)
	r.reads = append(r.reads, FactRead{Call: policy.BuiltinUser + "(" + strconv.Quote(id) + ")", Value: clone(b), Err: err})
	return b, err
}

func (r *recordingFacts) RecordJSON(typ, id string) ([]byte, error) {
	if r.facts == nil {
		return nil, policy.ErrNoFacts
	}
	b, err := r.facts.RecordJSON(typ, id)
	r.reads = append(r.reads, FactRead{
		Call:  policy.BuiltinRecord + "(" + strconv.Quote(typ) + ", " + strconv.Quote(id) + ")",
		Value: clone(b), Err: err,
	})
	return b, err
}

// clone copies b, which is valid only inside the read transaction.
func clone(b []byte) json.RawMessage {
	if b == nil {
		return nil
	}
	return append(json.RawMessage(nil), b...)
}
