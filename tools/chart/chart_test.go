package chart_test

import (
	"encoding/base64"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var restricted = corev1.SecurityContext{
	RunAsNonRoot:             ptr(true),
	RunAsUser:                ptr(int64(65532)),
	RunAsGroup:               ptr(int64(65532)),
	ReadOnlyRootFilesystem:   ptr(true),
	AllowPrivilegeEscalation: ptr(false),
	Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
}

func ptr[T any](v T) *T { return &v }

// checkContainer asserts what both modes share: the restricted securityContext, probes on the
// admin port, the volume mounts (policies and token read-only, no subPath anywhere) and the
// arguments that wire them.
func checkContainer(t testing.TB, m manifests, c corev1.Container, admin string) {
	t.Helper()
	if !reflect.DeepEqual(c.SecurityContext, &restricted) {
		t.Errorf("securityContext = %+v, want the restricted one", c.SecurityContext)
	}
	if len(c.Command) != 0 {
		t.Errorf("command %v: the image's entrypoint runs crmauthz", c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %v do not start with serve", c.Args)
	}
	probes := []struct {
		name string
		p    *corev1.Probe
		path string
	}{{"startup", c.StartupProbe, "/health/live"}, {"liveness", c.LivenessProbe, "/health/live"}, {"readiness", c.ReadinessProbe, "/health/ready"}}
	for _, p := range probes {
		if p.p == nil || p.p.HTTPGet == nil {
			t.Errorf("%s probe: %+v, want an httpGet", p.name, p.p)
			continue
		}
		if p.p.HTTPGet.Path != p.path || p.p.HTTPGet.Port != intstr.FromString(admin) {
			t.Errorf("%s probe: GET %s on %v, want %s on %s", p.name, p.p.HTTPGet.Path, p.p.HTTPGet.Port.String(), p.path, admin)
		}
		if p.p.PeriodSeconds == 0 || p.p.TimeoutSeconds == 0 || p.p.FailureThreshold == 0 {
			t.Errorf("%s probe timing not set: %+v", p.name, p.p)
		}
	}
	found := false
	for _, port := range c.Ports {
		if port.Name == admin {
			found = true
		}
		if len(port.Name) > 15 {
			t.Errorf("port name %q is longer than 15 characters", port.Name)
		}
	}
	if !found {
		t.Errorf("no container port %q among %+v", admin, c.Ports)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" || m.SubPathExpr != "" {
			t.Errorf("mount %s uses a subPath: the kubelet never updates it", m.Name)
		}
		mounts[m.Name] = m
	}
	cfg, ok := mounts["crmauthz-config"]
	if !ok || !cfg.ReadOnly {
		t.Errorf("config mount %+v, want it read-only", cfg)
	}
	if v, _ := flagValue(c.Args, "config"); filepath.Dir(v) != cfg.MountPath || configText(t, m, filepath.Base(v)) == "" {
		t.Errorf("--config=%q, the config ConfigMap is mounted at %q", v, cfg.MountPath)
	}
	pol, ok := mounts["crmauthz-policies"]
	if !ok || !pol.ReadOnly {
		t.Errorf("policies mount %+v, want it read-only", pol)
	}
	if v, _ := flagValue(serveArgs(t, m, c), "policies"); v != pol.MountPath {
		t.Errorf("--policies=%q, the ConfigMap is mounted at %q", v, pol.MountPath)
	}
	tok, ok := mounts["crmauthz-token"]
	if !ok || !tok.ReadOnly {
		t.Errorf("token mount %+v, want it read-only", tok)
	}
	if v, _ := flagValue(serveArgs(t, m, c), "replication-token-file"); v != tok.MountPath+"/token" {
		t.Errorf("--replication-token-file=%q, the Secret is mounted at %q", v, tok.MountPath)
	}
	data, ok := mounts["crmauthz-data"]
	if !ok || data.ReadOnly {
		t.Errorf("index mount %+v, want it writable", data)
	}
	if v, _ := flagValue(serveArgs(t, m, c), "data-dir"); v != data.MountPath {
		t.Errorf("--data-dir=%q, the index volume is mounted at %q", v, data.MountPath)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want CPU requested and memory limited", c.Resources)
	}
}

// checkTokenVolume asserts the token volume is the Secret's key, mounted as the file "token".
func checkTokenVolume(t testing.TB, vols []corev1.Volume, secret, key string, mode int32) {
	t.Helper()
	for _, v := range vols {
		if v.Name != "crmauthz-token" {
			continue
		}
		s := v.Secret
		if s == nil || s.SecretName != secret || len(s.Items) != 1 || s.Items[0].Key != key || s.Items[0].Path != "token" {
			t.Fatalf("token volume %+v, want key %q of Secret %q as the file token", v.VolumeSource, key, secret)
		}
		if s.DefaultMode == nil || *s.DefaultMode != mode {
			t.Errorf("token file mode %v, want %#o", s.DefaultMode, mode)
		}
		return
	}
	t.Fatalf("no crmauthz-token volume among %+v", vols)
}

func volumeNamed(t testing.TB, vols []corev1.Volume, name string) corev1.Volume {
	t.Helper()
	for _, v := range vols {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

func TestStandaloneScenarios(t *testing.T) {
	full := releaseName + "-crmauthz"
	tests := []struct {
		scenario    string
		workload    string
		kinds       []string // every object rendered
		secret, key string   // where the token comes from
		grpc        bool
	}{
		{
			scenario: "standalone-default", workload: "Deployment",
			kinds: []string{"ConfigMap/" + full + "-config", "ConfigMap/" + full + "-policies", "Deployment/" + full, "Secret/" + full + "-replication",
				"Service/" + full, "Service/" + full + "-admin", "ServiceAccount/" + full},
			secret: full + "-replication", key: "token",
		},
		{
			scenario: "standalone-full", workload: "StatefulSet",
			kinds: []string{"ConfigMap/" + full + "-config", "ConfigMap/" + full + "-policies", "HorizontalPodAutoscaler/" + full, "NetworkPolicy/" + full,
				"PodDisruptionBudget/" + full, "Service/" + full, "Service/" + full + "-admin", "ServiceAccount/" + full,
				"ServiceMonitor/" + full, "StatefulSet/" + full},
			secret: "crm-replication", key: "bearer-token", grpc: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.scenario, func(t *testing.T) {
			m := render(t, chartDir, scenario(tc.scenario), nil)
			if got := m.keys(); !reflect.DeepEqual(got, tc.kinds) {
				t.Fatalf("rendered %v\nwant     %v", got, tc.kinds)
			}
			kind, pod := podOf(t, m)
			if kind != tc.workload {
				t.Fatalf("workload %s, want %s", kind, tc.workload)
			}
			spec := pod.Spec
			if len(spec.Containers) != 1 {
				t.Fatalf("containers %d, want 1", len(spec.Containers))
			}
			c := containerNamed(t, spec.Containers, "crmauthz")
			checkContainer(t, m, c, "admin")
			checkTokenVolume(t, spec.Volumes, tc.secret, tc.key, 0o440)

			// Pod: restricted, no API token, no service links (CRMAUTHZ_* variables).
			psc := spec.SecurityContext
			if psc == nil || !*psc.RunAsNonRoot || *psc.RunAsUser != 65532 || *psc.FSGroup != 65532 ||
				psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext %+v", psc)
			}
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Error("the pod mounts a service account token; crmauthz does not call the API")
			}
			if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
				t.Error("enableServiceLinks is not false: Services would put CRMAUTHZ_* variables in the environment")
			}
			if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds <= 15 {
				t.Error("terminationGracePeriodSeconds must exceed --shutdown-timeout (15s)")
			}
			sa := get[*corev1.ServiceAccount](t, m, "ServiceAccount", full)
			if spec.ServiceAccountName != sa.Name || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("service account %q / %+v", spec.ServiceAccountName, sa)
			}

			// Listeners bind every interface: the Services must reach them.
			for _, f := range []string{"addr", "admin-addr"} {
				if v, _ := flagValue(serveArgs(t, m, c), f); !strings.HasPrefix(v, "0.0.0.0:") {
					t.Errorf("--%s=%s, want 0.0.0.0:port in standalone mode", f, v)
				}
			}
			grpcAddr, hasGRPC := flagValue(serveArgs(t, m, c), "grpc-addr")
			if hasGRPC != tc.grpc || (tc.grpc && grpcAddr != "0.0.0.0:9191") {
				t.Errorf("--grpc-addr=%q (given: %v), want it %v", grpcAddr, hasGRPC, tc.grpc)
			}

			// Every Service port reaches a container port, and the listener behind it.
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			svc := get[*corev1.Service](t, m, "Service", full)
			admin := get[*corev1.Service](t, m, "Service", full+"-admin")
			wantSvc := []string{"http"}
			if tc.grpc {
				wantSvc = append(wantSvc, "grpc")
			}
			var gotSvc []string
			for _, p := range svc.Spec.Ports {
				gotSvc = append(gotSvc, p.Name)
				if _, ok := ports[p.TargetPort.StrVal]; !ok {
					t.Errorf("Service port %s targets %v, which the container does not declare", p.Name, p.TargetPort.String())
				}
			}
			if !reflect.DeepEqual(gotSvc, wantSvc) {
				t.Errorf("Service ports %v, want %v (the admin port is only on the headless Service)", gotSvc, wantSvc)
			}
			if addr, _ := flagValue(serveArgs(t, m, c), "addr"); !strings.HasSuffix(addr, ":8181") || ports["http"] != 8181 {
				t.Errorf("--addr=%s, container port http %d", addr, ports["http"])
			}
			if admin.Spec.ClusterIP != "None" || !admin.Spec.PublishNotReadyAddresses || len(admin.Spec.Ports) != 1 ||
				admin.Spec.Ports[0].TargetPort.StrVal != "admin" || ports["admin"] != 8282 {
				t.Errorf("admin Service %+v: want headless, publishing not-ready pods, on the admin port", admin.Spec)
			}
			for _, s := range []*corev1.Service{svc, admin} {
				for k, v := range s.Spec.Selector {
					if pod.Labels[k] != v {
						t.Errorf("Service %s selects %s=%s, which the pods do not carry", s.Name, k, v)
					}
				}
			}

			// The policies ConfigMap is the one mounted.
			pv := volumeNamed(t, spec.Volumes, "crmauthz-policies")
			if pv.ConfigMap == nil || pv.ConfigMap.Name != full+"-policies" {
				t.Errorf("policies volume %+v", pv.VolumeSource)
			}
			if _, ok := pod.Annotations["checksum/policies"]; ok {
				t.Error("a checksum annotation would restart the pods on a policy change, which is reloaded in place")
			}
		})
	}
}

