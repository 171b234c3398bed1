package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/index"
)

// The gateway path (--endpoint, BENCHMARKS.md "Method"): the requests of
// the mix asked the way a gateway asks crmauthz (docs/gateways.md) instead
// of as POST /v1/decision. Each request of the mix (subject, action, record,
// target) becomes the request of the CRM's API a gateway would ask about:
//
//	action           forward-auth (GET /v1/forward-auth,       ext-authz-http (<method> /v1/ext-authz/<path>,
//	                 X-Forwarded-Method, X-Forwarded-Uri)      the body as Envoy's with_request_body sends it)
//	view             GET /{coll}/{id}                          GET /{coll}/{id}
//	edit             PUT /{coll}/{id}                          PUT /{coll}/{id}, no body
//	delete           DELETE /{coll}/{id}                       DELETE /{coll}/{id}
//	change_owner     PUT /{coll}/{id}/owner?assignedTo=T       PUT /{coll}/{id} {"assignedTo":T}  (the /owner
//	                                                           route with that body when T is already the owner
//	                                                           or the record is missing: there the record's
//	                                                           route is an edit)
//	add_follower     POST /{coll}/{id}/followers?followers[]=T POST /{coll}/{id}/followers {"followers":[T]}
//	remove_follower  DELETE …/followers?followers[]=T          DELETE /{coll}/{id}/followers {"followers":[T]}
//
// with {coll} contacts or opportunities and the subject in X-User-Id. The
// gateways without bodies carry the target in the query, whose parameters
// crmauthz reads as the body's (docs/gateways.md, "Bodies and the query"),
// so that every request of the mix keeps its target and none is skipped:
// each one is decided as /v1/decision decides it, which the check before
// the load verifies (checkGateway).

// The values of --endpoint.
const (
	endpointDecision     = "decision"
	endpointForwardAuth  = "forward-auth"
	endpointExtAuthzHTTP = "ext-authz-http"
)

// checkEndpoint validates --endpoint.
func checkEndpoint(e string) error {
	switch e {
	case endpointDecision, endpointForwardAuth, endpointExtAuthzHTTP, endpointExtAuthzGRPC:
		return nil
	}
	return fmt.Errorf("--endpoint: %q is not one of %s, %s, %s, %s", e, endpointDecision, endpointForwardAuth, endpointExtAuthzHTTP, endpointExtAuthzGRPC)
}

// isGateway tells whether e is a gateway endpoint ("" is the decision API).
func isGateway(e string) bool { return e != "" && e != endpointDecision }

// call is one HTTP request as it goes to a side.
type call struct {
	method string
	path   string // path and query, from the server's root
	header http.Header
	body   []byte
}

// collections are the API's path segments of the record types (routes.rego).
var collections = map[string]string{index.TypeContact: "contacts", index.TypeOpportunity: "opportunities"}

// gatewayCall returns request r of the mix of world w as endpoint ep (a
// gateway endpoint) asks it; the table above.
func gatewayCall(ep string, w dataset.World, r dataset.Request) call {
	rec := "/" + collections[r.Type] + "/" + url.PathEscape(r.ID)
	method, path, query := http.MethodGet, rec, ""
	var body []byte
	switch r.Action {
	case index.ActionEdit:
		method = http.MethodPut
	case index.ActionDelete:
		method = http.MethodDelete
	case index.ActionChangeOwner:
		method = http.MethodPut
		if ep == endpointExtAuthzHTTP {
			body = append(append([]byte(`{"assignedTo":`), strconv.Quote(r.Target)...), '}')
			if owner, ok := currentOwner(w, r.ID); !ok || owner == r.Target {
				path = rec + "/owner"
			}
		} else {
			path, query = rec+"/owner", "assignedTo="+url.QueryEscape(r.Target)
		}
	case index.ActionAddFollower, index.ActionRemoveFollower:
		method, path = http.MethodPost, rec+"/followers"
		if r.Action == index.ActionRemoveFollower {
			method = http.MethodDelete
		}
		if ep == endpointExtAuthzHTTP {
			body = append(append([]byte(`{"followers":[`), strconv.Quote(r.Target)...), "]}"...)
		} else {
			query = url.QueryEscape("followers[]") + "=" + url.QueryEscape(r.Target)
		}
	}
	if query != "" {
		path += "?" + query
	}
	h := http.Header{"X-User-Id": {r.Subject}}
	if ep == endpointForwardAuth {
		h["X-Forwarded-Method"] = []string{method}
		h["X-Forwarded-Uri"] = []string{path}
		return call{method: http.MethodGet, path: "/v1/forward-auth", header: h}
	}
	if body != nil {
		h["Content-Type"] = []string{"application/json"}
	}
	return call{method: method, path: "/v1/ext-authz" + path, header: h, body: body}
}

