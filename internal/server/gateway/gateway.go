// Package gateway serves the gateway endpoints: forward auth
// (/v1/forward-auth, forwardauth.go), Envoy's HTTP ext_authz
// (/v1/ext-authz/…) and Envoy's gRPC ext_authz (extauthz_grpc.go). It gets
// what it needs of the server (the decision, the decision ids, the labels
// and the allow reply) through Config; internal/server builds it and routes
// to it, and it never imports internal/server (docs/design.md).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/jsonstr"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
	"github.com/crmauthz/crmauthz/internal/tracing"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"
)

// The gateway endpoints (/v1/forward-auth, /v1/ext-authz/…, Envoy's gRPC
// Authorization/Check) share one path from the original request to an
// answer: Gateway.decide. It never allows on an error: every problem is a
// deny with a reason (403, 401 for identity, 413 for a body over the limit),
// never a 5xx, because Envoy lets a request through on an authorization
// server's 5xx when failure_mode_allow is set, and nginx turns anything but
// 2xx, 401 and 403 into a 500.

// Config configures New. Decide, NextID, ActionLabel, SpanType, WriteAllow,
// Identity and Metrics are required.
type Config struct {
	// Decide evaluates data.crmauthz.http_decision for in, in one read
	// transaction of the index: the decision, the policy's revision and the
	// index's applied seq (also on an error, as far as they are known).
	Decide func(ctx context.Context, in policy.HTTPInput) (d policy.HTTPDecision, revision string, seq uint64, err error)
	// NextID returns a new decision id.
	NextID func() string
	// ActionLabel bounds an action to a label of crmauthz_decisions_total;
	// SpanType bounds a resource type to a span attribute.
	ActionLabel, SpanType func(string) string
	// Actions are the labels ActionLabel gives besides "other": their
	// decision counters are found without a map (metrics.DecisionTable).
	Actions []string
	// WriteAllow writes the 200 reply of an allow on the HTTP endpoints
	// (the reply of /v1/decision); the headers are already set.
	WriteAllow func(w http.ResponseWriter, reason, id, revision string, seq uint64)
	// Identity finds the subject of a request.
	Identity *identity.Identifier
	Metrics  *metrics.Metrics
	// DecisionLog, if set, gets a sample of the decisions. nil: off.
	DecisionLog *decisionlog.Logger
	// Tracer, if set, exports a span per decision. nil: off.
	Tracer *tracing.Tracer
	Logger *slog.Logger // default: slog.Default()
	// MaxDecisionBytes limits the body of the original request.
	MaxDecisionBytes int64
}

// DefaultConfig returns the defaults New fills in for zero fields.
func DefaultConfig() Config {
	return Config{MaxDecisionBytes: 1 << 20}
}

// Gateway serves the gateway endpoints.
type Gateway struct {
	cfg Config
	// the decision counters and duration of each endpoint
	forwardAuth, extAuthzHTTP, extAuthzGRPC *metrics.DecisionTable
	grpcHeaders                             grpcHeaders // the fixed headers of a gRPC deny
	bufs                                    bodyBufs    // the error bodies' buffers
}

// New checks cfg, fills its defaults and returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.Decide == nil || cfg.NextID == nil || cfg.ActionLabel == nil || cfg.SpanType == nil ||
		cfg.WriteAllow == nil || cfg.Identity == nil || cfg.Metrics == nil {
		return nil, errors.New("gateway: Decide, NextID, ActionLabel, SpanType, WriteAllow, Identity and Metrics are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxDecisionBytes <= 0 {
		cfg.MaxDecisionBytes = DefaultConfig().MaxDecisionBytes
	}
	return &Gateway{cfg: cfg,
		forwardAuth:  cfg.Metrics.DecisionTable(endpointForwardAuth, cfg.Actions),
		extAuthzHTTP: cfg.Metrics.DecisionTable(endpointExtAuthzHTTP, cfg.Actions),
		extAuthzGRPC: cfg.Metrics.DecisionTable(endpointExtAuthzGRPC, cfg.Actions),
		grpcHeaders:  newGRPCHeaders(),
	}, nil
}

// counts is the decision counters of endpoint, one of the three above.
func (g *Gateway) counts(endpoint string) *metrics.DecisionTable {
	switch endpoint {
	case endpointForwardAuth:
		return g.forwardAuth
	case endpointExtAuthzHTTP:
		return g.extAuthzHTTP
	}
	return g.extAuthzGRPC
}