func TestStandaloneDefaultDetails(t *testing.T) {
	m := render(t, chartDir, scenario("standalone-default"), nil)
	full := releaseName + "-crmauthz"
	d := get[*appsv1.Deployment](t, m, "Deployment", full)
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("replicas %d, strategy %+v: want 1 and a rollout that keeps the old pod until the new one is ready", *d.Spec.Replicas, d.Spec.Strategy)
	}
	pod := d.Spec.Template
	data := volumeNamed(t, pod.Spec.Volumes, "crmauthz-data")
	if data.EmptyDir == nil || data.EmptyDir.SizeLimit == nil || data.EmptyDir.SizeLimit.Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("index volume %+v, want an emptyDir of at most 1Gi", data.VolumeSource)
	}
	if pod.Annotations["prometheus.io/scrape"] != "true" || pod.Annotations["prometheus.io/port"] != "8282" ||
		pod.Annotations["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v", pod.Annotations)
	}
	c := containerNamed(t, pod.Spec.Containers, "crmauthz")
	if v, _ := flagValue(serveArgs(t, m, c), "ready-min-seq"); v != "1" {
		t.Errorf("--ready-min-seq=%q, want 1: an empty index must not be ready", v)
	}
	if c.Image != "crmauthz:0.1.0" {
		t.Errorf("image %q, want the repository placeholder and the appVersion", c.Image)
	}

	// The generated token: random, 48 characters, kept on uninstall.
	s := get[*corev1.Secret](t, m, "Secret", full+"-replication")
	if s.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("token Secret annotations %v, want helm.sh/resource-policy: keep", s.Annotations)
	}
	tok := string(s.Data["token"])
	if !regexp.MustCompile(`^[A-Za-z0-9]{48}$`).MatchString(tok) {
		t.Errorf("generated token %q, want 48 random letters and digits", tok)
	}
	again := get[*corev1.Secret](t, render(t, chartDir, scenario("standalone-default"), nil), "Secret", full+"-replication")
	if string(again.Data["token"]) == tok {
		t.Error("two installs generated the same token")
	}
	if !strings.Contains(m.notes, full+"-admin") || !strings.Contains(m.notes, full+"-replication") {
		t.Errorf("NOTES do not tell how to feed replication:\n%s", m.notes)
	}
}

