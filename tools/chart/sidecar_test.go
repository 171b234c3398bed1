package chart_test

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlymutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestSidecarScenario: in sidecar mode the crmauthz chart runs nothing itself; it renders what
// the container in the app's pod mounts.
func TestSidecarScenario(t *testing.T) {
	m := render(t, chartDir, scenario("sidecar"), nil)
	want := []string{"ConfigMap/" + releaseName + "-crmauthz-config", "ConfigMap/" + releaseName + "-crmauthz-policies",
		"Secret/" + releaseName + "-crmauthz-replication"}
	if got := m.keys(); !reflect.DeepEqual(got, want) {
		t.Fatalf("rendered %v, want %v", got, want)
	}
	if !strings.Contains(m.notes, `include "crmauthz.sidecar.container" .Subcharts.crmauthz`) {
		t.Errorf("NOTES do not show the include:\n%s", m.notes)
	}
}

const app = releaseName + "-app-with-sidecar"

func appPod(t testing.TB, m manifests) corev1.PodSpec {
	t.Helper()
	return get[*appsv1.Deployment](t, m, "Deployment", app).Spec.Template.Spec
}

// TestSidecarInAnAppPod renders the worked example, an app chart that depends on crmauthz and
// includes its sidecar templates, and checks the pod it gets.
func TestSidecarInAnAppPod(t *testing.T) {
	m := render(t, exampleDir, "", nil)
	pod := appPod(t, m)
	var names []string
	for _, c := range pod.Containers {
		names = append(names, c.Name)
	}
	if !reflect.DeepEqual(names, []string{"app", "envoy", "crmauthz"}) {
		t.Fatalf("containers %v", names)
	}
	c := containerNamed(t, pod.Containers, "crmauthz")
	checkContainer(t, m, c, "crmauthz-admin")

	// Decision and gRPC listeners on loopback, the admin one reachable for probes and the feeder.
	for flag, want := range map[string]string{"addr": "127.0.0.1:8181", "grpc-addr": "127.0.0.1:9191", "admin-addr": "0.0.0.0:8282"} {
		if v, _ := flagValue(serveArgs(t, m, c), flag); v != want {
			t.Errorf("--%s=%q, want %q", flag, v, want)
		}
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "crmauthz-admin" || c.Ports[0].ContainerPort != 8282 {
		t.Errorf("ports %+v: want only crmauthz-admin (the loopback listeners are not reachable)", c.Ports)
	}
	if c.RestartPolicy != nil {
		t.Errorf("restartPolicy %v on a regular container", *c.RestartPolicy)
	}

	// The pod is well formed: unique port and volume names, every mount has its volume.
	checkPodWiring(t, pod)

	// The volumes are the subchart's ConfigMap and Secret, released with the app.
	checkTokenVolume(t, pod.Volumes, releaseName+"-crmauthz-replication", "token", 0o444)
	get[*corev1.Secret](t, m, "Secret", releaseName+"-crmauthz-replication")
	cm := volumeNamed(t, pod.Volumes, "crmauthz-policies").ConfigMap
	if cm == nil {
		t.Fatal("the policies volume is not a ConfigMap")
	}
	get[*corev1.ConfigMap](t, m, "ConfigMap", cm.Name)
	if volumeNamed(t, pod.Volumes, "crmauthz-data").EmptyDir == nil {
		t.Error("the index is not on an emptyDir")
	}
	for _, k := range m.keys() {
		if strings.HasPrefix(k, "Deployment/") && k != "Deployment/"+app {
			t.Errorf("the crmauthz subchart rendered %s in sidecar mode", k)
		}
	}

	// The headless Service the feeder uses reaches the crmauthz admin port of every pod.
	feed := get[*corev1.Service](t, m, "Service", app+"-crmauthz")
	if feed.Spec.ClusterIP != "None" || !feed.Spec.PublishNotReadyAddresses || feed.Spec.Ports[0].TargetPort.StrVal != "crmauthz-admin" {
		t.Errorf("feeder Service %+v", feed.Spec)
	}
	// Only Envoy's port is on the app's Service.
	svc := get[*corev1.Service](t, m, "Service", app)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.StrVal != "http" ||
		containerNamed(t, pod.Containers, "envoy").Ports[0].Name != "http" {
		t.Errorf("app Service %+v", svc.Spec.Ports)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("the example pod does not set enableServiceLinks: false")
	}
}

// checkPodWiring: port and volume names are unique in the pod, and every mount has a volume.
func checkPodWiring(t testing.TB, pod corev1.PodSpec) {
	t.Helper()
	ports, vols := map[string]string{}, map[string]bool{}
	for _, v := range pod.Volumes {
		if vols[v.Name] {
			t.Errorf("volume %s twice", v.Name)
		}
		vols[v.Name] = true
	}
	for _, c := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
		for _, p := range c.Ports {
			if other, dup := ports[p.Name]; dup {
				t.Errorf("port name %s in %s and %s", p.Name, other, c.Name)
			}
			ports[p.Name] = c.Name
		}
		for _, vm := range c.VolumeMounts {
			if !vols[vm.Name] {
				t.Errorf("%s mounts %s, which the pod does not have", c.Name, vm.Name)
			}
		}
	}
}

