package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/jsonstr"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
	"github.com/crmauthz/crmauthz/internal/strictjson"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// knownActions bound the action label of crmauthz_decisions_total: an
// action's id is its place here, len(knownActions) for "other"
// (metrics.DecisionTable).
var knownActions = index.Actions()

// actionID is the id of action a (a few string compares, no hash).
func actionID(a string) int {
	for i, k := range knownActions {
		if a == k {
			return i
		}
	}
	return len(knownActions)
}

func actionLabel(a string) string {
	if i := actionID(a); i < len(knownActions) {
		return knownActions[i]
	}
	return "other"
}

// maxChecks is the most checks one /v1/decisions request may hold.
const maxChecks = 1000

type resourceRef struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

type decisionRequest struct {
	Subject  string       `json:"subject"`
	Action   string       `json:"action"`
	Resource *resourceRef `json:"resource"`
	Target   *string      `json:"target"`
	MinSeq   uint64       `json:"min_seq"`
}

type checkRequest struct {
	Action   string       `json:"action"`
	Resource *resourceRef `json:"resource"`
	Target   *string      `json:"target"`
}

type batchRequest struct {
	Subject string         `json:"subject"`
	Checks  []checkRequest `json:"checks"`
	MinSeq  uint64         `json:"min_seq"`
}

type decisionResponse struct {
	Allow          bool   `json:"allow"`
	Reason         string `json:"reason"`
	DecisionID     string `json:"decision_id"`
	PolicyRevision string `json:"policy_revision"`
	AppliedSeq     uint64 `json:"applied_seq"`
}

type checkResult struct {
	Allow  bool   `json:"allow"`
	Reason string `json:"reason"`
}

type batchResponse struct {
	Results        []checkResult `json:"results"`
	DecisionID     string        `json:"decision_id"`
	PolicyRevision string        `json:"policy_revision"`
	AppliedSeq     uint64        `json:"applied_seq"`
}

func invalid(format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, errcode.InvalidRequest, format, args...)
}

// checkFields are the fields of one check (of /v1/decision, or of a
// /v1/decisions batch) as the body gave them: hasResource and hasTarget tell
// a key given from one left out or null.
type checkFields struct {
	action, typ, id, target string
	hasResource, hasTarget  bool
}

// fieldsOf is the checkFields of the strict decoder's fields.
func fieldsOf(action string, res *resourceRef, target *string) checkFields {
	c := checkFields{action: action}
	if res != nil {
		c.typ, c.id, c.hasResource = res.Type, res.ID, true
	}
	if target != nil {
		c.target, c.hasTarget = *target, true
	}
	return c
}

// input checks one check's fields and returns the policy's input.
func (c *checkFields) input(subject, where string) (policy.Input, error) {
	switch {
	case subject == "":
		return policy.Input{}, invalid("subject is missing or empty")
	case c.action == "":
		return policy.Input{}, invalid("%saction is missing or empty", where)
	case !c.hasResource:
		return policy.Input{}, invalid("%sresource is missing", where)
	case c.typ == "":
		return policy.Input{}, invalid("%sresource.type is missing or empty", where)
	case c.id == "":
		return policy.Input{}, invalid("%sresource.id is missing or empty", where)
	case c.hasTarget && c.target == "":
		return policy.Input{}, invalid("%starget is empty (leave it out when there is none)", where)
	}
	return policy.Input{Subject: subject, Action: c.action, ResourceType: c.typ, ResourceID: c.id,
		Target: c.target, HasTarget: c.hasTarget}, nil
}

// waitForSeq implements min_seq: wait up to ConsistencyWait for the index to
// apply seq, then 503 index_behind (never a stale answer).
func (s *Server) waitForSeq(ctx context.Context, seq uint64) error {
	if seq == 0 || s.ix.AppliedSeq() >= seq {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConsistencyWait)
	defer cancel()
	if err := s.ix.WaitForSeq(ctx, seq); err != nil {
		applied := s.ix.AppliedSeq()
		e := newError(http.StatusServiceUnavailable, errcode.IndexBehind,
			"the index has applied seq %d, not yet %d (waited %s)", applied, seq, s.cfg.ConsistencyWait)
		e.Extra = map[string]any{"applied_seq": applied}
		return e
	}
	return nil
}

// evalError wraps an evaluation failure: the request is denied with a 500,
// evaluation_timeout for one that ran past --eval-timeout.
func evalError(err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	e := newError(http.StatusInternalServerError, errcode.EvaluationError, "the decision could not be evaluated (denied): %v", err)
	if errors.Is(err, policy.ErrEvalTimeout) {
		e = newError(http.StatusInternalServerError, errcode.EvaluationTimeout, "the decision could not be evaluated in time (denied): %v", err)
	}
	e.Err = err
	return e
}