// currentOwner is the owner of the record with id in w ("" when
// unassigned); ok is false when the record is not in w (the mix's
// "-missing" ids).
func currentOwner(w dataset.World, id string) (owner string, ok bool) {
	if len(id) < 3 || id[1] != '-' {
		return "", false
	}
	i, err := strconv.Atoi(id[2:])
	if err != nil || i < 0 || i >= w.Config().Records {
		return "", false
	}
	rec := w.RecordAt(i)
	if rec.ID != id {
		return "", false
	}
	return rec.Owner, true
}

// askGateway sends the gateway's request of r to s and returns its answer:
// allow on a 200, deny on a 403 of the policy (error code "denied"), with
// the reason of X-Authz-Reason. Any other answer is an error.
func (s *side) askGateway(ctx context.Context, c *http.Client, w dataset.World, r dataset.Request) (verdict, error) {
	if s.grpc != nil {
		return s.askGRPC(ctx, c.Timeout, w, r)
	}
	gc := gatewayCall(s.endpoint, w, r)
	var body io.Reader
	if gc.body != nil {
		body = bytes.NewReader(gc.body)
	}
	req, err := http.NewRequestWithContext(ctx, gc.method, s.root+gc.path, body)
	if err != nil {
		return verdict{}, err
	}
	req.Header = gc.header
	resp, b, err := roundTrip(c, req)
	if err != nil {
		return verdict{}, err
	}
	if !s.answered(resp.StatusCode, b) {
		return verdict{}, fmt.Errorf("%s answered %s %s with %d: %s", s.name, gc.method, gc.path, resp.StatusCode, b)
	}
	return verdict{Allow: resp.StatusCode == http.StatusOK, Reason: resp.Header.Get("X-Authz-Reason")}, nil
}

// prepareGateway readies the sides for a gateway endpoint before the load:
// with ext-authz-grpc it connects to each side's gRPC listener; it checks
// the crmauthz sides crms (checkGateway, cfg.Check requests) and that the
// floors (the floor, and floor-b with --vs-floor) allow. The returned func closes the gRPC connections.
func prepareGateway(ctx context.Context, cfg runConfig, c *http.Client, crms, floors []*side, w dataset.World, rep *report) (closeGRPC func(), err error) {
	var conns []*grpcClient
	closeGRPC = func() {
		for _, g := range conns {
			g.conn.Close()
		}
	}
	if cfg.Endpoint == endpointExtAuthzGRPC {
		for _, s := range append(slices.Clone(crms), floors...) {
			if s.grpc, err = dialGRPC(s.grpcAddr); err != nil {
				closeGRPC()
				return nil, err
			}
			conns = append(conns, s.grpc)
		}
	}
	if err := checkGateway(ctx, c, crms, w, cfg.Check, rep); err != nil {
		closeGRPC()
		return nil, err
	}
	cfg.logf("gateway check: %d requests of the mix as %s and as /v1/decision, of %d crmauthz: %d disagreements; reasons %v",
		cfg.Check, cfg.Endpoint, len(crms), rep.disagree, rep.reasons)
	for _, floor := range floors {
		if v, err := floor.askGateway(ctx, c, w, w.RequestAt(0)); err != nil || !v.Allow {
			closeGRPC()
			return nil, fmt.Errorf("the floor server (%s) answered %+v (%v) as %s, want an allow", floor.name, v, err, cfg.Endpoint)
		}
	}
	return closeGRPC, nil
}

// checkGateway asks the first n requests of the mix of each crmauthz side
// both through its gateway endpoint and as POST /v1/decision, and notes in
// rep where the two answers (allow, and the reason) differ.
func checkGateway(ctx context.Context, c *http.Client, sides []*side, w dataset.World, n int, rep *report) error {
	for i := 0; i < n; i++ {
		r := w.RequestAt(i)
		for k, s := range sides {
			d, err := s.ask(ctx, c, r)
			if err != nil {
				return fmt.Errorf("gateway check, request %d: %w", i, err)
			}
			g, err := s.askGateway(ctx, c, w, r)
			if err != nil {
				return fmt.Errorf("gateway check, request %d: %w", i, err)
			}
			rep.checked++
			if k == 0 {
				rep.reasons[d.Reason]++ // the reasons of the mix, once
			}
			if d == g {
				continue
			}
			rep.disagree++
			if len(rep.mismatches) < 10 {
				gc := gatewayCall(s.endpoint, w, r)
				rep.mismatches = append(rep.mismatches, fmt.Sprintf("%s: /v1/decision %v %s, %s %s %s %v %s (%s)",
					r.AppendJSON(nil), d.Allow, d.Reason, gc.method, gc.path, gc.header, g.Allow, g.Reason, s.name))
			}
		}
	}
	return nil
}

// gatewayWhat describes the requests of a gateway endpoint, for the table.
func gatewayWhat(ep string) string {
	switch ep {
	case endpointForwardAuth:
		return "GET /v1/forward-auth with X-Forwarded-Method, X-Forwarded-Uri, X-User-Id; targets in the query"
	case endpointExtAuthzGRPC:
		return "Authorization/Check on --grpc-addr, one HTTP/2 connection; the requests of ext-authz-http"
	}
	return "<method> /v1/ext-authz/<path> with X-User-Id; targets in JSON bodies"
}