func TestStandaloneFullDetails(t *testing.T) {
	m := render(t, chartDir, scenario("standalone-full"), nil)
	full := releaseName + "-crmauthz"
	ss := get[*appsv1.StatefulSet](t, m, "StatefulSet", full)
	if ss.Spec.Replicas != nil {
		t.Error("replicas is set although the HPA owns it")
	}
	if ss.Spec.ServiceName != full+"-admin" || ss.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("serviceName %q, podManagementPolicy %q", ss.Spec.ServiceName, ss.Spec.PodManagementPolicy)
	}
	if len(ss.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("volumeClaimTemplates %d, want 1", len(ss.Spec.VolumeClaimTemplates))
	}
	pvc := ss.Spec.VolumeClaimTemplates[0]
	if pvc.Name != "crmauthz-data" || *pvc.Spec.StorageClassName != "fast-ssd" ||
		pvc.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("2Gi")) != 0 ||
		!slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("claim template %+v", pvc)
	}
	for _, v := range ss.Spec.Template.Spec.Volumes {
		if v.Name == "crmauthz-data" {
			t.Error("the pod has a crmauthz-data volume besides the claim template")
		}
	}
	c := containerNamed(t, ss.Spec.Template.Spec.Containers, "crmauthz")
	for _, want := range []string{"--policies-require-tests", "--decision-log=stdout", "--consistency-wait=500ms",
		"--data-api-paths=crmauthz/decision,crmauthz/allow,crmauthz/list_scope"} {
		if !slices.Contains(serveArgs(t, m, c), want) {
			t.Errorf("args %v lack %s", c.Args, want)
		}
	}
	for _, want := range []string{"--jwt-jwks-file=/etc/crmauthz/jwt/jwks.json", "--jwt-issuer=https://idp.crm.example"} {
		if !slices.Contains(serveArgs(t, m, c), want) {
			t.Errorf("args %v lack %s", c.Args, want)
		}
	}
	jv := volumeNamed(t, ss.Spec.Template.Spec.Volumes, "crmauthz-jwt")
	if jv.ConfigMap == nil || jv.ConfigMap.Name != "crm-jwks" || len(jv.ConfigMap.Items) != 1 ||
		jv.ConfigMap.Items[0].Key != "jwks.json" || jv.ConfigMap.Items[0].Path != "jwks.json" {
		t.Errorf("JWKS volume %+v", jv.VolumeSource)
	}
	jwtMounted := false
	for _, vm := range c.VolumeMounts {
		if vm.Name == "crmauthz-jwt" && vm.ReadOnly && vm.MountPath == "/etc/crmauthz/jwt" {
			jwtMounted = true
		}
	}
	if !jwtMounted {
		t.Errorf("no read-only JWKS mount among %+v", c.VolumeMounts)
	}
	if len(c.Env) != 1 || c.Env[0].Name != "GOMEMLIMIT" {
		t.Errorf("env %+v", c.Env)
	}
	if _, ok := ss.Spec.Template.Annotations["prometheus.io/scrape"]; ok {
		t.Error("scrape annotations although metrics.podAnnotations is false")
	}

	hpa := get[*autoscalingv2.HorizontalPodAutoscaler](t, m, "HorizontalPodAutoscaler", full)
	if hpa.Spec.ScaleTargetRef != (autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: full}) ||
		*hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 6 || len(hpa.Spec.Metrics) != 2 ||
		*hpa.Spec.Metrics[0].Resource.Target.AverageUtilization != 60 {
		t.Errorf("HPA %+v", hpa.Spec)
	}
	pdb := get[*policyv1.PodDisruptionBudget](t, m, "PodDisruptionBudget", full)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PDB %+v", pdb.Spec)
	}

	np := get[*networkingv1.NetworkPolicy](t, m, "NetworkPolicy", full)
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) ||
		len(np.Spec.Egress) != 0 {
		t.Errorf("policy types %v, egress %v: want ingress and egress, no egress allowed", np.Spec.PolicyTypes, np.Spec.Egress)
	}
	if len(np.Spec.Ingress) != 2 {
		t.Fatalf("ingress rules %d, want 2 (decision, admin)", len(np.Spec.Ingress))
	}
	portsOf := func(r networkingv1.NetworkPolicyIngressRule) []int {
		var ps []int
		for _, p := range r.Ports {
			ps = append(ps, p.Port.IntValue())
		}
		return ps
	}
	dec, adm := np.Spec.Ingress[0], np.Spec.Ingress[1]
	if !slices.Equal(portsOf(dec), []int{8181, 9191}) || len(dec.From) != 2 || dec.From[0].PodSelector.MatchLabels["crmauthz-client"] != "true" {
		t.Errorf("decision rule %+v", dec)
	}
	if !slices.Equal(portsOf(adm), []int{8282}) || len(adm.From) != 2 ||
		adm.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("admin rule %+v", adm)
	}

	sm := get[*serviceMonitor](t, m, "ServiceMonitor", full)
	admin := get[*corev1.Service](t, m, "Service", full+"-admin")
	for k, v := range sm.Spec.Selector.MatchLabels {
		if admin.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s, the admin Service has %v", k, v, admin.Labels)
		}
	}
	if get[*corev1.Service](t, m, "Service", full).Labels["app.kubernetes.io/component"] == "admin" {
		t.Error("the ServiceMonitor would also select the decision Service")
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" ||
		sm.Spec.Endpoints[0].Interval != "15s" || sm.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor %+v", sm)
	}

	// policies.files adds a file beside the default ones.
	cm := get[*corev1.ConfigMap](t, m, "ConfigMap", full+"-policies")
	if !strings.Contains(cm.Data["site_test.rego"], "package crmauthz_site_test") || cm.Data["authz.rego"] == "" || cm.Data["config.rego"] == "" {
		t.Errorf("policies ConfigMap keys %v", keysOf(cm.Data))
	}
}