// errorReason is the reason label of crmauthz_decisions_total for a
// decision that failed with err.
func errorReason(err error) string {
	if errors.Is(err, policy.ErrEvalTimeout) {
		return errcode.EvaluationTimeout
	}
	return "error"
}

// decideCall is one decision's read transaction (run), its input and its
// results, in one value the caller keeps on its stack.
type decideCall struct {
	s   *Server
	ctx context.Context
	in  policy.Input
	d   policy.Decision
	rev string
	seq uint64
}

func (c *decideCall) run(tx *index.ReadTx) error {
	c.seq = tx.AppliedSeq()
	var err error
	c.d, c.rev, err = c.s.eng.Decide(c.ctx, tx, c.in)
	return err
}

// serveDecision serves POST /v1/decision (a lean handler, fast.go).
func (s *Server) serveDecision(w http.ResponseWriter, r *http.Request) {
	rp := reply{w: w}
	start := s.clock()
	var rs *reqSpan // nil: tracing off
	if s.tr != nil {
		rs = s.startSpan(r, tracing.SpanDecision, spanDecision)
	}
	defer s.finish(&rp, r, s.routes.decision, start, rs)

	body, err := readBody(r, s.cfg.MaxDecisionBytes)
	req, err := decodeDecisionBody(body, err)
	if err != nil {
		s.replyError(&rp, r, err)
		return
	}
	in, err := req.check.input(req.subject, "")
	if err != nil {
		s.replyError(&rp, r, err)
		return
	}
	if err := s.waitForSeq(r.Context(), req.minSeq); err != nil {
		s.replyError(&rp, r, err)
		return
	}
	call := decideCall{s: s, ctx: r.Context(), in: in}
	err = s.ix.View(call.run)
	d, rev, seq := call.d, call.rev, call.seq
	if err != nil {
		s.routes.decisionCounts.Count(actionID(in.Action), false, errorReason(err))
		if s.dlog.Sample() {
			s.logDecision(s.ids.next(), in, d, err.Error(), rev, seq, start)
		}
		if rs != nil {
			rs.d = tracing.Decision{Action: spanAction(in.Action), ResourceType: spanType(in.ResourceType), Revision: rev, AppliedSeq: seq,
				Reason: errorReason(err), Error: toAPIError(evalError(err)).Code}
		}
		s.replyError(&rp, r, evalError(err))
		return
	}
	s.routes.decisionCounts.Count(actionID(in.Action), d.Allow, d.Reason)
	// The reply is decisionResponse, written by hand (see decisionjson.go).
	bp := s.bufs.get()
	defer s.bufs.put(bp)
	b := append(appendReplyHead(*bp, d.Allow, d.Reason), '"')
	idStart := len(b)
	b = s.ids.appendNext(b) // hex digits and '-': nothing to escape
	idEnd := len(b)
	b = appendReplyTail(append(b, '"'), rev, seq)
	*bp = b
	if logged := s.dlog.Sample(); logged || rs != nil {
		id := string(b[idStart:idEnd])
		if logged {
			s.logDecision(id, in, d, "", rev, seq, start)
		}
		if rs != nil {
			rs.d = tracing.Decision{ID: id, Allow: d.Allow, Reason: d.Reason, Action: spanAction(in.Action),
				ResourceType: spanType(in.ResourceType), Revision: rev, AppliedSeq: seq}
		}
	}
	rp.ok(b)
}

// logDecision queues the decision log line of one /v1/decision.
func (s *Server) logDecision(id string, in policy.Input, d policy.Decision, errMsg, rev string, seq uint64, start time.Duration) {
	s.dlog.Decision(decisionlog.Decision{
		ID: id, Subject: in.Subject, Action: in.Action, Type: in.ResourceType, ResourceID: in.ResourceID,
		Target: in.Target, HasTarget: in.HasTarget, Allow: d.Allow, Reason: d.Reason, Err: errMsg,
		Revision: rev, AppliedSeq: seq, Duration: s.clock() - start,
	})
}

// batchCall is one batch's read transaction (run), its inputs and results.
type batchCall struct {
	s      *Server
	ctx    context.Context
	inputs []policy.Input
	resp   *batchResponse
}

func (c *batchCall) run(tx *index.ReadTx) error {
	c.resp.AppliedSeq = tx.AppliedSeq()
	for i, in := range c.inputs {
		d, rev, err := c.s.eng.Decide(c.ctx, tx, in)
		if err != nil {
			return err
		}
		c.resp.Results[i] = checkResult{Allow: d.Allow, Reason: d.Reason}
		c.resp.PolicyRevision = rev
	}
	return nil
}

