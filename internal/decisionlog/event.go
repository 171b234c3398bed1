package decisionlog

// The events of OPA's decision log that a Logger writes: their JSON shape,
// the masking and erasing of fields (Config.Mask, Config.Erase), and the
// writing of one line per decision (docs/policies.md, "Decision logs").

import (
	"bytes"
	"encoding/json"
	"maps"
	"strconv"
	"time"
)

// labels are OPA's "id" and "version" and crmauthz's own.
type labels struct {
	ID             string `json:"id"`
	Version        string `json:"version"`
	PolicyRevision string `json:"policy_revision"`
	AppliedSeq     string `json:"applied_seq"`
}

type eventMetrics struct {
	TimerServerHandlerNS int64 `json:"timer_server_handler_ns"`
}

type eventError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// event is one line, in the shape of OPA's decision log event.
type event struct {
	Labels          labels       `json:"labels"`
	DecisionID      string       `json:"decision_id"`
	BatchDecisionID string       `json:"batch_decision_id,omitempty"`
	Path            string       `json:"path"`
	Input           any          `json:"input,omitempty"`
	Result          any          `json:"result,omitempty"`
	Erased          []string     `json:"erased,omitempty"`
	Masked          []string     `json:"masked,omitempty"`
	Error           *eventError  `json:"error,omitempty"`
	Timestamp       time.Time    `json:"timestamp"`
	Metrics         eventMetrics `json:"metrics"`
}

// decisionPath is the path of /v1/decision and /v1/decisions lines.
const decisionPath = "crmauthz/decision"

func (l *Logger) newEvent(id, revision string, seq uint64, ts time.Time, dur time.Duration) event {
	return event{
		Labels: labels{ID: l.cfg.InstanceID, Version: l.cfg.Version, PolicyRevision: revision,
			AppliedSeq: strconv.FormatUint(seq, 10)},
		DecisionID: id,
		Path:       decisionPath,
		Timestamp:  ts.UTC(),
		Metrics:    eventMetrics{TimerServerHandlerNS: dur.Nanoseconds()},
	}
}

func decisionInput(subject, action, typ, id, target string, hasTarget bool) map[string]any {
	in := map[string]any{
		"subject":  subject,
		"action":   action,
		"resource": map[string]any{"type": typ, "id": id},
	}
	if hasTarget {
		in["target"] = target
	}
	return in
}

func evalError(msg string) *eventError {
	return &eventError{Code: "evaluation_error", Message: msg}
}

func (l *Logger) write(e entry) {
	switch e.kind {
	case kindDecision:
		d := &e.d
		ev := l.newEvent(d.ID, d.Revision, d.AppliedSeq, e.ts, d.Duration)
		l.writeDecision(&ev, lineInput{subject: d.Subject, action: d.Action, typ: d.Type, id: d.ResourceID,
			target: d.Target, hasTarget: d.HasTarget}, d.Allow, d.Reason, d.Err)
	case kindBatch:
		b := &e.b
		if b.Err != "" || len(b.Checks) == 0 {
			ev := l.newEvent(b.ID, b.Revision, b.AppliedSeq, e.ts, b.Duration)
			ev.BatchDecisionID = b.ID
			ev.Input = map[string]any{"subject": b.Subject}
			if b.Err != "" {
				ev.Error = evalError(b.Err)
			}
			l.writeEvent(&ev)
			return
		}
		for i, c := range b.Checks {
			ev := l.newEvent(b.ID+"-"+strconv.Itoa(i), b.Revision, b.AppliedSeq, e.ts, b.Duration)
			ev.BatchDecisionID = b.ID
			l.writeDecision(&ev, lineInput{subject: b.Subject, action: c.Action, typ: c.Type, id: c.ResourceID,
				target: c.Target, hasTarget: c.HasTarget}, c.Allow, c.Reason, "")
		}
	case kindQuery:
		q := &e.q
		ev := l.newEvent(q.ID, q.Revision, q.AppliedSeq, e.ts, q.Duration)
		ev.Path = q.Path
		if len(q.Input) > 0 {
			var in any
			dec := json.NewDecoder(bytes.NewReader(q.Input))
			dec.UseNumber()
			if err := dec.Decode(&in); err != nil {
				in = string(q.Input) // cannot happen: the server parsed it
			}
			ev.Input = in
		}
		ev.Result = q.Result
		if q.Err != "" {
			ev.Error = evalError(q.Err)
		}
		l.writeEvent(&ev)
	}
}