// Metric labels of the gateway endpoints.
const (
	endpointForwardAuth  = "forward_auth"
	endpointExtAuthzHTTP = "ext_authz_http"
	endpointExtAuthzGRPC = "ext_authz_grpc"
)

// Reasons crmauthz gives itself (the policy gives the others).
const (
	reasonInvalidRequest  = errcode.InvalidRequest  // the gateway did not say which request it asks about
	reasonInvalidPath     = "invalid_path"          // a path that is not in canonical form
	reasonMethodOverride  = "method_override"       // X-HTTP-Method-Override and its kin
	reasonUnauthenticated = errcode.Unauthenticated // no identity, or one that is not acceptable
	reasonBodyTruncated   = "body_truncated"        // Envoy sent part of the body
	reasonBodyTooLarge    = errcode.PayloadTooLarge // the body is over --max-decision-bytes
	reasonInvalidBody     = "invalid_body"          // not JSON, or not one reading
	reasonAmbiguousBody   = "ambiguous_body"        // one field given twice (regovalue.BodyError.Ambiguous)
	reasonEvaluationError = errcode.EvaluationError // the policy could not decide
	// the policy did not decide within --eval-timeout
	reasonEvaluationTimeout = errcode.EvaluationTimeout
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
	allow   bool
	status  int    // 200, 401, 403 or 413
	code    string // error code of a deny: "denied" for the policy's, else the reason
	reason  string // X-Authz-Reason
	message string // the error body's message, unless policyDeny
	// policyDeny: the policy's deny, whose message is "denied: " + reason,
	// and + ": " + detail when the policy gave a message (appendErrorBody)
	policyDeny bool
	detail     string
	id         string // X-Authz-Decision-Id
	revision   string
	seq        uint64
}

