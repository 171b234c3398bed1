package chart_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/crmauthz/crmauthz/tools/chart"
)

// TestStandaloneScenariosRunTheBinary starts the real binary as a pod of each standalone
// scenario would run it: the image's entrypoint and environment, the container's arguments and
// environment as rendered, the ConfigMap and Secret laid out as the kubelet does, an emptyDir or
// a claim a new directory. Only container paths (to those directories) and listener ports (to
// free ones) are translated. Then the probes, the token, a decision through the Service's port,
// the gRPC port when it is on, and a policy update by a ConfigMap swap.
func TestStandaloneScenariosRunTheBinary(t *testing.T) {
	full := releaseName + "-crmauthz"
	jwtKey, jwks := newJWTKey(t)
	tests := []standaloneRun{
		{scenario: "standalone-default", secret: full + "-replication", key: "token", reloadApplies: true},
		{
			scenario: "standalone-full",
			// What the user creates before installing: the token Secret and the JWKS ConfigMap.
			userObjects: map[string]any{
				"Secret/crm-replication": &corev1.Secret{Data: map[string][]byte{"bearer-token": []byte("a-token-from-the-secret-store\n")}},
				"ConfigMap/crm-jwks":     &corev1.ConfigMap{Data: map[string]string{"jwks.json": jwks}},
			},
			secret: "crm-replication", key: "bearer-token",
			jwt: func() string { return signJWT(t, jwtKey, "https://idp.crm.example", "u-1") },
		},
	}
	for _, tc := range tests {
		t.Run(tc.scenario, func(t *testing.T) { runStandalone(t, tc) })
	}
}

type standaloneRun struct {
	scenario    string
	userObjects map[string]any // by Kind/name
	secret, key string         // the token's Secret and key
	// Whether the policy switch flipped by the ConfigMap swap applies: with
	// policies.requireTests the default tests, which check the default switches, refuse it.
	reloadApplies bool
	// jwt, when set, makes a bearer JWT the scenario's identity settings accept.
	jwt func() string
}

// newJWTKey returns an ES256 key and a JWKS of its public key.
func newJWTKey(t testing.TB) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := k.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
		"x": b64(pt[1:33]), "y": b64(pt[33:]),
	}}})
	return k, string(jwks)
}

// signJWT makes an ES256 JWT for subject, valid for five minutes.
func signJWT(t testing.TB, k *ecdsa.PrivateKey, issuer, subject string) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": "k1"})
	c, _ := json.Marshal(map[string]any{"iss": issuer, "sub": subject, "exp": time.Now().Add(5 * time.Minute).Unix()})
	in := b64(h) + "." + b64(c)
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return in + "." + b64(sig)
}