func TestNetworkPolicyEmptyPeersLetNobodyIn(t *testing.T) {
	m := render(t, chartDir, scenario("standalone-default"), vals("networkPolicy.enabled", true,
		"networkPolicy.decisionFrom", []any{}, "networkPolicy.adminFrom", []any{}))
	np := get[*networkingv1.NetworkPolicy](t, m, "NetworkPolicy", releaseName+"-crmauthz")
	if len(np.Spec.Ingress) != 0 {
		t.Errorf("ingress %+v: an empty peer list must not become a rule without from (which lets everyone in)", np.Spec.Ingress)
	}
	// The default lets in pods labelled crmauthz-client=true on the decision port only.
	m = render(t, chartDir, scenario("standalone-default"), vals("networkPolicy.enabled", true))
	np = get[*networkingv1.NetworkPolicy](t, m, "NetworkPolicy", releaseName+"-crmauthz")
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 || np.Spec.Ingress[0].Ports[0].Port.IntValue() != 8181 {
		t.Errorf("default ingress %+v", np.Spec.Ingress)
	}
}

// TestBadValuesAreRejected: values.schema.json and the chart's own checks refuse bad values
// with a message that names them.
func TestBadValuesAreRejected(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"unknown mode", vals("mode", "daemonset"), "mode"},
		{"unknown top-level key", vals("replicas", 3), "replicas"},
		{"misspelt nested key", vals("listen.decision.prot", 8181), "prot"},
		{"port out of range", vals("listen.admin.port", 70000), "port"},
		{"port as a string", vals("listen.decision.port", "8181"), "port"},
		{"pull policy", vals("image.pullPolicy", "Sometimes"), "pullPolicy"},
		{"policy file name with a slash", vals("policies.files", map[string]any{"sub/x.rego": "package x"}), "sub/x.rego"},
		{"extra arg that is not a flag", vals("extraArgs", []any{"serve"}), "extraArgs"},
		{"config key the args set", vals("config", map[string]any{"addr": "0.0.0.0:1"}), "invalid propertyName 'addr'"},
		{"config value a mapping", vals("config", map[string]any{"max-in-flight": map[string]any{"a": 1}}), "config"},
		{"log level", vals("logLevel", "verbose"), "logLevel"},
		{"bad digest", vals("image.digest", "latest"), "digest"},
		{"HPA in sidecar mode", vals("mode", "sidecar", "autoscaling.enabled", true), "autoscaling.enabled is for mode: standalone"},
		{"ServiceMonitor in sidecar mode", vals("mode", "sidecar", "metrics.serviceMonitor.enabled", true), "serviceMonitor"},
		{"decision on loopback in standalone mode", vals("listen.decision.host", "127.0.0.1"), "listen.decision.host is loopback"},
		{"admin on loopback", vals("mode", "sidecar", "listen.admin.host", "127.0.0.1"), "listen.admin.host must not be loopback"},
		{"two JWT keys", vals("identity.jwt.hs256Secret.name", "a", "identity.jwt.jwksConfigMap.name", "b"), "not both"},
		{"subject header that is no header name", vals("identity.subjectHeader", "X User"), "subjectHeader"},
		{"two listeners on one port", vals("listen.grpc.enabled", true, "listen.grpc.port", 8282), "must differ"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tryRender(t, chartDir, scenario("standalone-default"), tc.values)
			if err == nil {
				t.Fatalf("values %v were accepted", tc.values)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// The good neighbours of some of those are accepted.
	for _, ok := range []map[string]any{
		vals("podDisruptionBudget.enabled", true, "podDisruptionBudget.minAvailable", "50%"),
		vals("listen.grpc.enabled", true, "listen.grpc.port", 9000),
		vals("mode", "sidecar", "listen.decision.host", "0.0.0.0"),
		vals("policies.builtin", true),
		vals("image.digest", "sha256:"+strings.Repeat("ab", 32)),
	} {
		if _, err := tryRender(t, chartDir, scenario("standalone-default"), ok); err != nil {
			t.Errorf("values %v: %v", ok, err)
		}
	}
}

func TestTokenSecretData(t *testing.T) {
	// The chart writes data (base64), so the token survives as is; decode it as the API would.
	m := render(t, chartDir, scenario("standalone-default"), nil)
	raw := m.raw["Secret/"+releaseName+"-crmauthz-replication"]
	enc, _, _ := unstructuredString(raw.Object, "data", "token")
	dec, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(dec) != 48 {
		t.Fatalf("data.token %q: %v", enc, err)
	}
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}
