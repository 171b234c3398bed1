package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlymutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/crmauthz/crmauthz/internal/server/gateway"
)

// docGRPCAddr is crmauthz's --grpc-addr in examples/gateways/envoy-grpc.yaml
// and docs/gateways.md.
const docGRPCAddr = "127.0.0.1:9191"

// envoyBootstrap reads a configuration of examples/gateways into Envoy's v3
// Bootstrap: every field must exist and have the right type, and every
// typed_config must name a type linked into this test.
func envoyBootstrap(t testing.TB, file string) *bootstrapv3.Bootstrap {
	t.Helper()
	// the typed_config types must be linked in for protojson to resolve them
	_ = []any{&extauthzv3.ExtAuthz{}, &routerv3.Router{}, &hcmv3.HttpConnectionManager{}, &upstreamhttpv3.HttpProtocolOptions{}, &earlymutationv3.HeaderMutation{}}
	y, err := os.ReadFile(filepath.Join("..", "..", "examples", "gateways", file))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("not an Envoy v3 bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("invalid: %v", err)
	}
	return &bs
}

// validateAnys runs the validation rules of every message packed in a
// google.protobuf.Any inside m, at any depth: the generated ValidateAll of
// a message checks an Any's presence only, never what it holds, so the
// Bootstrap's own ValidateAll does not look into the listener's
// http_connection_manager or its filters. It returns the type URLs it
// validated and what it found wrong.
func validateAnys(m protoreflect.Message, path string) (types []string, errs []error) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return nil, []error{fmt.Errorf("%s: %w", path, err)}
		}
		v, ok := inner.(interface{ ValidateAll() error })
		if !ok {
			return nil, []error{fmt.Errorf("%s: %s has no validation rules", path, a.GetTypeUrl())}
		}
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", path, a.GetTypeUrl(), err))
		}
		ts, es := validateAnys(inner.ProtoReflect(), path+"<"+a.GetTypeUrl()+">")
		return append([]string{a.GetTypeUrl()}, ts...), append(errs, es...)
	}
	visit := func(m protoreflect.Message, name string) {
		ts, es := validateAnys(m, name)
		types, errs = append(types, ts...), append(errs, es...)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := path + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				visit(v.List().Get(i).Message(), name+"["+strconv.Itoa(i)+"]")
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				visit(mv.Message(), name+"["+k.String()+"]")
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			visit(v.Message(), name)
		}
		return true
	})
	return types, errs
}

// TestValidateAnysLooksInside: an http_connection_manager without its
// required stat_prefix, inside a listener of a valid Bootstrap, is found,
// and so is an ext_authz filter without a server URI inside that.
func TestValidateAnysLooksInside(t *testing.T) {
	// an HTTP service without a URI
	ea, err := anypb.New(&extauthzv3.ExtAuthz{Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{ServerUri: &corev3.HttpUri{}}}})
	if err != nil {
		t.Fatal(err)
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{HttpFilters: []*hcmv3.HttpFilter{{Name: "a", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: ea}}}})
	if err != nil {
		t.Fatal(err)
	}
	bs := &bootstrapv3.Bootstrap{StaticResources: &bootstrapv3.Bootstrap_StaticResources{Listeners: []*listenerv3.Listener{{
		Name:         "l",
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}}}}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("the Bootstrap's own rules should not look inside: %v", err)
	}
	types, errs := validateAnys(bs.ProtoReflect(), "bootstrap")
	if len(types) != 2 || len(errs) != 2 || !strings.Contains(errs[0].Error(), "StatPrefix") || !strings.Contains(errs[1].Error(), "ExtAuthz") {
		t.Fatalf("types %v, errors %v: want the HttpConnectionManager's and the ExtAuthz's", types, errs)
	}
}

// clusterAddrs returns the endpoints (host:port) of each static cluster.
func clusterAddrs(bs *bootstrapv3.Bootstrap) map[string][]string {
	out := map[string][]string{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				out[c.GetName()] = append(out[c.GetName()], net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
			}
		}
	}
	return out
}