func runStandalone(t testing.TB, tc standaloneRun) {
	bin := makeBuild(t)
	img := readDockerfile(t)
	m := render(t, chartDir, scenario(tc.scenario), nil)
	full := releaseName + "-crmauthz"
	for k, o := range tc.userObjects {
		m.objs[k] = o
	}
	secretName, key, reloadApplies := tc.secret, tc.key, tc.reloadApplies
	_, tmpl := podOf(t, m)
	tmpl = *tmpl.DeepCopy()
	grace := *tmpl.Spec.TerminationGracePeriodSeconds
	if ss, ok := m.objs["StatefulSet/"+full].(*appsv1.StatefulSet); ok {
		// Each claim of the volumeClaimTemplates is a new, empty volume.
		for _, claim := range ss.Spec.VolumeClaimTemplates {
			tmpl.Spec.Volumes = append(tmpl.Spec.Volumes, corev1.Volume{Name: claim.Name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}
	}
	p := podFromManifests(t, m, tmpl, "crmauthz", img)
	c := tmpl.Spec.Containers[0]
	r := p.start(t, bin)

	probe := func(pr *corev1.Probe) (int, map[string]any) {
		t.Helper()
		addr := r.addrOfPort(t, p, c, pr.HTTPGet.Port.StrVal)
		return do(t, http.MethodGet, "http://"+addr+pr.HTTPGet.Path, "", "")
	}
	for _, pr := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe} {
		if code, body := probe(pr); code != http.StatusOK {
			t.Fatalf("GET %s: %d %v", pr.HTTPGet.Path, code, body)
		}
	}
	// --ready-min-seq=1: not ready with an empty index.
	if code, body := probe(c.ReadinessProbe); code != http.StatusServiceUnavailable {
		t.Fatalf("readiness with an empty index: %d %v, want 503", code, body)
	}

	// The feeder reaches the admin port through the headless Service, with the Secret's token.
	adminSvc := get[*corev1.Service](t, m, "Service", full+"-admin")
	admin := r.addrOfPort(t, p, c, adminSvc.Spec.Ports[0].TargetPort.StrVal)
	token := strings.TrimSpace(string(get[*corev1.Secret](t, m, "Secret", secretName).Data[key]))
	events := `{"events":[
	 {"seq":1,"op":"user.upsert","user":{"id":"u-1","role":"user","location_ids":["loc-1"],"assigned_data_only":true}},
	 {"seq":2,"op":"user.upsert","user":{"id":"u-2","role":"user","location_ids":["loc-1"],"assigned_data_only":true}},
	 {"seq":3,"op":"record.upsert","record":{"type":"contact","id":"c-1","location_id":"loc-1","owner":"u-1","followers":["u-2"]}}]}`
	url := "http://" + admin + "/v1/replication/events"
	if code, _ := do(t, http.MethodPost, url, "", events); code != http.StatusUnauthorized {
		t.Fatalf("replication without the token: %d, want 401 (the admin port binds every interface)", code)
	}
	if code, _ := do(t, http.MethodPost, url, token+"x", events); code != http.StatusUnauthorized {
		t.Fatalf("replication with a wrong token: %d, want 401", code)
	}
	if code, body := do(t, http.MethodPost, url, token, events); code != http.StatusOK || body["applied_seq"] != float64(3) {
		t.Fatalf("replication with the Secret's token: %d %v", code, body)
	}
	waitFor(t, "ready once seq 1 is applied", time.Minute, func() bool {
		code, _ := probe(c.ReadinessProbe)
		return code == http.StatusOK
	})

	// Decisions through the Service's port; the gRPC port, when the Service has one, listens.
	svc := get[*corev1.Service](t, m, "Service", full)
	var decision string
	for _, sp := range svc.Spec.Ports {
		addr := r.addrOfPort(t, p, c, sp.TargetPort.StrVal)
		switch sp.Name {
		case "http":
			decision = "http://" + addr + "/v1/decision"
		case "grpc":
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Errorf("Service port grpc: %v", err)
			} else {
				conn.Close()
			}
		default:
			t.Errorf("Service port %s: not checked here", sp.Name)
		}
	}
	decide := func(subject, action string) (bool, string) {
		t.Helper()
		code, body := do(t, http.MethodPost, decision, "",
			fmt.Sprintf(`{"subject":%q,"action":%q,"resource":{"type":"contact","id":"c-1"}}`, subject, action))
		if code != http.StatusOK {
			t.Fatalf("decision: %d %v", code, body)
		}
		allow, _ := body["allow"].(bool)
		reason, _ := body["reason"].(string)
		return allow, reason
	}
	if allow, reason := decide("u-1", "delete"); !allow || reason != "owner" {
		t.Errorf("owner delete: %v %s", allow, reason)
	}
	if allow, reason := decide("u-2", "delete"); allow || reason != "follower_not_permitted" {
		t.Fatalf("follower delete: %v %s, want follower_not_permitted", allow, reason)
	}

	// Forward auth: with a JWT key configured, the subject is the verified token's, and a request
	// without one is 401.
	if tc.jwt != nil {
		fa := strings.TrimSuffix(decision, "/v1/decision") + "/v1/forward-auth"
		forward := func(bearer string) int {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, fa, nil)
			req.Header.Set("X-Forwarded-Method", "GET")
			req.Header.Set("X-Forwarded-Uri", "/contacts/c-1")
			req.Header.Set("X-User-Id", "u-1") // ignored once a JWT key is set
			if bearer != "" {
				req.Header.Set("Authorization", "Bearer "+bearer)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := forward(tc.jwt()); code != http.StatusOK {
			t.Errorf("forward auth with the JWT of the owner: %d, want 200", code)
		}
		if code := forward(""); code != http.StatusUnauthorized {
			t.Errorf("forward auth without a JWT: %d, want 401 (the subject header must not count)", code)
		}
	}

	// A policy change is a ConfigMap update: the kubelet swaps ..data, crmauthz reloads in place.
	cm := get[*corev1.ConfigMap](t, m, "ConfigMap", full+"-policies")
	files := map[string][]byte{}
	for k, v := range cm.Data {
		files[k] = []byte(v)
	}
	const off, on = "default followers_can_delete := false", "default followers_can_delete := true"
	if !strings.Contains(cm.Data["config.rego"], off) {
		t.Fatalf("config.rego has no %q", off)
	}
	files["config.rego"] = []byte(strings.Replace(cm.Data["config.rego"], off, on, 1))
	writeVolume(t, p.vols["crmauthz-policies"], files, 0o644)
	if reloadApplies {
		waitFor(t, "the switched policy after the ConfigMap swap", time.Minute, func() bool {
			allow, reason := decide("u-2", "delete")
			return allow && reason == "follower"
		})
	} else {
		waitFor(t, "the refused reload in /v1/status", time.Minute, func() bool {
			code, body := do(t, http.MethodGet, "http://"+admin+"/v1/status", "", "")
			pol, _ := body["policy"].(map[string]any)
			return code == http.StatusOK && pol["last_error"] != nil
		})
		if allow, reason := decide("u-2", "delete"); allow || reason != "follower_not_permitted" {
			t.Errorf("after a refused reload: %v %s, want the last good policy", allow, reason)
		}
	}

	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", r.err, r.stderr.String())
		}
	case <-time.After(time.Duration(grace) * time.Second):
		t.Error("no exit within terminationGracePeriodSeconds of SIGTERM")
	}
	if t.Failed() {
		t.Log(r.stderr.String())
	}
}