func TestSidecarVariants(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]any
		check  func(t testing.TB, m manifests, pod corev1.PodSpec, c corev1.Container)
	}{
		{"native sidecar", vals("crmauthz.sidecar.native", true), func(t testing.TB, m manifests, _ corev1.PodSpec, c corev1.Container) {
			if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("restartPolicy %v, want Always for an init container sidecar", c.RestartPolicy)
			}
		}},
		{"container name", vals("crmauthz.sidecar.containerName", "authz"), func(t testing.TB, m manifests, pod corev1.PodSpec, _ corev1.Container) {
			containerNamed(t, pod.Containers, "authz")
		}},
		{"decision listener opened to the pod network", vals("crmauthz.listen.decision.host", "0.0.0.0"), func(t testing.TB, m manifests, _ corev1.PodSpec, c corev1.Container) {
			if v, _ := flagValue(serveArgs(t, m, c), "addr"); v != "0.0.0.0:8181" || c.Ports[0].Name != "crmauthz-http" {
				t.Errorf("--addr=%s, ports %+v", v, c.Ports)
			}
		}},
		{"IPv6 loopback", vals("crmauthz.listen.decision.host", "::1"), func(t testing.TB, m manifests, _ corev1.PodSpec, c corev1.Container) {
			if v, _ := flagValue(serveArgs(t, m, c), "addr"); v != "[::1]:8181" || len(c.Ports) != 1 {
				t.Errorf("--addr=%s, ports %+v", v, c.Ports)
			}
		}},
		{"gRPC off", vals("crmauthz.listen.grpc.enabled", false), func(t testing.TB, m manifests, _ corev1.PodSpec, c corev1.Container) {
			if _, ok := flagValue(serveArgs(t, m, c), "grpc-addr"); ok {
				t.Errorf("args %v", c.Args)
			}
		}},
		{"HS256 JWT secret", vals("crmauthz.identity.jwt.hs256Secret.name", "jwt-key", "crmauthz.identity.subjectHeader", "X-Subject"), func(t testing.TB, m manifests, pod corev1.PodSpec, c corev1.Container) {
			v := volumeNamed(t, pod.Volumes, "crmauthz-jwt")
			if v.Secret == nil || v.Secret.SecretName != "jwt-key" || v.Secret.Items[0].Key != "secret" || *v.Secret.DefaultMode != 0o444 {
				t.Errorf("JWT volume %+v", v.VolumeSource)
			}
			for _, want := range []string{"--jwt-hs256-secret-file=/etc/crmauthz/jwt/hs256-secret", "--subject-header=X-Subject"} {
				if !slices.Contains(serveArgs(t, m, c), want) {
					t.Errorf("args %v lack %s", c.Args, want)
				}
			}
		}},
		{"existing token Secret", vals("crmauthz.replication.existingSecret", "feeder-token", "crmauthz.replication.existingSecretKey", "t"), func(t testing.TB, m manifests, pod corev1.PodSpec, _ corev1.Container) {
			checkTokenVolume(t, pod.Volumes, "feeder-token", "t", 0o444)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, exampleDir, "", tc.values)
			pod := appPod(t, m)
			name := "crmauthz"
			if sc, ok := tc.values["crmauthz"].(map[string]any)["sidecar"].(map[string]any); ok && sc["containerName"] != nil {
				name = sc["containerName"].(string)
			}
			c := containerNamed(t, pod.Containers, name)
			checkContainer(t, m, c, "crmauthz-admin")
			checkPodWiring(t, pod)
			tc.check(t, m, pod, c)
		})
	}
}

func TestSidecarTemplateNeedsSidecarMode(t *testing.T) {
	_, err := tryRender(t, exampleDir, "", vals("crmauthz.mode", "standalone"))
	if err == nil || !strings.Contains(err.Error(), "set crmauthz.mode: sidecar") {
		t.Fatalf("err = %v, want the include to refuse standalone mode", err)
	}
}