// serveDecisions serves POST /v1/decisions (a lean handler, fast.go).
func (s *Server) serveDecisions(w http.ResponseWriter, r *http.Request) {
	rp := reply{w: w}
	start := s.clock()
	var rs *reqSpan // nil: tracing off
	if s.tr != nil {
		rs = s.startSpan(r, tracing.SpanDecisions, spanDecisions)
	}
	defer s.finish(&rp, r, s.routes.decisions, start, rs)

	body, err := readBody(r, s.cfg.MaxDecisionBytes)
	req, err := decodeBatchBody(body, err)
	if err != nil {
		s.replyError(&rp, r, err)
		return
	}
	if req.checks == nil {
		s.replyError(&rp, r, invalid("checks is missing"))
		return
	}
	if len(req.checks) > maxChecks {
		s.replyError(&rp, r, newError(http.StatusRequestEntityTooLarge, errcode.PayloadTooLarge, "%d checks, at most %d", len(req.checks), maxChecks))
		return
	}
	inputs := make([]policy.Input, len(req.checks))
	for i := range req.checks {
		in, err := req.checks[i].input(req.subject, "checks["+strconv.Itoa(i)+"].")
		if err != nil {
			s.replyError(&rp, r, err)
			return
		}
		inputs[i] = in
	}
	if err := s.waitForSeq(r.Context(), req.minSeq); err != nil {
		s.replyError(&rp, r, err)
		return
	}
	resp := batchResponse{Results: make([]checkResult, len(inputs))}
	// The batch as a whole is bounded by --eval-timeout, as each check is.
	ctx, cancel := policy.WithEvalDeadline(r.Context(), s.eng.EvalTimeout())
	defer cancel()
	call := batchCall{s: s, ctx: ctx, inputs: inputs, resp: &resp}
	err = s.ix.View(call.run)
	if err != nil {
		s.routes.decisionsCounts.Count(len(knownActions), false, errorReason(err))
		if s.dlog.Sample() {
			s.dlog.Batch(decisionlog.Batch{ID: s.ids.next(), Subject: req.subject, Err: err.Error(),
				Revision: s.eng.Revision(), AppliedSeq: resp.AppliedSeq, Duration: s.clock() - start})
		}
		if rs != nil {
			rs.d = tracing.Decision{Revision: s.eng.Revision(), AppliedSeq: resp.AppliedSeq, Error: toAPIError(evalError(err)).Code}
		}
		s.replyError(&rp, r, evalError(err))
		return
	}
	for i, r := range resp.Results {
		s.routes.decisionsCounts.Count(actionID(inputs[i].Action), r.Allow, r.Reason)
	}
	if resp.PolicyRevision == "" {
		resp.PolicyRevision = s.eng.Revision()
	}
	resp.DecisionID = s.ids.next()
	if s.dlog.Sample() {
		checks := make([]decisionlog.Check, len(inputs))
		for i, in := range inputs {
			checks[i] = decisionlog.Check{Action: in.Action, Type: in.ResourceType, ResourceID: in.ResourceID,
				Target: in.Target, HasTarget: in.HasTarget, Allow: resp.Results[i].Allow, Reason: resp.Results[i].Reason}
		}
		s.dlog.Batch(decisionlog.Batch{ID: resp.DecisionID, Subject: req.subject, Checks: checks,
			Revision: resp.PolicyRevision, AppliedSeq: resp.AppliedSeq, Duration: s.clock() - start})
	}
	if rs != nil {
		rs.d = tracing.Decision{ID: resp.DecisionID, Revision: resp.PolicyRevision, AppliedSeq: resp.AppliedSeq}
		rs.checks = make([]tracing.Check, len(inputs))
		for i, in := range inputs {
			rs.checks[i] = tracing.Check{Allow: resp.Results[i].Allow, Reason: resp.Results[i].Reason,
				Action: spanAction(in.Action), ResourceType: spanType(in.ResourceType)}
		}
	}
	// The reply is resp (batchResponse), written by hand (see decisionjson.go).
	bp := s.bufs.get()
	defer s.bufs.put(bp)
	b := append(*bp, `{"results":[`...)
	for i, r := range resp.Results {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"allow":`...)
		b = strconv.AppendBool(b, r.Allow)
		b = append(b, `,"reason":`...)
		b = jsonstr.Append(b, r.Reason)
		b = append(b, '}')
	}
	b = append(b, `],"decision_id":`...)
	b = jsonstr.Append(b, resp.DecisionID)
	b = append(b, `,"policy_revision":`...)
	b = jsonstr.Append(b, resp.PolicyRevision)
	b = append(b, `,"applied_seq":`...)
	b = strconv.AppendUint(b, resp.AppliedSeq, 10)
	b = append(b, '}')
	*bp = b
	rp.ok(b)
}

type dataResponse struct {
	Result     any    `json:"result,omitempty"`
	DecisionID string `json:"decision_id"`
	AppliedSeq uint64 `json:"applied_seq"`
}

// postData serves OPA's Data API: POST /v1/data/{path} with {"input": …}.
func (s *Server) postData(c *gin.Context) {
	start := time.Now()
	defer func() { s.m.DecisionDuration("data", time.Since(start)) }()
	var rs *reqSpan // nil: tracing off
	if s.tr != nil {
		if rs = s.startSpan(c.Request, tracing.SpanData, spanDecision); rs != nil {
			defer rs.endGin(c)
		}
	}

	path := strings.Trim(c.Param("path"), "/")
	if path == "" {
		s.writeError(c, invalid("a data path is required, e.g. /v1/data/crmauthz/decision"))
		return
	}
	if !s.dataPathAllowed(path) {
		s.writeError(c, newError(http.StatusForbidden, errcode.PathNotAllowed,
			"the Data API does not serve %q here (allowed: see --data-api-paths)", path))
		return
	}
	segs := strings.Split(path, "/")
	for _, seg := range segs {
		if seg == "" {
			s.writeError(c, invalid("the data path %q has an empty segment", path))
			return
		}
	}
	raw, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxDecisionBytes))
	if err != nil {
		s.writeError(c, err)
		return
	}
	var (
		input    ast.Value
		rawInput json.RawMessage // for the decision log
	)
	if len(bytes.TrimSpace(raw)) > 0 {
		var body struct {
			Input *jsontext.Value `json:"input"`
		}
		// the input is free-form, but a key given twice is refused in it too
		if err := strictjson.Unmarshal(raw, &body); err != nil {
			s.writeError(c, err)
			return
		}
		if body.Input != nil {
			rawInput = json.RawMessage(*body.Input)
			input, err = ast.ValueFromReader(bytes.NewReader(*body.Input))
			if err != nil {
				s.writeError(c, invalid("input: %v", err))
				return
			}
		}
	}
	var (
		result  any
		defined bool
		seq     uint64
		rev     string
	)
	err = s.ix.View(func(tx *index.ReadTx) error {
		seq = tx.AppliedSeq()
		var err error
		result, defined, rev, err = s.eng.Query(c.Request.Context(), tx, segs, input)
		return err
	})
	isDecision := path == "crmauthz/decision"
	if err != nil {
		if isDecision {
			s.m.Decision("data", "other", false, errorReason(err))
		}
		if s.dlog.Sample() {
			s.dlog.Query(decisionlog.Query{ID: s.ids.next(), Path: path, Input: rawInput, Err: err.Error(),
				Revision: rev, AppliedSeq: seq, Duration: time.Since(start)})
		}
		if rs != nil {
			rs.d = tracing.Decision{DataPath: path, Revision: rev, AppliedSeq: seq, Error: toAPIError(evalError(err)).Code}
		}
		s.writeError(c, evalError(err))
		return
	}
	if rs != nil {
		rs.d = tracing.Decision{DataPath: path, Revision: rev, AppliedSeq: seq}
	}
	if isDecision {
		action := "other"
		if obj, ok := input.(ast.Object); ok {
			if t := obj.Get(ast.StringTerm("action")); t != nil {
				if a, ok := t.Value.(ast.String); ok {
					action = actionLabel(string(a))
				}
			}
		}
		allow, reason := false, "undefined"
		if m, ok := result.(map[string]any); ok {
			allow, _ = m["allow"].(bool)
			reason, _ = m["reason"].(string)
		}
		s.m.Decision("data", action, allow, reason)
		if rs != nil {
			rs.d.Action, rs.d.Allow, rs.d.Reason = action, allow, reason
		}
	}
	resp := dataResponse{DecisionID: s.ids.next(), AppliedSeq: seq}
	if rs != nil {
		rs.d.ID = resp.DecisionID
	}
	if defined {
		resp.Result = result
	}
	if s.dlog.Sample() {
		s.dlog.Query(decisionlog.Query{ID: resp.DecisionID, Path: path, Input: rawInput, Result: resp.Result,
			Revision: rev, AppliedSeq: seq, Duration: time.Since(start)})
	}
	c.JSON(http.StatusOK, resp)
}

// dataPathAllowed reports whether the Data and Compile APIs serve path: one of --data-api-paths,
// or any path with an explicit "*" (docs/operations.md "Threat model"); an empty list serves none.
func (s *Server) dataPathAllowed(path string) bool {
	return s.dataAll || s.dataPaths[path]
}
