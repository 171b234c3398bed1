package main

import (
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// TestGatewayCall: each action of the mix as each gateway endpoint asks it
// (the table in gateway.go).
func TestGatewayCall(t *testing.T) {
	w := dataset.New(dataset.Config{Records: 100, Users: 120, Locations: 5})
	owner := w.RecordAt(1).Owner // c-1's owner
	if owner == "" || w.RecordAt(1).ID != "c-1" || w.RecordAt(5).ID != "o-5" || w.RecordAt(7).Owner != "" {
		t.Fatalf("the world is not the one this test assumes: %+v %+v %+v", w.RecordAt(1), w.RecordAt(5), w.RecordAt(7))
	}
	req := func(action, id, target string) dataset.Request {
		typ := "contact"
		if strings.HasPrefix(id, "o-") {
			typ = "opportunity"
		}
		return dataset.Request{Subject: "u-9", Action: action, Type: typ, ID: id, Target: target}
	}
	json := http.Header{"X-User-Id": {"u-9"}, "Content-Type": {"application/json"}}
	bare := http.Header{"X-User-Id": {"u-9"}}
	fwd := func(method, uri string) call {
		return call{method: "GET", path: "/v1/forward-auth", header: http.Header{
			"X-User-Id": {"u-9"}, "X-Forwarded-Method": {method}, "X-Forwarded-Uri": {uri}}}
	}
	cases := []struct {
		name    string
		r       dataset.Request
		fwd     call // forward-auth
		ext     call // ext-authz-http
		extBody string
	}{
		{"view", req("view", "c-1", ""), fwd("GET", "/contacts/c-1"),
			call{method: "GET", path: "/v1/ext-authz/contacts/c-1", header: bare}, ""},
		{"view opportunity", req("view", "o-5", ""), fwd("GET", "/opportunities/o-5"),
			call{method: "GET", path: "/v1/ext-authz/opportunities/o-5", header: bare}, ""},
		{"edit", req("edit", "c-1", ""), fwd("PUT", "/contacts/c-1"),
			call{method: "PUT", path: "/v1/ext-authz/contacts/c-1", header: bare}, ""},
		{"delete", req("delete", "c-1-missing", ""), fwd("DELETE", "/contacts/c-1-missing"),
			call{method: "DELETE", path: "/v1/ext-authz/contacts/c-1-missing", header: bare}, ""},
		{"change_owner", req("change_owner", "c-1", "u-3"), fwd("PUT", "/contacts/c-1/owner?assignedTo=u-3"),
			call{method: "PUT", path: "/v1/ext-authz/contacts/c-1", header: json}, `{"assignedTo":"u-3"}`},
		{"change_owner of an unassigned record", req("change_owner", "c-7", "u-3"), fwd("PUT", "/contacts/c-7/owner?assignedTo=u-3"),
			call{method: "PUT", path: "/v1/ext-authz/contacts/c-7", header: json}, `{"assignedTo":"u-3"}`},
		// the record's route would be an edit: the /owner route
		{"change_owner to the owner", req("change_owner", "c-1", owner), fwd("PUT", "/contacts/c-1/owner?assignedTo="+owner),
			call{method: "PUT", path: "/v1/ext-authz/contacts/c-1/owner", header: json}, `{"assignedTo":"` + owner + `"}`},
		{"change_owner of a missing record", req("change_owner", "c-1-missing", "u-3"), fwd("PUT", "/contacts/c-1-missing/owner?assignedTo=u-3"),
			call{method: "PUT", path: "/v1/ext-authz/contacts/c-1-missing/owner", header: json}, `{"assignedTo":"u-3"}`},
		{"add_follower", req("add_follower", "c-1", "u-3"), fwd("POST", "/contacts/c-1/followers?followers%5B%5D=u-3"),
			call{method: "POST", path: "/v1/ext-authz/contacts/c-1/followers", header: json}, `{"followers":["u-3"]}`},
		{"remove_follower", req("remove_follower", "o-5", "u-9"), fwd("DELETE", "/opportunities/o-5/followers?followers%5B%5D=u-9"),
			call{method: "DELETE", path: "/v1/ext-authz/opportunities/o-5/followers", header: json}, `{"followers":["u-9"]}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := gatewayCall(endpointForwardAuth, w, c.r); !reflect.DeepEqual(got, c.fwd) {
				t.Errorf("forward-auth: %+v, want %+v", got, c.fwd)
			}
			got := gatewayCall(endpointExtAuthzHTTP, w, c.r)
			if c.extBody != "" {
				c.ext.body = []byte(c.extBody)
			}
			if !reflect.DeepEqual(got, c.ext) {
				t.Errorf("ext-authz-http: %+v %s, want %+v %s", got, got.body, c.ext, c.ext.body)
			}
		})
	}
}

// TestAnswered: on a gateway endpoint a 403 of the policy is an answer (a
// deny); crmauthz's own refusals and a 403 of /v1/decision are not.
func TestAnswered(t *testing.T) {
	deny := []byte(`{"error":{"code":"denied","decision_id":"x","message":"denied: owner_only","reason":"owner_only"}}`)
	invalid := []byte(`{"error":{"code":"invalid_path","decision_id":"x","message":"…","reason":"invalid_path"}}`)
	allow := []byte(`{"allow":true,"reason":"owner","decision_id":"x","policy_revision":"r","applied_seq":1}`)
	for _, c := range []struct {
		endpoint string
		code     int
		body     []byte
		want     bool
	}{
		{endpointDecision, 200, allow, true},
		{endpointDecision, 403, deny, false},
		{endpointForwardAuth, 200, allow, true},
		{endpointForwardAuth, 403, deny, true},
		{endpointExtAuthzHTTP, 403, deny, true},
		{endpointExtAuthzHTTP, 403, invalid, false},
		{endpointExtAuthzHTTP, 401, deny, false},
		{endpointExtAuthzHTTP, 200, []byte(`{}`), false},
	} {
		s := &side{name: "crmauthz", endpoint: c.endpoint}
		if got := s.answered(c.code, c.body); got != c.want {
			t.Errorf("%s %d %s: answered %v, want %v", c.endpoint, c.code, c.body, got, c.want)
		}
	}
}

// TestEndpointFlag: a gateway endpoint with OPA, or an unknown endpoint, is
// refused before anything starts.
func TestEndpointFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--endpoint", "forward-auth"}, "OPA has no forward-auth"},
		{[]string{"run", "--endpoint", "ext-authz-http", "--records", "10"}, "OPA has no forward-auth"},
		{[]string{"run", "--endpoint", "ext-authz-grpc", "--vs-crmauthz-args", ""}, "OPA has no forward-auth"},
		{[]string{"run", "--endpoint", "grpc"}, `--endpoint: "grpc" is not one of`},
	} {
		var out, errOut bytes.Buffer
		err := mainErr(c.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want one with %q", c.args, err, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%v: printed %q", c.args, out.String())
		}
	}
}

// TestGatewayRun runs the tool with each gateway endpoint (gRPC too)
// against the real crmauthz over loopback, and crmauthz-b in OPA's place: every request of
// the check set is decided alike through the gateway endpoint and
// /v1/decision on both, and every request of the load is answered (200 or
// the policy's 403) by crmauthz, crmauthz-b and the floor.
func TestGatewayRun(t *testing.T) {
	crm := testCrmauthz(t)
	for _, ep := range []string{endpointForwardAuth, endpointExtAuthzHTTP, endpointExtAuthzGRPC} {
		t.Run(ep, func(t *testing.T) {
			var log bytes.Buffer
			rep, err := run(t.Context(), runConfig{
				Records: 3000, Users: 120, Locations: 5,
				Duration: 250 * time.Millisecond, Warmup: 100 * time.Millisecond, Rates: []int{300}, SatWorkers: []int{4},
				Check: 300, Timeout: 10 * time.Second, Endpoint: ep,
				Crmauthz: crm, VsCrmauthz: crm, WorkDir: t.TempDir(), Log: &log,
			})
			if err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			var table bytes.Buffer
			if err := printReport(&table, rep); err != nil {
				t.Fatal(err)
			}
			if rep.checked != 600 || rep.disagree != 0 {
				t.Fatalf("gateway check: %d checked, %d disagree: %v\n%s", rep.checked, rep.disagree, rep.mismatches, log.String())
			}
			if len(rep.reasons) < 10 {
				t.Errorf("the checked sample reached only %d reasons: %v", len(rep.reasons), rep.reasons)
			}
			if !strings.Contains(table.String(), "gateway check: 300 requests of the mix asked of each crmauthz as "+ep+" and as POST /v1/decision, identical") {
				t.Errorf("the table does not give the gateway check:\n%s", table.String())
			}
			for _, runs := range rep.steps {
				for k, r := range runs[0] {
					if want := []string{"crmauthz", "crmauthz-b", "floor"}[k]; r.side != want {
						t.Errorf("%s: side %d is %q, want %q", r.spec.name, k, r.side, want)
					}
					if r.ok == 0 || r.errs != 0 || r.sent != r.ok {
						t.Errorf("%s %s: sent %d, answered %d, errors %d (%s)", r.spec.name, r.side, r.sent, r.ok, r.errs, r.firstErr)
					}
				}
			}
		})
	}
}

// testCrmauthz builds crmauthz for a test that starts it (skipped with -short).
func testCrmauthz(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and starts crmauthz")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	crm, err := buildCrmauthz(t.Context(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return crm
}

// TestCheckRequest: a request of the mix as Envoy's CheckRequest, and the
// answers grpcVerdict reads.
func TestCheckRequest(t *testing.T) {
	w := dataset.New(dataset.Config{Records: 100, Users: 120, Locations: 5})
	r := dataset.Request{Subject: "u-9", Action: "add_follower", Type: "contact", ID: "c-1", Target: "u-3"}
	h := checkRequest(w, r).GetAttributes().GetRequest().GetHttp()
	want := map[string]string{"x-user-id": "u-9", "content-type": "application/json"}
	if h.GetMethod() != "POST" || h.GetPath() != "/contacts/c-1/followers" || h.GetBody() != `{"followers":["u-3"]}` || !reflect.DeepEqual(h.GetHeaders(), want) {
		t.Fatalf("CheckRequest %v", h)
	}
	deny := func(body string) *authv3.CheckResponse {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Body: body,
				Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-authz-reason", Value: "owner_only"}}}}}}
	}
	for _, c := range []struct {
		name string
		resp *authv3.CheckResponse
		v    verdict
		ok   bool
	}{
		{"allow", floorCheck, verdict{true, "owner"}, true},
		{"the policy's deny", deny(`{"error":{"code":"denied","reason":"owner_only"}}`), verdict{false, "owner_only"}, true},
		{"crmauthz's refusal", deny(`{"error":{"code":"invalid_path"}}`), verdict{}, false},
		{"unauthenticated", &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.Unauthenticated)}}, verdict{}, false},
		{"empty", &authv3.CheckResponse{}, verdict{true, ""}, true}, // status OK (0), as Envoy reads it
	} {
		if v, ok := grpcVerdict(c.resp); v != c.v || ok != c.ok {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, v, ok, c.v, c.ok)
		}
	}
}