// TestEnvoyConfig decodes the example's Envoy bootstrap strictly into Envoy's own API types
// (go-control-plane), validates it, and checks that ext_authz calls the crmauthz gRPC listener
// on loopback and fails closed.
func TestEnvoyConfig(t *testing.T) {
	m := render(t, exampleDir, "", nil)
	cm := get[*corev1.ConfigMap](t, m, "ConfigMap", app+"-envoy")
	j, err := yaml.YAMLToJSONStrict([]byte(cm.Data["envoy.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(j, &bs); err != nil {
		t.Fatalf("envoy.yaml is not an Envoy v3 bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}

	c := containerNamed(t, appPod(t, m).Containers, "crmauthz")
	grpcAddr, _ := flagValue(serveArgs(t, m, c), "grpc-addr")
	var authzCluster string
	for _, cl := range bs.GetStaticResources().GetClusters() {
		if cl.GetName() != "crmauthz" {
			continue
		}
		authzCluster = cl.GetName()
		sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if got := sa.GetAddress() + ":" + strconv.Itoa(int(sa.GetPortValue())); got != grpcAddr {
			t.Errorf("Envoy's crmauthz cluster is %s, crmauthz listens for gRPC on %s", got, grpcAddr)
		}
		if cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] == nil {
			t.Error("the crmauthz cluster does not speak HTTP/2 (gRPC)")
		}
	}
	if authzCluster == "" {
		t.Fatal("no crmauthz cluster")
	}

	lis := bs.GetStaticResources().GetListeners()[0]
	var hcm hcmv3.HttpConnectionManager
	if err := lis.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	filters := hcm.GetHttpFilters()
	if len(filters) != 2 || filters[0].GetName() != "envoy.filters.http.ext_authz" || filters[1].GetName() != "envoy.filters.http.router" {
		t.Fatalf("http filters %v: want ext_authz before the router", filters)
	}
	var ea extauthzv3.ExtAuthz
	if err := filters[0].GetTypedConfig().UnmarshalTo(&ea); err != nil {
		t.Fatal(err)
	}
	if ea.GetFailureModeAllow() || ea.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "crmauthz" ||
		ea.GetWithRequestBody() == nil || ea.GetWithRequestBody().GetAllowPartialMessage() {
		t.Errorf("ext_authz %v: want gRPC to the crmauthz cluster, failing closed, with whole bodies only", &ea)
	}
	if lis.GetAddress().GetSocketAddress().GetPortValue() != uint32(containerNamed(t, appPod(t, m).Containers, "envoy").Ports[0].ContainerPort) {
		t.Error("Envoy listens on another port than its container declares")
	}
}

// TestEnvoyConfigSubjectHeader: with a JWT key, the example's Envoy removes a client's subject
// header before anything sees the request (the app included); in header mode it must pass the
// header its ingress set (issue 15: no client chooses its identity).
func TestEnvoyConfigSubjectHeader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  map[string]any
		removed []string
	}{
		{"header mode", nil, nil},
		{"JWKS", vals("crmauthz.identity.jwt.jwksConfigMap.name", "idp-jwks"), []string{"x-user-id"}},
		{"HS256, another header", vals("crmauthz.identity.jwt.hs256Secret.name", "jwt-key", "crmauthz.identity.subjectHeader", "X-Subject"), []string{"x-subject"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, exampleDir, "", tc.values)
			cm := get[*corev1.ConfigMap](t, m, "ConfigMap", app+"-envoy")
			j, err := yaml.YAMLToJSONStrict([]byte(cm.Data["envoy.yaml"]))
			if err != nil {
				t.Fatal(err)
			}
			var bs bootstrapv3.Bootstrap
			if err := protojson.Unmarshal(j, &bs); err != nil {
				t.Fatalf("envoy.yaml is not an Envoy v3 bootstrap: %v", err)
			}
			if err := bs.ValidateAll(); err != nil {
				t.Fatalf("envoy.yaml: %v", err)
			}
			var hcm hcmv3.HttpConnectionManager
			if err := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatal(err)
			}
			var removed []string
			for _, ext := range hcm.GetEarlyHeaderMutationExtensions() {
				var hm earlymutationv3.HeaderMutation
				if err := ext.GetTypedConfig().UnmarshalTo(&hm); err != nil {
					t.Fatal(err)
				}
				for _, mu := range hm.GetMutations() {
					removed = append(removed, mu.GetRemove())
				}
			}
			if !reflect.DeepEqual(removed, tc.removed) {
				t.Fatalf("Envoy removes %q from clients' requests, want %q", removed, tc.removed)
			}
		})
	}
}
