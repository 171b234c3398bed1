package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/crmauthz/crmauthz/internal/tracing"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"
)

// The gateway endpoints (/v1/forward-auth, /v1/ext-authz/…, Envoy's gRPC
// Authorization/Check) share one path from the original request to an
// answer: gatewayDecide. It never allows on an error: every problem is a
// deny with a reason (403, 401 for identity, 413 for a body over the limit),
// never a 5xx, because Envoy lets a request through on an authorization
// server's 5xx when failure_mode_allow is set, and nginx turns anything but
// 2xx, 401 and 403 into a 500.

// Metric labels of the gateway endpoints.
const (
	endpointForwardAuth  = "forward_auth"
	endpointExtAuthzHTTP = "ext_authz_http"
	endpointExtAuthzGRPC = "ext_authz_grpc"
)

// Reasons crmauthz gives itself (the policy gives the others).
const (
	reasonInvalidRequest  = codeInvalidRequest  // the gateway did not say which request it asks about
	reasonInvalidPath     = "invalid_path"      // a path that is not in canonical form
	reasonMethodOverride  = "method_override"   // X-HTTP-Method-Override and its kin
	reasonUnauthenticated = codeUnauthenticated // no identity, or one that is not acceptable
	reasonBodyTruncated   = "body_truncated"    // Envoy sent part of the body
	reasonBodyTooLarge    = codePayloadTooLarge // the body is over --max-decision-bytes
	reasonInvalidBody     = "invalid_body"      // not JSON, or not one reading
	reasonAmbiguousBody   = "ambiguous_body"    // one field given twice (regovalue.BodyError.Ambiguous)
	reasonEvaluationError = codeEvaluationError // the policy could not decide
	// the policy did not decide within --eval-timeout
	reasonEvaluationTimeout = codeEvaluationTimeout
)

// maxURIBytes is the longest original URI accepted.
const maxURIBytes = 8 << 10

// gatewayRequest is what a gateway tells about the original request.
type gatewayRequest struct {
	endpoint string
	method   string
	uri      string // the request target: path and query, as sent
	headers  identity.Headers
	body     []byte
	partial  bool // Envoy's x-envoy-auth-partial-body: true
	tooLarge bool // the body is over MaxDecisionBytes (and was not read whole)
	// invalid, when set, is why the gateway's request does not say which
	// request it asks about: denied as invalid_request.
	invalid error
}

// gatewayAnswer is the outcome: allow (200) or a deny with its status.
type gatewayAnswer struct {
	allow    bool
	status   int    // 200, 401, 403 or 413
	code     string // error code of a deny: "denied" for the policy's, else the reason
	reason   string // X-Authz-Reason
	message  string
	id       string // X-Authz-Decision-Id
	revision string
	seq      uint64
}

func (a *gatewayAnswer) errorBody() []byte {
	e := map[string]any{"code": a.code, "message": a.message, "reason": a.reason, "decision_id": a.id}
	b, _ := json.Marshal(errorBody{Error: e})
	return b
}

