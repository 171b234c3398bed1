package decisionlog

import (
	"strconv"
	"time"

	"github.com/crmauthz/crmauthz/internal/jsonstr"
)

// The line of one decision (of /v1/decision, or one check of
// /v1/decisions) appended by hand: the bytes json.Marshal makes of the
// event with its input and result maps (keys sorted, HTML characters, line
// separators and invalid UTF-8 escaped as encoding/json does; a test keeps
// the two identical), without the maps, the reflection and their garbage.
// Masked and erased fields, and Data API queries, go through json.Marshal.

// lineInput is the input of a decision line.
type lineInput struct {
	subject, action, typ, id, target string
	hasTarget                        bool
}

// appendDecisionLine appends the JSON of ev (its Input and Result unset)
// with the input in and, when errMsg is empty, the result {allow, reason};
// else the error errMsg. No newline.
func appendDecisionLine(b []byte, ev *event, in lineInput, allow bool, reason, errMsg string) []byte {
	b = append(b, `{"labels":{"id":`...)
	b = jsonstr.Append(b, ev.Labels.ID)
	b = append(b, `,"version":`...)
	b = jsonstr.Append(b, ev.Labels.Version)
	b = append(b, `,"policy_revision":`...)
	b = jsonstr.Append(b, ev.Labels.PolicyRevision)
	b = append(b, `,"applied_seq":`...)
	b = jsonstr.Append(b, ev.Labels.AppliedSeq)
	b = append(b, `},"decision_id":`...)
	b = jsonstr.Append(b, ev.DecisionID)
	if ev.BatchDecisionID != "" {
		b = append(b, `,"batch_decision_id":`...)
		b = jsonstr.Append(b, ev.BatchDecisionID)
	}
	b = append(b, `,"path":`...)
	b = jsonstr.Append(b, ev.Path)
	b = append(b, `,"input":{"action":`...)
	b = jsonstr.Append(b, in.action)
	b = append(b, `,"resource":{"id":`...)
	b = jsonstr.Append(b, in.id)
	b = append(b, `,"type":`...)
	b = jsonstr.Append(b, in.typ)
	b = append(b, `},"subject":`...)
	b = jsonstr.Append(b, in.subject)
	if in.hasTarget {
		b = append(b, `,"target":`...)
		b = jsonstr.Append(b, in.target)
	}
	b = append(b, '}')
	if errMsg == "" {
		b = append(b, `,"result":{"allow":`...)
		b = strconv.AppendBool(b, allow)
		b = append(b, `,"reason":`...)
		b = jsonstr.Append(b, reason)
		b = append(b, '}')
	} else {
		b = append(b, `,"error":{"code":"evaluation_error","message":`...)
		b = jsonstr.Append(b, errMsg)
		b = append(b, '}')
	}
	b = append(b, `,"timestamp":"`...)
	b = ev.Timestamp.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","metrics":{"timer_server_handler_ns":`...)
	b = strconv.AppendInt(b, ev.Metrics.TimerServerHandlerNS, 10)
	return append(b, `}}`...)
}