// TestSidecarRunsTheBinary runs the crmauthz container of the example app's pod (sidecar mode)
// the same way: the decision and gRPC listeners are on loopback only, the admin listener on
// every interface for the probes and the feeder, and all work.
func TestSidecarRunsTheBinary(t *testing.T) {
	bin := makeBuild(t)
	m := render(t, exampleDir, "", nil)
	d := get[*appsv1.Deployment](t, m, "Deployment", app)
	p := podFromManifests(t, m, d.Spec.Template, "crmauthz", readDockerfile(t))
	c := containerNamed(t, d.Spec.Template.Spec.Containers, "crmauthz")
	r := p.start(t, bin)

	if a, _ := flagValue(p.effectiveArgs(), "addr"); !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("--addr=%s in sidecar mode, want loopback", a)
	}
	if a, _ := flagValue(p.effectiveArgs(), "admin-addr"); !strings.HasPrefix(a, "0.0.0.0:") {
		t.Errorf("--admin-addr=%s, want every interface (probes come from the kubelet)", a)
	}
	if code, _ := do(t, http.MethodGet, "http://"+r.addrOfPort(t, p, c, c.LivenessProbe.HTTPGet.Port.StrVal)+c.LivenessProbe.HTTPGet.Path, "", ""); code != http.StatusOK {
		t.Fatalf("liveness: %d", code)
	}
	admin := r.addrOfPort(t, p, c, "crmauthz-admin")
	token := string(get[*corev1.Secret](t, m, "Secret", releaseName+"-crmauthz-replication").Data["token"])
	events := `{"events":[{"seq":1,"op":"user.upsert","user":{"id":"u-1","role":"admin","location_ids":["loc-1"]}},
	 {"seq":2,"op":"record.upsert","record":{"type":"contact","id":"c-1","location_id":"loc-1","owner":""}}]}`
	if code, body := do(t, http.MethodPost, "http://"+admin+"/v1/replication/events", token, events); code != http.StatusOK {
		t.Fatalf("replication: %d %v", code, body)
	}
	ready := "http://" + admin + c.ReadinessProbe.HTTPGet.Path
	waitFor(t, "ready", time.Minute, func() bool { code, _ := do(t, http.MethodGet, ready, "", ""); return code == http.StatusOK })
	// The app calls crmauthz on loopback, as its CRMAUTHZ_URL says.
	appEnv := map[string]string{}
	for _, e := range containerNamed(t, d.Spec.Template.Spec.Containers, "app").Env {
		appEnv[e.Name] = e.Value
	}
	_, port, _ := net.SplitHostPort(r.bound["addr"])
	_, wantPort, _ := net.SplitHostPort(strings.TrimPrefix(appEnv["CRMAUTHZ_URL"], "http://"))
	if wantPort != strconv.Itoa(int(p.listenPorts["addr"])) {
		t.Errorf("the app's CRMAUTHZ_URL %s is not crmauthz's decision port %d", appEnv["CRMAUTHZ_URL"], p.listenPorts["addr"])
	}
	code, body := do(t, http.MethodPost, "http://127.0.0.1:"+port+"/v1/decision", "", `{"subject":"u-1","action":"edit","resource":{"type":"contact","id":"c-1"}}`)
	if code != http.StatusOK || body["allow"] != true || body["reason"] != "admin" {
		t.Errorf("decision over loopback: %d %v", code, body)
	}
	// Envoy's ext_authz reaches the gRPC listener on loopback.
	ga := r.bound["grpc-addr"]
	for _, l := range []string{"addr", "grpc-addr"} {
		if !strings.HasPrefix(r.logged[l], "127.0.0.1:") {
			t.Errorf("--%s bound %q (log: %v), want loopback", l, r.logged[l], r.logged)
		}
	}
	if ga == "" {
		t.Error("no gRPC listener in the serving log line")
	} else if conn, err := net.DialTimeout("tcp", ga, 5*time.Second); err != nil {
		t.Errorf("gRPC listener %s: %v", ga, err)
	} else {
		conn.Close()
	}
	if a, _ := flagValue(p.effectiveArgs(), "grpc-addr"); !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("--grpc-addr=%s in sidecar mode, want loopback", a)
	}
	if t.Failed() {
		t.Log(r.stderr.String())
	}
}