// matches reports whether one of the exact or prefix patterns matches the
// (lower-case) header name.
func matches(patterns []*matcherv3.StringMatcher, name string) bool {
	for _, p := range patterns {
		if strings.EqualFold(p.GetExact(), name) || (p.GetPrefix() != "" && strings.HasPrefix(name, strings.ToLower(p.GetPrefix()))) {
			return true
		}
	}
	return false
}

// TestEnvoyConfigsMatchTheAPI: there is no Envoy binary here (no package
// has one), so the Envoy configurations are checked against Envoy's v3 API
// instead (the go-control-plane types and their validation rules, down into
// every typed_config): every field exists, has the right type and a valid
// value, and the ext_authz filter is set up as docs/gateways.md says. It
// cannot show that Envoy runs them.
func TestEnvoyConfigsMatchTheAPI(t *testing.T) {
	for _, tc := range []struct {
		file      string
		grpc      bool
		authzAddr string // where crmauthz listens, as docs/gateways.md says
	}{
		{"envoy-http.yaml", false, docAuthzAddr},
		{"envoy-grpc.yaml", true, docGRPCAddr},
	} {
		t.Run(tc.file, func(t *testing.T) {
			bs := envoyBootstrap(t, tc.file)
			types, errs := validateAnys(bs.ProtoReflect(), "bootstrap")
			for _, err := range errs {
				t.Error(err)
			}
			slices.Sort(types)
			want := []string{
				"type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
				"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
				"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
				"type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
			}
			if tc.grpc {
				want = append(want, "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
				slices.Sort(want)
			}
			if !slices.Equal(types, want) {
				t.Errorf("typed configs %v, want %v", types, want)
			}

			listeners := bs.GetStaticResources().GetListeners()
			if len(listeners) != 1 {
				t.Fatalf("%d listeners", len(listeners))
			}
			if sa := listeners[0].GetAddress().GetSocketAddress(); net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))) != docGatewayAddr {
				t.Errorf("Envoy listens on %v, want %s", sa, docGatewayAddr)
			}
			clusters := clusterAddrs(bs)
			if !slices.Equal(clusters["crm_api"], []string{docUpstreamAddr}) || !slices.Equal(clusters["crmauthz"], []string{tc.authzAddr}) {
				t.Errorf("clusters %v, want crm_api at %s and crmauthz at %s", clusters, docUpstreamAddr, tc.authzAddr)
			}

			hcm := &hcmv3.HttpConnectionManager{}
			if err := listeners[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
				t.Fatal(err)
			}
			// ext_authz decides before the router passes the request on
			var names []string
			for _, f := range hcm.GetHttpFilters() {
				names = append(names, f.GetName())
			}
			if !slices.Equal(names, []string{"envoy.filters.http.ext_authz", "envoy.filters.http.router"}) {
				t.Fatalf("http_filters %v: ext_authz, then the router", names)
			}
			ea := &extauthzv3.ExtAuthz{}
			if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(ea); err != nil {
				t.Fatal(err)
			}
			wrb := ea.GetWithRequestBody()
			switch {
			case ea.GetTransportApiVersion() != corev3.ApiVersion_V3:
				t.Errorf("transport_api_version %v, want V3", ea.GetTransportApiVersion())
			case ea.GetFailureModeAllow():
				t.Error("failure_mode_allow must be false (fail closed)")
			case wrb == nil:
				t.Error("with_request_body: crmauthz needs the body to see owner changes and follower lists")
			case int64(wrb.GetMaxRequestBytes()) > gateway.DefaultConfig().MaxDecisionBytes || wrb.GetAllowPartialMessage():
				t.Error("with_request_body must stay within --max-decision-bytes and never partial")
			case !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() ||
				hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST:
				t.Error("paths must be normalized before ext_authz")
			}
			// A client's identity header never reaches crmauthz or the API
			// (issue 15): removed before any filter runs, and never asked for.
			removed := false
			for _, ext := range hcm.GetEarlyHeaderMutationExtensions() {
				em := &earlymutationv3.HeaderMutation{}
				if err := ext.GetTypedConfig().UnmarshalTo(em); err != nil {
					t.Fatal(err)
				}
				for _, m := range em.GetMutations() {
					removed = removed || strings.EqualFold(m.GetRemove(), "x-user-id")
				}
			}
			if !removed {
				t.Error("early_header_mutation_extensions must remove a client's x-user-id")
			}
			if hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() == corev3.HttpProtocolOptions_ALLOW {
				t.Error("headers_with_underscores_action must not pass a client's x_user_id, which some APIs read as x-user-id")
			}
			//lint:ignore SA1019 the deprecated http_service field must not pass the header either
			allowed := append(ea.GetAllowedHeaders().GetPatterns(), ea.GetHttpService().GetAuthorizationRequest().GetAllowedHeaders().GetPatterns()...)
			if matches(allowed, "x-user-id") {
				t.Error("allowed_headers must not pass a client's x-user-id to crmauthz")
			}
			// The identity is the bearer token: Envoy always sends
			// Authorization to an HTTP service, and every header to a gRPC
			// one when allowed_headers is not set.
			if matches(ea.GetDisallowedHeaders().GetPatterns(), "authorization") ||
				(tc.grpc && ea.GetAllowedHeaders() != nil && !matches(ea.GetAllowedHeaders().GetPatterns(), "authorization")) {
				t.Error("crmauthz must get the client's Authorization header")
			}
			for _, h := range []string{"x-http-method-override", "x-http-method", "x-method-override"} {
				if !tc.grpc && !matches(ea.GetAllowedHeaders().GetPatterns(), h) {
					t.Errorf("allowed_headers must pass %s, which crmauthz refuses (method_override)", h)
				}
			}

			if tc.grpc {
				checkEnvoyGRPC(t, bs, ea)
				return
			}
			hs := ea.GetHttpService()
			if hs.GetPathPrefix() != gateway.ExtAuthzPrefix || hs.GetServerUri().GetCluster() != "crmauthz" ||
				hs.GetServerUri().GetUri() != "http://"+docAuthzAddr || hs.GetServerUri().GetTimeout().AsDuration() <= 0 {
				t.Errorf("HTTP service: %v", hs)
			}
			ar := hs.GetAuthorizationResponse()
			for _, h := range []string{"x-authz-reason", "x-authz-decision-id"} {
				if !matches(ar.GetAllowedUpstreamHeaders().GetPatterns(), h) || !matches(ar.GetAllowedClientHeaders().GetPatterns(), h) {
					t.Errorf("authorization_response must pass %s to the API (allowed_upstream_headers) and to a denied client", h)
				}
			}
		})
	}
}

// checkEnvoyGRPC: the gRPC service is crmauthz's cluster, spoken to over
// HTTP/2, health-checked with crmauthz's health service, and the body goes
// as bytes.
func checkEnvoyGRPC(t testing.TB, bs *bootstrapv3.Bootstrap, ea *extauthzv3.ExtAuthz) {
	t.Helper()
	if ea.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "crmauthz" || ea.GetGrpcService().GetTimeout().AsDuration() <= 0 ||
		!ea.GetWithRequestBody().GetPackAsBytes() {
		t.Errorf("gRPC service: %v", ea.GetGrpcService())
	}
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() != "crmauthz" {
			continue
		}
		po := &upstreamhttpv3.HttpProtocolOptions{}
		if err := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(po); err != nil ||
			po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
			t.Errorf("the crmauthz cluster must speak HTTP/2 (gRPC): %v %v", po, err)
		}
		hc := c.GetHealthChecks()
		if len(hc) != 1 || hc[0].GetGrpcHealthCheck().GetServiceName() != "envoy.service.auth.v3.Authorization" {
			t.Errorf("health_checks %v: want crmauthz's gRPC health service", hc)
		}
		return
	}
	t.Error("no crmauthz cluster")
}
