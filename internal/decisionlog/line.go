package decisionlog

import (
	"strconv"
	"time"
	"unicode/utf8"
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
	b = appendJSONString(b, ev.Labels.ID)
	b = append(b, `,"version":`...)
	b = appendJSONString(b, ev.Labels.Version)
	b = append(b, `,"policy_revision":`...)
	b = appendJSONString(b, ev.Labels.PolicyRevision)
	b = append(b, `,"applied_seq":`...)
	b = appendJSONString(b, ev.Labels.AppliedSeq)
	b = append(b, `},"decision_id":`...)
	b = appendJSONString(b, ev.DecisionID)
	if ev.BatchDecisionID != "" {
		b = append(b, `,"batch_decision_id":`...)
		b = appendJSONString(b, ev.BatchDecisionID)
	}
	b = append(b, `,"path":`...)
	b = appendJSONString(b, ev.Path)
	b = append(b, `,"input":{"action":`...)
	b = appendJSONString(b, in.action)
	b = append(b, `,"resource":{"id":`...)
	b = appendJSONString(b, in.id)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, in.typ)
	b = append(b, `},"subject":`...)
	b = appendJSONString(b, in.subject)
	if in.hasTarget {
		b = append(b, `,"target":`...)
		b = appendJSONString(b, in.target)
	}
	b = append(b, '}')
	if errMsg == "" {
		b = append(b, `,"result":{"allow":`...)
		b = strconv.AppendBool(b, allow)
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, reason)
		b = append(b, '}')
	} else {
		b = append(b, `,"error":{"code":"evaluation_error","message":`...)
		b = appendJSONString(b, errMsg)
		b = append(b, '}')
	}
	b = append(b, `,"timestamp":"`...)
	b = ev.Timestamp.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","metrics":{"timer_server_handler_ns":`...)
	b = strconv.AppendInt(b, ev.Metrics.TimerServerHandlerNS, 10)
	return append(b, `}}`...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as encoding/json encodes a string with HTML
// escaping (json.Marshal's default).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