// decide answers one request of the CRM's API: parse the original
// request, find the subject, read the body, evaluate
// data.crmauthz.http_decision in one read transaction.
func (g *Gateway) decide(ctx context.Context, r gatewayRequest) (ans gatewayAnswer) {
	start := time.Now()
	ans.id = g.cfg.NextID()
	var (
		d       policy.HTTPDecision
		in      policy.HTTPInput
		evalErr error
		sp      trace.Span // nil: tracing off
	)
	if g.cfg.Tracer != nil {
		// the parent: Envoy's gRPC metadata, else the original request's
		// traceparent (docs/operations.md, "Tracing")
		_, sp = g.cfg.Tracer.StartSampled(ctx, gatewaySpanName(r.endpoint), trace.SpanKindServer, tracing.Metadata(ctx), r.headers)
	}
	defer func() {
		counts := g.counts(r.endpoint)
		counts.Duration(time.Since(start))
		action := g.cfg.ActionLabel(d.Action)
		if d.Action == "" {
			action = "other"
		}
		counts.CountLabel(action, ans.allow, ans.reason)
		if g.cfg.DecisionLog.Sample() {
			g.logGateway(r, in, d, &ans, evalErr, time.Since(start))
		}
		if sp != nil {
			td := tracing.Decision{ID: ans.id, Allow: ans.allow, Reason: ans.reason, Action: g.spanAction(d.Action),
				ResourceType: g.cfg.SpanType(d.ResourceType), Revision: ans.revision, AppliedSeq: ans.seq, Status: ans.status}
			if evalErr != nil {
				td.Error = ans.code
			}
			tracing.EndDecision(sp, td)
		}
	}()
	deny := func(status int, reason, format string, args ...any) gatewayAnswer {
		ans.status, ans.code, ans.reason, ans.message = status, reason, reason, fmt.Sprintf(format, args...)
		ans.policyDeny, ans.detail = false, ""
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
			g.cfg.Logger.Error("gateway decision failed (denied)", "endpoint", r.endpoint, "err", evalErr, "stack", string(debug.Stack()))
			d = policy.HTTPDecision{}
			ans.allow = false
			ans = deny(http.StatusForbidden, reasonEvaluationError, "the decision could not be evaluated (denied): %v", evalErr)
		}
	}()

	if r.invalid != nil {
		return deny(http.StatusForbidden, reasonInvalidRequest, "%v", r.invalid)
	}
	orig, err := ParseOriginal(r.method, r.uri)
	if err != nil {
		var pe *pathError
		if errors.As(err, &pe) {
			return deny(http.StatusForbidden, reasonInvalidPath, "%v", err)
		}
		return deny(http.StatusForbidden, reasonInvalidRequest, "%v", err)
	}
	if h := methodOverride(r.headers, orig.Query); h != "" {
		return deny(http.StatusForbidden, reasonMethodOverride,
			"the request carries %s, which some servers take as its method: denied (crmauthz decides on the request's own method)", h)
	}
	subject, err := g.cfg.Identity.Subject(r.headers)
	if err != nil {
		return deny(http.StatusUnauthorized, reasonUnauthenticated, "%v", err)
	}
	in = policy.HTTPInput{Subject: subject, Method: orig.Method, Path: orig.Path, Segments: orig.Segments}
	switch {
	case r.partial:
		return deny(http.StatusForbidden, reasonBodyTruncated,
			"the gateway sent a truncated body (x-envoy-auth-partial-body: true), which is never guessed at")
	case r.tooLarge || int64(len(r.body)) > g.cfg.MaxDecisionBytes:
		return deny(http.StatusRequestEntityTooLarge, reasonBodyTooLarge, "the body is larger than %d bytes", g.cfg.MaxDecisionBytes)
	case orig.Method == http.MethodGet || orig.Method == http.MethodHead:
		// the parameters of a GET or HEAD are not used
	default:
		// the body's keys folded, with the query's parameters merged in, as
		// the upstream's decoder and framework read them (docs/policies.md)
		v, err := regovalue.ParseParams(r.body, orig.Query)
		if err != nil {
			var be *regovalue.BodyError
			if errors.As(err, &be) && be.Ambiguous {
				return deny(http.StatusForbidden, reasonAmbiguousBody, "%v", err)
			}
			return deny(http.StatusForbidden, reasonInvalidBody, "%v", err)
		}
		in.Body = v
	}

	d, ans.revision, ans.seq, evalErr = g.cfg.Decide(ctx, in)
	if evalErr != nil {
		g.cfg.Logger.Error("gateway decision failed (denied)", "endpoint", r.endpoint, "method", orig.Method, "path", orig.Path, "err", evalErr)
		d = policy.HTTPDecision{}
		if errors.Is(evalErr, policy.ErrEvalTimeout) {
			return deny(http.StatusForbidden, reasonEvaluationTimeout, "the decision could not be evaluated in time (denied): %v", evalErr)
		}
		return deny(http.StatusForbidden, reasonEvaluationError, "the decision could not be evaluated (denied): %v", evalErr)
	}
	if !d.Allow {
		ans.status, ans.code, ans.reason = http.StatusForbidden, errcode.Denied, d.Reason
		ans.policyDeny, ans.detail = true, d.Message
		return ans
	}
	ans.allow, ans.status, ans.reason = true, http.StatusOK, d.Reason
	return ans
}