// TestScenarioPoliciesPassTheirTests runs `crmauthz policy test` and `policy check` on the
// policies ConfigMap of every scenario, laid out as the kubelet mounts it: a scenario that adds
// or replaces files (and may turn on policies.requireTests, which refuses a failing policy at
// start) must serve a policy whose tests pass.
func TestScenarioPoliciesPassTheirTests(t *testing.T) {
	bin := makeBuild(t)
	files, err := chart.Scenarios(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			m := render(t, chartDir, f, nil)
			var cm *corev1.ConfigMap
			for _, k := range m.keys() {
				if strings.HasPrefix(k, "ConfigMap/") {
					cm = m.objs[k].(*corev1.ConfigMap)
				}
			}
			if cm == nil {
				t.Fatalf("no policies ConfigMap among %v", m.keys())
			}
			dir := t.TempDir()
			data := map[string][]byte{}
			for k, v := range cm.Data {
				data[k] = []byte(v)
			}
			writeVolume(t, dir, data, 0o644)
			for _, args := range [][]string{{"policy", "check", dir}, {"policy", "test", dir}} {
				cmd := exec.Command(bin, args...)
				cmd.Env = []string{}
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("crmauthz %s: %v\n%s", strings.Join(args[:2], " "), err, out)
				}
			}
		})
	}
}
