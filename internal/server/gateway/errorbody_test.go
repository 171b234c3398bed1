package gateway

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"slices"
	"testing"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
)

// marshalErrorBody is the error body as it was written before
// appendErrorBody: encoding/json of the map of its four keys.
func marshalErrorBody(tb testing.TB, code, id, message, reason string) []byte {
	tb.Helper()
	b, err := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": message, "reason": reason, "decision_id": id}})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// The strings of the error bodies' cases: what encoding/json escapes.
var jsonStrings = []string{
	"", "owner_only", "d-0123456789abcdef", `quote " and \ backslash`, "tab\tnew\nline\rret\bback\fform",
	"\x00\x01\x1f\x7f", "<script>&amp;</script>", "é ü 日本 😀", "bad \xff utf8 \xc3", "trunc \xe6\x97",
	"line\u2028para\u2029sep", "…", "a\u2027b\u202ac",
}

func TestErrorBodyMatchesMarshal(t *testing.T) {
	for _, s := range jsonStrings {
		for _, a := range []gatewayAnswer{
			{code: errcode.Denied, reason: s, id: "d-1", policyDeny: true},
			{code: errcode.Denied, reason: "not_owner", id: s, policyDeny: true, detail: s},
			{code: errcode.Denied, reason: s, id: s, policyDeny: true, detail: "x"},
			{code: reasonUnauthenticated, reason: reasonUnauthenticated, id: "d-2", message: s},
			{code: s, reason: s, id: s, message: s},
		} {
			t.Run(s, func(t *testing.T) {
				msg := a.message
				if a.policyDeny {
					msg = "denied: " + a.reason
					if a.detail != "" {
						msg += ": " + a.detail
					}
				}
				want := marshalErrorBody(t, a.code, a.id, msg, a.reason)
				if got := a.errorBody(); !bytes.Equal(got, want) {
					t.Errorf("errorBody of %+v\n got %s\nwant %s", a, got, want)
				}
			})
		}
	}
}

func FuzzErrorBody(f *testing.F) {
	for _, s := range jsonStrings {
		f.Add(s, s, true)
	}
	f.Fuzz(func(t *testing.T, reason, detail string, policyDeny bool) {
		a := gatewayAnswer{code: errcode.Denied, reason: reason, id: "d-1", policyDeny: policyDeny, detail: detail, message: detail}
		msg := detail
		if policyDeny {
			msg = "denied: " + reason
			if detail != "" {
				msg += ": " + detail
			}
		}
		if got, want := a.errorBody(), marshalErrorBody(t, a.code, a.id, msg, reason); !bytes.Equal(got, want) {
			t.Errorf("got %s\nwant %s", got, want)
		}
	})
}

func TestReplyHeadersCanonical(t *testing.T) {
	for _, k := range []string{hdrAuthzReason, hdrAuthzDecisionID, hdrCacheControl, hdrContentType, hdrWWWAuthenticate,
		hdrForwardedMethod, hdrForwardedURI, hdrOriginalMethod, hdrOriginalURI, methodOverrideHeaders[0], methodOverrideHeaders[1], methodOverrideHeaders[2]} {
		if c := textproto.CanonicalMIMEHeaderKey(k); c != k {
			t.Errorf("%q is not canonical (%q)", k, c)
		}
	}
}

// TestWriteGatewayDeny: a deny's reply, status, headers and body, as the
// headers were set with http.Header.Set and the body marshalled.
func TestWriteGatewayDeny(t *testing.T) {
	g, err := New(fullConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		a    gatewayAnswer
		msg  string
	}{
		{"policy", gatewayAnswer{status: 403, code: errcode.Denied, reason: "not_owner", id: "d-1", policyDeny: true, detail: "only <the> owner"}, "denied: not_owner: only <the> owner"},
		{"401", gatewayAnswer{status: 401, code: reasonUnauthenticated, reason: reasonUnauthenticated, id: "d-2", message: "no X-User-Id header"}, "no X-User-Id header"},
		{"413", gatewayAnswer{status: 413, code: reasonBodyTooLarge, reason: reasonBodyTooLarge, id: "d-3", message: "too large"}, "too large"},
		{"no reason", gatewayAnswer{status: 403, code: errcode.Denied, id: "d-4", policyDeny: true}, "denied: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // the second reply reuses the pooled buffer
				rec := httptest.NewRecorder()
				rec.Header().Set("X-Authz-Reason", "stale")
				if st := g.writeGateway(rec, tc.a); st != tc.a.status || rec.Code != tc.a.status {
					t.Fatalf("status %d (recorded %d), want %d", st, rec.Code, tc.a.status)
				}
				want := http.Header{"Content-Type": {"application/json; charset=utf-8"}, "Cache-Control": {"no-store"},
					"X-Authz-Decision-Id": {tc.a.id}}
				if tc.a.reason != "" {
					want.Set("X-Authz-Reason", tc.a.reason)
				}
				if tc.a.status == 401 {
					want.Set("WWW-Authenticate", `Bearer realm="crmauthz"`)
				}
				if got := rec.Header(); !maps.EqualFunc(got, want, slices.Equal[[]string]) {
					t.Errorf("headers %v, want %v", got, want)
				}
				if got, want := rec.Body.Bytes(), marshalErrorBody(t, tc.a.code, tc.a.id, tc.msg, tc.a.reason); !bytes.Equal(got, want) {
					t.Errorf("body %s, want %s", got, want)
				}
			}
		})
	}
}

// TestLogInputMatchesMarshal: the decision log's input of a gateway
// decision is what encoding/json wrote for the map of its keys.
func TestLogInputMatchesMarshal(t *testing.T) {
	for _, s := range jsonStrings {
		for _, n := range []int{0, 17, 1 << 20} {
			t.Run(s, func(t *testing.T) {
				in := policy.HTTPInput{Subject: s, Method: "PUT", Path: "/contacts/" + s}
				want, err := json.Marshal(map[string]any{"endpoint": endpointExtAuthzHTTP, "subject": in.Subject, "method": in.Method,
					"path": in.Path, "body_bytes": n})
				if err != nil {
					t.Fatal(err)
				}
				if got := appendLogInput(nil, endpointExtAuthzHTTP, in, n); !bytes.Equal(got, want) {
					t.Errorf("got %s\nwant %s", got, want)
				}
			})
		}
	}
}