// gatewayDecide answers one request of the CRM's API: parse the original
// request, find the subject, read the body, evaluate
// data.crmauthz.http_decision in one read transaction.
func (s *Server) gatewayDecide(ctx context.Context, r gatewayRequest) (ans gatewayAnswer) {
	start := time.Now()
	ans.id = s.ids.next()
	var (
		d       policy.HTTPDecision
		in      policy.HTTPInput
		evalErr error
		sp      trace.Span // nil: tracing off
	)
	if s.tr != nil {
		// the parent: Envoy's gRPC metadata, else the original request's
		// traceparent (docs/operations.md, "Tracing")
		_, sp = s.tr.StartSampled(ctx, gatewaySpanName(r.endpoint), trace.SpanKindServer, tracing.Metadata(ctx), r.headers)
	}
	defer func() {
		s.m.DecisionDuration(r.endpoint, time.Since(start))
		action := actionLabel(d.Action)
		if d.Action == "" {
			action = "other"
		}
		s.m.Decision(r.endpoint, action, ans.allow, ans.reason)
		if s.dlog.Sample() {
			s.logGateway(r, in, d, &ans, evalErr, time.Since(start))
		}
		if sp != nil {
			td := tracing.Decision{ID: ans.id, Allow: ans.allow, Reason: ans.reason, Action: spanAction(d.Action),
				ResourceType: spanType(d.ResourceType), Revision: ans.revision, AppliedSeq: ans.seq, Status: ans.status}
			if evalErr != nil {
				td.Error = ans.code
			}
			tracing.EndDecision(sp, td)
		}
	}()
	deny := func(status int, reason, format string, args ...any) gatewayAnswer {
		ans.status, ans.code, ans.reason, ans.message = status, reason, reason, fmt.Sprintf(format, args...)
		return ans
	}
	// A panic on the way (bbolt panics on a corrupted page of the index) is
	// a deny like any evaluation error, never the 500 of the recovery
	// middleware: this runs before the deferred metrics and decision log.
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			evalErr = fmt.Errorf("panic: %v", v)
			s.log.Error("gateway decision failed (denied)", "endpoint", r.endpoint, "err", evalErr, "stack", string(debug.Stack()))
			d = policy.HTTPDecision{}
			ans.allow = false
			ans = deny(http.StatusForbidden, reasonEvaluationError, "the decision could not be evaluated (denied): %v", evalErr)
		}
	}()

	if r.invalid != nil {
		return deny(http.StatusForbidden, reasonInvalidRequest, "%v", r.invalid)
	}
	orig, err := parseOriginal(r.method, r.uri)
	if err != nil {
		var pe *pathError
		if errors.As(err, &pe) {
			return deny(http.StatusForbidden, reasonInvalidPath, "%v", err)
		}
		return deny(http.StatusForbidden, reasonInvalidRequest, "%v", err)
	}
	if h := methodOverride(r.headers, orig.query); h != "" {
		return deny(http.StatusForbidden, reasonMethodOverride,
			"the request carries %s, which some servers take as its method: denied (crmauthz decides on the request's own method)", h)
	}
	subject, err := s.cfg.Identity.Subject(r.headers)
	if err != nil {
		return deny(http.StatusUnauthorized, reasonUnauthenticated, "%v", err)
	}
	in = policy.HTTPInput{Subject: subject, Method: orig.method, Path: orig.path, Segments: orig.segments}
	switch {
	case r.partial:
		return deny(http.StatusForbidden, reasonBodyTruncated,
			"the gateway sent a truncated body (x-envoy-auth-partial-body: true), which is never guessed at")
	case r.tooLarge || int64(len(r.body)) > s.cfg.MaxDecisionBytes:
		return deny(http.StatusRequestEntityTooLarge, reasonBodyTooLarge, "the body is larger than %d bytes", s.cfg.MaxDecisionBytes)
	case orig.method == http.MethodGet || orig.method == http.MethodHead:
		// the parameters of a GET or HEAD are not used
	default:
		// the body's keys folded, with the query's parameters merged in, as
		// the upstream's decoder and framework read them (docs/policies.md)
		v, err := regovalue.ParseParams(r.body, orig.query)
		if err != nil {
			var be *regovalue.BodyError
			if errors.As(err, &be) && be.Ambiguous {
				return deny(http.StatusForbidden, reasonAmbiguousBody, "%v", err)
			}
			return deny(http.StatusForbidden, reasonInvalidBody, "%v", err)
		}
		in.Body = v
	}

	evalErr = s.ix.View(func(tx *index.ReadTx) error {
		ans.seq = tx.AppliedSeq()
		var err error
		d, ans.revision, err = s.eng.DecideHTTP(ctx, tx, in)
		return err
	})
	if evalErr != nil {
		s.log.Error("gateway decision failed (denied)", "endpoint", r.endpoint, "method", orig.method, "path", orig.path, "err", evalErr)
		d = policy.HTTPDecision{}
		if errors.Is(evalErr, policy.ErrEvalTimeout) {
			return deny(http.StatusForbidden, reasonEvaluationTimeout, "the decision could not be evaluated in time (denied): %v", evalErr)
		}
		return deny(http.StatusForbidden, reasonEvaluationError, "the decision could not be evaluated (denied): %v", evalErr)
	}
	if !d.Allow {
		ans.status, ans.code, ans.reason = http.StatusForbidden, codeDenied, d.Reason
		ans.message = "denied: " + d.Reason
		if d.Message != "" {
			ans.message += ": " + d.Message
		}
		return ans
	}
	ans.allow, ans.status, ans.reason = true, http.StatusOK, d.Reason
	return ans
}

// gatewaySpanName is the span name of a gateway endpoint.
func gatewaySpanName(endpoint string) string {
	switch endpoint {
	case endpointForwardAuth:
		return tracing.SpanForwardAuth
	case endpointExtAuthzHTTP:
		return tracing.SpanExtAuthzHTTP
	}
	return tracing.SpanExtAuthzGRPC
}