// spanAction is the span attribute of an action: "" when there is none.
func (g *Gateway) spanAction(a string) string {
	if a == "" {
		return ""
	}
	return g.cfg.ActionLabel(a)
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
func (g *Gateway) logGateway(r gatewayRequest, in policy.HTTPInput, d policy.HTTPDecision, ans *gatewayAnswer, evalErr error, took time.Duration) {
	input := appendLogInput(make([]byte, 0, 96+len(in.Subject)+len(in.Path)), r.endpoint, in, len(r.body))
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
	g.cfg.DecisionLog.Query(q)
}

// appendLogInput appends the input of a gateway decision's log line:
// what encoding/json wrote for the map of its keys, in their sorted order.
func appendLogInput(b []byte, endpoint string, in policy.HTTPInput, bodyBytes int) []byte {
	b = strconv.AppendInt(append(b, `{"body_bytes":`...), int64(bodyBytes), 10)
	b = jsonstr.Append(append(b, `,"endpoint":`...), endpoint)
	b = jsonstr.Append(append(b, `,"method":`...), in.Method)
	b = jsonstr.Append(append(b, `,"path":`...), in.Path)
	b = jsonstr.Append(append(b, `,"subject":`...), in.Subject)
	return append(b, '}')
}

// original is the request a gateway asks about, parsed.
type Original struct {
	Method   string
	Path     string   // as sent, without the query
	Query    string   // after '?', as sent
	Segments []string // percent-decoded
}

// pathError is a path crmauthz refuses to map (not canonical).
type pathError struct{ msg string }

func (e *pathError) Error() string { return e.msg }

// ParseOriginal checks the original method and request target. The path
// must be canonical, so that crmauthz and the upstream cannot read it
// differently: it starts with "/", holds only the characters RFC 3986 allows
// in a path, has no empty, "." or ".." segment (also percent-encoded), no
// encoded "/" or "\", no control characters and is UTF-8 once decoded. The
// query and a fragment are cut off; they do not take part in the mapping.
func ParseOriginal(method, uri string) (Original, error) {
	var o Original
	if method == "" {
		return o, errors.New("the original method is missing")
	}
	if len(method) > 32 || !httpguts.ValidHeaderFieldName(method) {
		return o, fmt.Errorf("the original method %q is not an HTTP method", truncate(method, 40))
	}
	o.Method = method
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
			o.Query = path[i+1:]
			if j := strings.IndexByte(o.Query, '#'); j >= 0 {
				o.Query = o.Query[:j]
			}
		}
		path = path[:i]
	}
	for i := 0; i < len(path); i++ {
		if !isPathChar(path[i]) {
			return o, &pathError{fmt.Sprintf("the path holds the character %q, which is not allowed in a path", path[i])}
		}
	}
	o.Path = path
	if path == "/" {
		o.Segments = []string{}
		return o, nil
	}
	// one allocation: the segments' slice (a segment without '%' is the
	// path's own string, and only "." and ".." can be wrong with it: its
	// characters are all pchar)
	o.Segments = make([]string, strings.Count(path, "/"))
	rest := path[1:]
	for i := range o.Segments {
		seg := rest
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			seg, rest = rest[:j], rest[j+1:]
		}
		if seg == "" {
			return o, &pathError{"the path has an empty segment (// or a trailing /)"}
		}
		dec, err := decodeSegment(seg)
		if err != nil {
			return o, err
		}
		o.Segments[i] = dec
	}
	return o, nil
}

// decodeSegment percent-decodes one segment of a path of pchar and checks
// it (ParseOriginal).
func decodeSegment(seg string) (string, error) {
	if strings.IndexByte(seg, '%') < 0 {
		if seg == "." || seg == ".." {
			return "", &pathError{"the path has a . or .. segment"}
		}
		return seg, nil
	}
	dec, err := url.PathUnescape(seg)
	if err != nil {
		return "", &pathError{fmt.Sprintf("the path segment %q is not valid percent-encoding", truncate(seg, 80))}
	}
	switch {
	case dec == "." || dec == "..":
		return "", &pathError{"the path has a . or .. segment"}
	case strings.ContainsAny(dec, "/\\"):
		return "", &pathError{"the path has an encoded / or \\ in a segment"}
	case !utf8.ValidString(dec):
		return "", &pathError{"the path is not UTF-8 once decoded"}
	}
	for _, r := range dec {
		if r < 0x20 || r == 0x7f {
			return "", &pathError{"the path holds an encoded control character"}
		}
	}
	return dec, nil
}

// methodOverrideHeaders are headers some frameworks take as the request's
// method. A request with one is denied: crmauthz decides on the method it is
// told, and the upstream must not act on another.
var methodOverrideHeaders = [...]string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// methodOverride names a method override the request carries (a header, or
// a _method query parameter as Rails and Laravel read it); "" when none.
func methodOverride(h identity.Headers, query string) string {
	for _, name := range methodOverrideHeaders {
		if len(headerValues(h, name)) > 0 {
			return "the header " + name
		}
	}
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, _, _ := strings.Cut(kv, "=")
		// "_method" has 7 bytes: a key that is 7 bytes neither as sent nor
		// once decoded ("+" is one byte, "%XX" one) is not it, and is not
		// decoded (no allocation for the target's followers%5B%5D)
		if len(k) != len(methodParam) && len(k)-2*strings.Count(k, "%") != len(methodParam) {
			continue
		}
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if strings.EqualFold(k, methodParam) {
			return "the query parameter _method"
		}
	}
	return ""
}

// methodParam is the query parameter some frameworks take as the method.
const methodParam = "_method"

// headerValues is h.Values(name) for a canonical name; a request's
// http.Header is read without canonicalising name again.
func headerValues(h identity.Headers, name string) []string {
	if hh, ok := h.(http.Header); ok {
		return hh[name]
	}
	return h.Values(name)
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
