package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/crmauthz/crmauthz/internal/server/gateway"
)

// The fuzz targets' seed corpora are in testdata/fuzz/<name>/ and run with
// every `go test`; `go test -fuzz FuzzRouteMapping ./internal/server` explores.

// refRoute is docs/gateways.md's route table (and the /owner extension) written in Go,
// independently of routes.rego: the action and record of a request without
// a body, ok false when it is not a route.
func refRoute(method string, segs []string) (action, typ, id string, ok bool) {
	colls := map[string]string{"contacts": "contact", "opportunities": "opportunity"}
	if len(segs) < 2 || len(segs) > 3 {
		return "", "", "", false
	}
	typ, ok = colls[segs[0]]
	if !ok {
		return "", "", "", false
	}
	id = segs[1]
	if len(segs) == 2 {
		action = map[string]string{"GET": "view", "HEAD": "view", "PUT": "edit", "PATCH": "edit", "DELETE": "delete"}[method]
	} else {
		switch segs[2] {
		case "followers":
			action = map[string]string{"POST": "add_follower", "DELETE": "remove_follower"}[method]
		case "owner":
			if method == "PUT" || method == "PATCH" || method == "POST" {
				action = "change_owner"
			}
		}
	}
	return action, typ, id, action != ""
}

// nonCanonical reports whether the path (before any query) has a feature
// crmauthz must never allow.
func nonCanonical(uri string) bool {
	p, _, _ := strings.Cut(uri, "?")
	p, _, _ = strings.Cut(p, "#")
	lp := strings.ToLower(p)
	return !strings.HasPrefix(p, "/") || strings.Contains(p, "//") || strings.HasSuffix(p, "/") && p != "/" ||
		strings.Contains(p+"/", "/./") || strings.Contains(p+"/", "/../") ||
		strings.Contains(lp, "%2f") || strings.Contains(lp, "%5c") || strings.Contains(lp, "%00") ||
		strings.ContainsAny(p, " \t\r\n\\\"<>{}|^`")
}

// decideRef is the decision of /v1/decision for the same check.
func decideRef(tb testing.TB, g *gwServer, in policy.Input) policy.Decision {
	tb.Helper()
	var d policy.Decision
	err := g.ix.View(func(tx *index.ReadTx) error {
		var err error
		d, _, err = g.eng.Decide(context.Background(), tx, in)
		return err
	})
	if err != nil {
		tb.Fatalf("Decide(%+v): %v", in, err)
	}
	return d
}

