package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlymutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// TestGatewayDocsShowTheTestedConfigs: docs/gateways.md shows every file of
// examples/gateways verbatim, so the nginx and Caddy configurations in the
// docs are the ones TestE2EGateways runs.
func TestGatewayDocsShowTheTestedConfigs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "gateways.md"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "gateways", "*"))
	if err != nil || len(files) < 5 {
		t.Fatalf("examples/gateways: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(doc), string(b)) {
				t.Fatalf("docs/gateways.md does not show %s as it is", f)
			}
		})
	}
}

// TestEnvoyConfigsMatchTheAPI: there is no Envoy binary here, so the Envoy
// configurations are checked against Envoy's v3 API instead (the
// go-control-plane types and their validation rules): every field exists,
// has the right type and a valid value, and the ext_authz filter is set up
// as docs/gateways.md says. It cannot show that Envoy runs them.
func TestEnvoyConfigsMatchTheAPI(t *testing.T) {
	// the typed_config types must be linked in for protojson to resolve them
	_ = []any{&extauthzv3.ExtAuthz{}, &routerv3.Router{}, &hcmv3.HttpConnectionManager{}, &upstreamhttpv3.HttpProtocolOptions{}, &earlymutationv3.HeaderMutation{}}
	for _, tc := range []struct {
		file string
		grpc bool
	}{
		{"envoy-http.yaml", false},
		{"envoy-grpc.yaml", true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			y, err := os.ReadFile(filepath.Join("..", "..", "examples", "gateways", tc.file))
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
			hcm := &hcmv3.HttpConnectionManager{}
			if err := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
				t.Fatal(err)
			}
			ea := &extauthzv3.ExtAuthz{}
			if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(ea); err != nil {
				t.Fatal(err)
			}
			switch {
			case ea.GetFailureModeAllow():
				t.Error("failure_mode_allow must be false")
			case ea.GetWithRequestBody().GetMaxRequestBytes() > 1<<20 || ea.GetWithRequestBody().GetAllowPartialMessage():
				t.Error("with_request_body must stay within --max-decision-bytes and never partial")
			case !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes():
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
			//lint:ignore SA1019 the deprecated http_service field must not pass the header either
			allowed := append(ea.GetAllowedHeaders().GetPatterns(), ea.GetHttpService().GetAuthorizationRequest().GetAllowedHeaders().GetPatterns()...)
			for _, p := range allowed {
				if strings.EqualFold(p.GetExact(), "x-user-id") {
					t.Error("allowed_headers must not pass a client's x-user-id to crmauthz")
				}
			}
			if tc.grpc {
				if ea.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "crmauthz" || !ea.GetWithRequestBody().GetPackAsBytes() {
					t.Errorf("gRPC service: %v", ea.GetGrpcService())
				}
			} else if hs := ea.GetHttpService(); hs.GetPathPrefix() != "/v1/ext-authz" || hs.GetServerUri().GetCluster() != "crmauthz" {
				t.Errorf("HTTP service: %v", hs)
			}
		})
	}
}