// logGateway queues the decision log line of one gateway decision, in the
// shape of a Data API query of crmauthz/http_decision. The body is not logged.
func (s *Server) logGateway(r gatewayRequest, in policy.HTTPInput, d policy.HTTPDecision, ans *gatewayAnswer, evalErr error, took time.Duration) {
	input, _ := json.Marshal(map[string]any{
		"endpoint": r.endpoint, "subject": in.Subject, "method": in.Method, "path": in.Path,
		"body_bytes": len(r.body),
	})
	result := map[string]any{"allow": ans.allow, "reason": ans.reason}
	if d.Action != "" {
		result["action"] = d.Action
		result["resource"] = map[string]any{"type": d.ResourceType, "id": d.ResourceID}
		result["targets"] = d.Targets
	}
	q := decisionlog.Query{ID: ans.id, Path: "crmauthz/http_decision", Input: input, Result: result,
		Revision: ans.revision, AppliedSeq: ans.seq, Duration: took}
	if evalErr != nil {
		q.Err, q.Result = evalErr.Error(), nil
	}
	s.dlog.Query(q)
}

// original is the request a gateway asks about, parsed.
type original struct {
	method   string
	path     string   // as sent, without the query
	query    string   // after '?', as sent
	segments []string // percent-decoded
}

// pathError is a path crmauthz refuses to map (not canonical).
type pathError struct{ msg string }

func (e *pathError) Error() string { return e.msg }

// parseOriginal checks the original method and request target. The path
// must be canonical, so that crmauthz and the upstream cannot read it
// differently: it starts with "/", holds only the characters RFC 3986 allows
// in a path, has no empty, "." or ".." segment (also percent-encoded), no
// encoded "/" or "\", no control characters and is UTF-8 once decoded. The
// query and a fragment are cut off; they do not take part in the mapping.
func parseOriginal(method, uri string) (original, error) {
	var o original
	if method == "" {
		return o, errors.New("the original method is missing")
	}
	if len(method) > 32 || !httpguts.ValidHeaderFieldName(method) {
		return o, fmt.Errorf("the original method %q is not an HTTP method", truncate(method, 40))
	}
	o.method = method
	switch {
	case uri == "":
		return o, errors.New("the original URI is missing")
	case len(uri) > maxURIBytes:
		return o, &pathError{fmt.Sprintf("the original URI is longer than %d bytes", maxURIBytes)}
	case uri[0] != '/':
		return o, &pathError{fmt.Sprintf("the original URI %q does not start with /", truncate(uri, 80))}
	}
	path := uri
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		if path[i] == '?' {
			o.query = path[i+1:]
			if j := strings.IndexByte(o.query, '#'); j >= 0 {
				o.query = o.query[:j]
			}
		}
		path = path[:i]
	}
	for i := 0; i < len(path); i++ {
		if !isPathChar(path[i]) {
			return o, &pathError{fmt.Sprintf("the path holds the character %q, which is not allowed in a path", path[i])}
		}
	}
	o.path = path
	if path == "/" {
		o.segments = []string{}
		return o, nil
	}
	raw := strings.Split(path[1:], "/")
	o.segments = make([]string, len(raw))
	for i, seg := range raw {
		if seg == "" {
			return o, &pathError{"the path has an empty segment (// or a trailing /)"}
		}
		dec, err := url.PathUnescape(seg)
		if err != nil {
			return o, &pathError{fmt.Sprintf("the path segment %q is not valid percent-encoding", truncate(seg, 80))}
		}
		switch {
		case dec == "." || dec == "..":
			return o, &pathError{"the path has a . or .. segment"}
		case strings.ContainsAny(dec, "/\\"):
			return o, &pathError{"the path has an encoded / or \\ in a segment"}
		case !utf8.ValidString(dec):
			return o, &pathError{"the path is not UTF-8 once decoded"}
		}
		for _, r := range dec {
			if r < 0x20 || r == 0x7f {
				return o, &pathError{"the path holds an encoded control character"}
			}
		}
		o.segments[i] = dec
	}
	return o, nil
}

// methodOverrideHeaders are headers some frameworks take as the request's
// method. A request with one is denied: crmauthz decides on the method it is
// told, and the upstream must not act on another.
var methodOverrideHeaders = [...]string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// methodOverride names a method override the request carries (a header, or
// a _method query parameter as Rails and Laravel read it); "" when none.
func methodOverride(h identity.Headers, query string) string {
	for _, name := range methodOverrideHeaders {
		if len(h.Values(name)) > 0 {
			return "the header " + name
		}
	}
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, _, _ := strings.Cut(kv, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if strings.EqualFold(k, "_method") {
			return "the query parameter _method"
		}
	}
	return ""
}

// isPathChar reports whether c may appear in a path as sent: RFC 3986's
// pchar (unreserved, sub-delims, ":", "@", and "%" of an escape) and "/".
func isPathChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@%/", c) >= 0
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