// FuzzForwardAuthHeaders sends /v1/forward-auth the original request in
// Caddy's headers (method, uri) and optionally nginx's (origMethod,
// origURI), as user. Whatever the input: no panic, a 200, 401 or 403 with
// the reason and decision id headers; never an allow for a missing or
// ambiguous original request or a non-canonical path; and every allow is
// the allow of /v1/decision for docs/gateways.md's route of that request.
func FuzzForwardAuthHeaders(f *testing.F) {
	f.Add("GET", "/contacts/c-1", "", "", "u-owner")
	f.Add("DELETE", "/contacts/c-1", "DELETE", "/contacts/c-1", "u-fol")
	f.Add("GET", "/contacts/c-1", "DELETE", "/contacts/c-1", "u-fol")
	g := newGW(f, nil)
	f.Fuzz(func(t *testing.T, method, uri, origMethod, origURI, user string) {
		req := httptest.NewRequest(http.MethodGet, "/v1/forward-auth", nil)
		caddyPair, nginxPair := method != "" || uri != "", origMethod != "" || origURI != ""
		if caddyPair {
			req.Header.Set("X-Forwarded-Method", method)
			req.Header.Set("X-Forwarded-Uri", uri)
		}
		if nginxPair {
			req.Header.Set("X-Original-Method", origMethod)
			req.Header.Set("X-Original-URI", origURI)
		}
		if user != "" {
			req.Header.Set("X-User-Id", user)
		}
		rec := httptest.NewRecorder()
		g.h.ServeHTTP(rec, req)
		reason := rec.Header().Get("X-Authz-Reason")
		if reason == "" || rec.Header().Get("X-Authz-Decision-Id") == "" {
			t.Fatalf("%d without reason or decision id: %v", rec.Code, rec.Header())
		}
		switch rec.Code {
		case http.StatusOK, http.StatusUnauthorized, http.StatusForbidden:
		default:
			t.Fatalf("status %d (%s): only 200, 401 and 403 are answers", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK {
			return
		}
		// an allow
		switch {
		case caddyPair && nginxPair && (origMethod != method || origURI != uri):
			t.Fatalf("allowed with disagreeing original requests %q %q / %q %q", method, uri, origMethod, origURI)
		case !caddyPair:
			method, uri = origMethod, origURI
		}
		if nonCanonical(uri) {
			t.Fatalf("allowed a non-canonical path %q", uri)
		}
		o, err := gateway.ParseOriginal(method, uri)
		if err != nil {
			t.Fatalf("allowed %q %q, which does not parse: %v", method, uri, err)
		}
		action, typ, id, ok := refRoute(o.Method, o.Segments)
		if !ok {
			t.Fatalf("allowed %s %q, which is not a route", method, uri)
		}
		want := decideRef(t, g, policy.Input{Subject: strings.TrimSpace(user), Action: action, ResourceType: typ, ResourceID: id})
		if !want.Allow || want.Reason != reason {
			t.Fatalf("forward auth allowed %s %q for %q (%s); /v1/decision says %+v", method, uri, user, reason, want)
		}
	})
}

// FuzzRouteMapping evaluates data.crmauthz.http_decision for a method, a
// path and a body (as Envoy's ext_authz sends them) by u-owner, u-fol or
// u-none. Whatever the input: the policy decides (no evaluation error), a
// request without a body maps exactly as refRoute and decides as
// /v1/decision does, and a body can only turn an edit into change_owner,
// with targets taken from the body.
func FuzzRouteMapping(f *testing.F) {
	f.Add("PUT", "/contacts/c-1", []byte(`{"assignedTo":"u-fol"}`), uint8(1))
	f.Add("GET", "/opportunities/o-1", []byte(nil), uint8(0))
	g := newGW(f, nil)
	subjects := []string{"u-owner", "u-fol", "u-none"}
	f.Fuzz(func(t *testing.T, method, uri string, body []byte, who uint8) {
		o, err := gateway.ParseOriginal(method, uri)
		if err != nil {
			return // answered as invalid_request or invalid_path (FuzzForwardAuthHeaders)
		}
		in := policy.HTTPInput{Subject: subjects[int(who)%len(subjects)], Method: o.Method, Path: o.Path, Segments: o.Segments}
		if o.Method != "GET" && o.Method != "HEAD" {
			v, err := regovalue.ParseParams(body, o.Query)
			if err != nil {
				return // answered as invalid_body or ambiguous_body
			}
			in.Body = v
		}
		var d policy.HTTPDecision
		err = g.ix.View(func(tx *index.ReadTx) error {
			var err error
			d, _, err = g.eng.DecideHTTP(context.Background(), tx, in)
			return err
		})
		if err != nil {
			t.Fatalf("DecideHTTP(%s %q, body %q): %v", method, uri, body, err)
		}
		action, typ, id, ok := refRoute(o.Method, o.Segments)
		if !ok {
			if d.Allow || d.Reason != "unmapped_route" || d.Action != "" {
				t.Fatalf("%s %q is not a route; got %+v", method, uri, d)
			}
			return
		}
		if d.Reason == "invalid_body" {
			if d.Allow || in.Body == nil || d.Message == "" {
				t.Fatalf("invalid_body without a body or message: %+v", d)
			}
			return
		}
		if d.ResourceType != typ || d.ResourceID != id {
			t.Fatalf("%s %q: resource %s/%s, want %s/%s", method, uri, d.ResourceType, d.ResourceID, typ, id)
		}
		switch {
		case d.Action == action:
		case d.Action == "change_owner" && action == "edit" && in.Body != nil:
		default:
			t.Fatalf("%s %q (body %q): action %q, want %q", method, uri, body, d.Action, action)
		}
		for _, tg := range d.Targets {
			q, _ := url.QueryUnescape(o.Query)
			if !strings.Contains(string(body), tg) && !strings.Contains(o.Query, tg) && !strings.Contains(q, tg) {
				t.Fatalf("target %q is not in the body %q or the query %q", tg, body, o.Query)
			}
		}
		if in.Body == nil {
			if len(d.Targets) != 0 {
				t.Fatalf("targets %v without a body", d.Targets)
			}
			want := decideRef(t, g, policy.Input{Subject: in.Subject, Action: action, ResourceType: typ, ResourceID: id})
			if d.Allow != want.Allow || d.Reason != want.Reason {
				t.Fatalf("%s %q by %s: %v %s; /v1/decision says %+v", method, uri, in.Subject, d.Allow, d.Reason, want)
			}
		}
		if d.Allow && len(d.Targets) > 0 {
			// every target is allowed on its own
			for _, tg := range d.Targets {
				want := decideRef(t, g, policy.Input{Subject: in.Subject, Action: d.Action, ResourceType: typ, ResourceID: id, Target: tg, HasTarget: true})
				if !want.Allow {
					t.Fatalf("allowed with target %q, which /v1/decision denies (%s)", tg, want.Reason)
				}
			}
		}
		if !slices.IsSorted(d.Targets) {
			t.Fatalf("targets not sorted: %v", d.Targets)
		}
	})
}
