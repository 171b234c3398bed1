package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Headers of the original request, by gateway.
const (
	hdrForwardedMethod = "X-Forwarded-Method" // Caddy forward_auth, Traefik ForwardAuth
	hdrForwardedURI    = "X-Forwarded-Uri"
	hdrOriginalMethod  = "X-Original-Method" // nginx auth_request (set in its config)
	hdrOriginalURI     = "X-Original-Uri"
	hdrPartialBody     = "X-Envoy-Auth-Partial-Body"
)

// ForwardAuthPath is the route of forward auth.
const ForwardAuthPath = "/v1/forward-auth"

// ExtAuthzPrefix is the path prefix of Envoy's HTTP ext_authz (its path_prefix).
const ExtAuthzPrefix = "/v1/ext-authz"

// ForwardAuth serves /v1/forward-auth (any method) for nginx auth_request,
// Caddy forward_auth and Traefik ForwardAuth, and returns the reply's
// status. The original method and URI come from X-Forwarded-Method and
// X-Forwarded-Uri or X-Original-Method and X-Original-URI; when both pairs
// are sent they must agree (a client can add the pair its gateway does not
// set, and must not be able to choose the request that is authorized). The
// body is never read: these gateways do not send it.
func (g *Gateway) ForwardAuth(w http.ResponseWriter, req *http.Request) int {
	r := gatewayRequest{endpoint: endpointForwardAuth, headers: req.Header}
	var err error
	r.method, err = originalHeader(req.Header, hdrForwardedMethod, hdrOriginalMethod)
	if err == nil {
		r.uri, err = originalHeader(req.Header, hdrForwardedURI, hdrOriginalURI)
	}
	r.invalid = err
	return g.writeGateway(w, g.decide(req.Context(), r))
}

// ExtAuthzHTTP serves /v1/ext-authz/{original path} for Envoy's HTTP
// ext_authz (http_service with path_prefix /v1/ext-authz), and returns the
// reply's status: the original method is the request's, the original path
// and query follow the prefix, and the body, when Envoy sends it
// (with_request_body), is the request's.
func (g *Gateway) ExtAuthzHTTP(w http.ResponseWriter, req *http.Request) int {
	uri := req.RequestURI
	if !strings.HasPrefix(uri, "/") {
		uri = req.URL.RequestURI() // absolute-form request target
	}
	r := gatewayRequest{endpoint: endpointExtAuthzHTTP, method: req.Method, headers: req.Header}
	rest, ok := strings.CutPrefix(uri, ExtAuthzPrefix)
	if !ok || !strings.HasPrefix(rest, "/") {
		// the prefix itself was percent-encoded: the path is not the one routed
		r.invalid = fmt.Errorf("the request target %q does not start with %s/", truncate(uri, 80), ExtAuthzPrefix)
		return g.writeGateway(w, g.decide(req.Context(), r))
	}
	r.uri = rest
	for _, v := range req.Header.Values(hdrPartialBody) {
		if strings.EqualFold(strings.TrimSpace(v), "true") {
			r.partial = true
		}
	}
	if !r.partial && req.Body != nil {
		// A body over the limit does not mark the connection to be closed
		// (it did not under Gin either).
		body, tooLarge, err := readBody(req.Body, req.ContentLength, g.cfg.MaxDecisionBytes)
		switch {
		case tooLarge:
			r.tooLarge = true // decide answers 413
		case err != nil:
			r.invalid = fmt.Errorf("reading the body: %v", err)
		default:
			r.body = body
		}
	}
	return g.writeGateway(w, g.decide(req.Context(), r))
}

// readBody reads body whole, as io.ReadAll of http.MaxBytesReader(nil,
// body, limit) did: tooLarge when it holds more than limit bytes, else the
// bytes or the reader's error. The buffer is sized by the Content-Length
// (size, -1 when unknown) when it is within the limit: one allocation.
func readBody(body io.Reader, size, limit int64) (b []byte, tooLarge bool, err error) {
	n := int64(512)
	if size >= 0 && size < limit {
		n = size + 1 // room to read the EOF without growing
	}
	b = make([]byte, 0, n)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		// read no more than one byte past the limit
		room := b[len(b):cap(b)]
		if int64(len(b)+len(room)) > limit+1 {
			room = room[:limit+1-int64(len(b))]
		}
		m, rerr := body.Read(room)
		b = b[:len(b)+m]
		if int64(len(b)) > limit {
			return nil, true, nil
		}
		if rerr == io.EOF {
			return b, false, nil
		}
		if rerr != nil {
			return nil, false, rerr
		}
	}
}

// originalHeader returns the value of the header a, or of b; each may be
// sent once, and when both are sent they must be equal.
func originalHeader(h http.Header, a, b string) (string, error) {
	va, vb := h[a], h[b] // a and b are canonical
	switch {
	case len(va) > 1:
		return "", fmt.Errorf("%s is given %d times", a, len(va))
	case len(vb) > 1:
		return "", fmt.Errorf("%s is given %d times", b, len(vb))
	case len(va) == 1 && len(vb) == 1 && va[0] != vb[0]:
		return "", fmt.Errorf("%s and %s disagree: the gateway must set one and remove the other", a, b)
	case len(va) == 1:
		return va[0], nil
	case len(vb) == 1:
		return vb[0], nil
	}
	return "", fmt.Errorf("neither %s nor %s is set: configure the gateway to send the original request (see docs/gateways.md)", a, b)
}

// The reply's headers, in canonical form (the keys http.Header.Set would
// use; TestReplyHeadersCanonical), so that they are set without
// canonicalising them per request.
const (
	hdrAuthzReason     = "X-Authz-Reason"
	hdrAuthzDecisionID = "X-Authz-Decision-Id"
	hdrCacheControl    = "Cache-Control"
	hdrContentType     = "Content-Type"
	hdrWWWAuthenticate = "Www-Authenticate"
)

// The values of the reply's fixed headers; shared, never modified (a
// header's Add appends to a copy: each has a capacity of one).
var (
	jsonContentType = []string{"application/json; charset=utf-8"}
	noStore         = []string{"no-store"}
	bearerChallenge = []string{`Bearer realm="crmauthz"`}
)

// writeGateway writes a gateway answer: 200 with the decision, or the
// error body with the deny's status, and returns the status. Both carry
// X-Authz-Reason and X-Authz-Decision-Id (removed when empty, as Gin's
// c.Header did) and Cache-Control: no-store.
func (g *Gateway) writeGateway(w http.ResponseWriter, a gatewayAnswer) int {
	h := w.Header()
	vals := make([]string, 2) // the values of both headers in one allocation
	vals[0], vals[1] = a.reason, a.id
	setOrDelHeader(h, hdrAuthzReason, vals[0:1:1])
	setOrDelHeader(h, hdrAuthzDecisionID, vals[1:2:2])
	h[hdrCacheControl] = noStore
	if a.allow {
		g.cfg.WriteAllow(w, a.reason, a.id, a.revision, a.seq)
		return http.StatusOK
	}
	if a.status == http.StatusUnauthorized {
		h[hdrWWWAuthenticate] = bearerChallenge
	}
	if len(h[hdrContentType]) == 0 {
		h[hdrContentType] = jsonContentType
	}
	w.WriteHeader(a.status)
	bp := g.bufs.errorBody(&a)
	_, _ = w.Write(*bp)
	g.bufs.put(bp)
	return a.status
}

// setOrDelHeader sets the header key (canonical) to the value v (one
// value), or removes it when the value is empty.
func setOrDelHeader(h http.Header, key string, v []string) {
	if v[0] == "" {
		delete(h, key)
		return
	}
	h[key] = v
}
