package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
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
// Caddy forward_auth and Traefik ForwardAuth. The original method and URI
// come from X-Forwarded-Method and X-Forwarded-Uri or X-Original-Method and
// X-Original-URI; when both pairs are sent they must agree (a client can add
// the pair its gateway does not set, and must not be able to choose the
// request that is authorized). The body is never read: these gateways do not
// send it.
func (g *Gateway) ForwardAuth(c *gin.Context) {
	r := gatewayRequest{endpoint: endpointForwardAuth, headers: c.Request.Header}
	var err error
	r.method, err = originalHeader(c.Request.Header, hdrForwardedMethod, hdrOriginalMethod)
	if err == nil {
		r.uri, err = originalHeader(c.Request.Header, hdrForwardedURI, hdrOriginalURI)
	}
	r.invalid = err
	g.writeGateway(c, g.decide(c.Request.Context(), r))
}

// ExtAuthzHTTP serves /v1/ext-authz/{original path} for Envoy's HTTP
// ext_authz (http_service with path_prefix /v1/ext-authz): the original
// method is the request's, the original path and query follow the prefix,
// and the body, when Envoy sends it (with_request_body), is the request's.
func (g *Gateway) ExtAuthzHTTP(c *gin.Context) {
	uri := c.Request.RequestURI
	if !strings.HasPrefix(uri, "/") {
		uri = c.Request.URL.RequestURI() // absolute-form request target
	}
	r := gatewayRequest{endpoint: endpointExtAuthzHTTP, method: c.Request.Method, headers: c.Request.Header}
	rest, ok := strings.CutPrefix(uri, ExtAuthzPrefix)
	if !ok || !strings.HasPrefix(rest, "/") {
		// the prefix itself was percent-encoded: the path is not the one routed
		r.invalid = fmt.Errorf("the request target %q does not start with %s/", truncate(uri, 80), ExtAuthzPrefix)
		g.writeGateway(c, g.decide(c.Request.Context(), r))
		return
	}
	r.uri = rest
	for _, v := range c.Request.Header.Values(hdrPartialBody) {
		if strings.EqualFold(strings.TrimSpace(v), "true") {
			r.partial = true
		}
	}
	if !r.partial && c.Request.Body != nil {
		body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, g.cfg.MaxDecisionBytes))
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			r.tooLarge = true // decide answers 413
		case err != nil:
			r.invalid = fmt.Errorf("reading the body: %v", err)
		default:
			r.body = body
		}
	}
	g.writeGateway(c, g.decide(c.Request.Context(), r))
}

// originalHeader returns the value of the header a, or of b; each may be
// sent once, and when both are sent they must be equal.
func originalHeader(h http.Header, a, b string) (string, error) {
	va, vb := h.Values(a), h.Values(b)
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

// writeGateway writes a gateway answer: 200 with the decision, or the
// error body with the deny's status. Both carry X-Authz-Reason and
// X-Authz-Decision-Id.
func (g *Gateway) writeGateway(c *gin.Context, a gatewayAnswer) {
	c.Header("X-Authz-Reason", a.reason)
	c.Header("X-Authz-Decision-Id", a.id)
	c.Header("Cache-Control", "no-store")
	if a.allow {
		g.cfg.WriteAllow(c, a.reason, a.id, a.revision, a.seq)
		return
	}
	if a.status == http.StatusUnauthorized {
		c.Header("WWW-Authenticate", `Bearer realm="crmauthz"`)
	}
	c.Data(a.status, "application/json; charset=utf-8", a.errorBody())
	c.Abort()
}