// writeDecision writes the line of one decision: ev with the input in and
// the result (allow, reason), or the error errMsg when not empty. Without
// masks it is appended by hand (line.go), else encoded by writeEvent.
func (l *Logger) writeDecision(ev *event, in lineInput, allow bool, reason, errMsg string) {
	if len(l.masks) > 0 {
		ev.Input = decisionInput(in.subject, in.action, in.typ, in.id, in.target, in.hasTarget)
		if errMsg != "" {
			ev.Error = evalError(errMsg)
		} else {
			ev.Result = map[string]any{"allow": allow, "reason": reason}
		}
		l.writeEvent(ev)
		return
	}
	l.line = append(appendDecisionLine(l.line[:0], ev, in, allow, reason, errMsg), '\n')
	if len(l.line) > maxKeptLine {
		defer func() { l.line = nil }() // one huge id is not kept for the life of the logger
	}
	l.writeLine(l.line)
}

// maxKeptLine bounds the line buffer the writer keeps between lines.
const maxKeptLine = 64 << 10

// writeLine writes one encoded line (with its newline) to the buffer.
func (l *Logger) writeLine(b []byte) {
	if _, err := l.bw.Write(b); err != nil {
		l.writeFailed(err, l.buffered+1)
		return
	}
	l.buffered++
}

// writeEvent masks ev and writes it as one line.
func (l *Logger) writeEvent(ev *event) {
	for _, m := range l.masks {
		var root *any
		switch m.segs[0] {
		case "input":
			root = &ev.Input
		default:
			root = &ev.Result
		}
		if *root == nil {
			continue
		}
		v, ok := maskValue(*root, m.segs[1:], m.erase)
		if !ok {
			continue
		}
		*root = v
		if m.erase {
			ev.Erased = append(ev.Erased, m.pointer)
		} else {
			ev.Masked = append(ev.Masked, m.pointer)
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		l.cfg.Logger.Error("decision log: encoding a line", "decision_id", ev.DecisionID, "err", err)
		l.drop(DropWriteError, 1)
		return
	}
	l.writeLine(append(b, '\n'))
}

// maskValue returns v with the field at segs replaced by Redacted (or
// removed), copying the maps on the way so that v itself is not modified (a
// Data API result is shared with the reply); false when the field is absent.
// Empty segs is v itself.
func maskValue(v any, segs []string, erase bool) (any, bool) {
	if len(segs) == 0 {
		if erase {
			return nil, true
		}
		return Redacted, true
	}
	m, ok := v.(map[string]any)
	if !ok {
		return v, false
	}
	child, ok := m[segs[0]]
	if !ok {
		return v, false
	}
	cp := maps.Clone(m)
	if len(segs) == 1 {
		if erase {
			delete(cp, segs[0])
		} else {
			cp[segs[0]] = Redacted
		}
		return cp, true
	}
	nv, ok := maskValue(child, segs[1:], erase)
	if !ok {
		return v, false
	}
	cp[segs[0]] = nv
	return cp, true
}

func (l *Logger) flush() {
	if l.buffered == 0 {
		return
	}
	if err := l.bw.Flush(); err != nil {
		l.writeFailed(err, l.buffered)
		return
	}
	l.buffered = 0
	if l.failing {
		l.failing = false
		l.cfg.Logger.Info("decision log: writing works again")
	}
}

// writeFailed counts the lost lines, drops what the buffer holds (a
// bufio.Writer's error sticks) and reports the error once until writing
// works again.
func (l *Logger) writeFailed(err error, lost int) {
	l.drop(DropWriteError, lost)
	l.buffered = 0
	l.bw.Reset(l.cfg.Output)
	if !l.failing {
		l.failing = true
		l.cfg.Logger.Error("decision log: writing failed, lines are dropped", "err", err)
	}
}
