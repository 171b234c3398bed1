package chart_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/crmauthz/crmauthz/tools/chart"
)

var (
	buildOnce sync.Once
	buildDir  string
	builtBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// makeBuild runs `make build` (what the Dockerfile runs) once, into a temporary BIN, and
// returns the binary.
func makeBuild(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "crmauthz-chart-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "crmauthz")
		cmd := exec.Command("make", "--no-print-directory", "-C", "../..", "build", "BIN="+builtBin, "VERSION=chart-test")
		cmd.Env = plainMakeEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("make build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// plainMakeEnv is the environment without what an outer make (`make test`) passes to its
// recipes: this make is not part of that one.
func plainMakeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" && k != "MAKEOVERRIDES" {
			env = append(env, kv)
		}
	}
	return env
}

// image is the final stage of the Dockerfile: its user, environment and entrypoint.
type image struct {
	from, user string
	env        []string
	entrypoint []string
	buildRuns  []string // RUN lines of the build stages
	copies     []string // COPY lines of the final stage
}

// readDockerfile parses the Dockerfile's instructions (with line continuations).
func readDockerfile(t testing.TB) image {
	t.Helper()
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var cur strings.Builder
	for _, l := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(l)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	var img image
	final := false
	for i, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			// The final stage is the last FROM.
			final = true
			for _, later := range lines[i+1:] {
				if strings.HasPrefix(strings.ToUpper(later), "FROM ") {
					final = false
				}
			}
			if final {
				img.from = rest
			}
		case "RUN":
			if !final {
				img.buildRuns = append(img.buildRuns, rest)
			}
		case "USER":
			if final {
				img.user = rest
			}
		case "COPY":
			if final {
				img.copies = append(img.copies, rest)
			}
		case "ENV":
			if final {
				k, v, ok := strings.Cut(rest, "=")
				if !ok || strings.ContainsAny(v, " \"'") {
					t.Fatalf("Dockerfile: write ENV as KEY=value, one a line: %q", l)
				}
				img.env = append(img.env, k+"="+v)
			}
		case "ENTRYPOINT":
			if final {
				if err := json.Unmarshal([]byte(rest), &img.entrypoint); err != nil {
					t.Fatalf("Dockerfile: ENTRYPOINT is not in exec (JSON) form: %v", err)
				}
			}
		}
	}
	return img
}

// TestDockerfile checks by reading what cannot be run here (no Docker engine): the image is
// built by `make build` (static, -trimpath), runs as a non-root user from an empty base, and
// gives that user a writable /data.
func TestDockerfile(t *testing.T) {
	img := readDockerfile(t)
	built := false
	for _, r := range img.buildRuns {
		if strings.Contains(r, "make build VERSION=") {
			built = true
		}
	}
	if !built {
		t.Errorf("the build stage does not run `make build`: %v", img.buildRuns)
	}
	if img.from != "scratch" {
		t.Errorf("final stage FROM %s, want scratch (no shell, no packages)", img.from)
	}
	if img.user != "65532:65532" {
		t.Errorf("USER %q, want 65532:65532", img.user)
	}
	if len(img.entrypoint) != 1 || img.entrypoint[0] != "/usr/local/bin/crmauthz" {
		t.Errorf("ENTRYPOINT %v", img.entrypoint)
	}
	dataOwned := false
	for _, c := range img.copies {
		if strings.Contains(c, "--chown=65532:65532") && strings.HasSuffix(c, " /data") {
			dataOwned = true
		}
	}
	if !dataOwned {
		t.Errorf("no COPY --chown=65532:65532 … /data in the final stage: %v", img.copies)
	}
	// The flags of `make build`, as make would run them.
	mkn := exec.Command("make", "--no-print-directory", "-n", "-C", "../..", "build", "BIN=/x/crmauthz", "VERSION=v")
	mkn.Env = plainMakeEnv()
	out, err := mkn.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	for _, want := range []string{"CGO_ENABLED=0 ", " -trimpath ", "-o /x/crmauthz ./cmd/crmauthz"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make build runs %q, without %q", out, want)
		}
	}
	// The chart runs what the image holds: its default image repository is the one `make image`
	// tags, and it names no registry host.
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*crmauthz$`).Match(mk) {
		t.Error("the Makefile's IMAGE default is not crmauthz, the chart's image.repository")
	}
}

// TestStaticBinary: `make build`, the image's build, gives a static executable, which runs on
// an empty (scratch) image: no program interpreter, no dynamic section, no shared libraries.
func TestStaticBinary(t *testing.T) {
	bin := makeBuild(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("program header %v: the binary is dynamically linked", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Error("the binary has a .dynamic section")
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings %v: want CGO_ENABLED=0 and -trimpath", settings)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "crmauthz chart-test" {
		t.Errorf("crmauthz version: %q %v", out, err)
	}
}

// writeVolume writes files the way the kubelet writes a ConfigMap or Secret volume: into a new
// timestamped directory, then an atomic rename of the ..data link to it, with each file a link
// into ..data. Called again, it swaps the contents as an update of the ConfigMap does.
func writeVolume(t testing.TB, dir string, files map[string][]byte, mode os.FileMode) {
	t.Helper()
	ts := filepath.Join(dir, fmt.Sprintf("..%s.%d", time.Now().UTC().Format("2006_01_02_15_04_05"), time.Now().UnixNano()))
	if err := os.MkdirAll(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(ts, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// pod is a pod of the chart run here: its volumes as temporary directories, its one container
// as the real binary with the rendered arguments and environment.
type pod struct {
	mounts map[string]string // mountPath -> directory here
	vols   map[string]string // volume name -> directory here
	args   []string
	env    []string
	// fileArgs are the translated settings of the --config file, as flags (configArgs)
	fileArgs []string
	// listener flag -> the container port it had
	listenPorts map[string]int32
}

var hostPort = regexp.MustCompile(`^(\[[0-9a-fA-F:]+\]|[0-9.]+|localhost):([0-9]+)$`)

// podFromManifests lays out the volumes of the pod template and translates the container's
// arguments and environment: a container path becomes the directory of its volume, a listener's
// port becomes 0 (the bound ports are read from the log). Everything else is passed as rendered.
func podFromManifests(t testing.TB, m manifests, tmpl corev1.PodTemplateSpec, container string, img image) *pod {
	t.Helper()
	root := t.TempDir()
	p := &pod{mounts: map[string]string{}, vols: map[string]string{}, listenPorts: map[string]int32{}}
	for _, v := range tmpl.Spec.Volumes {
		dir := filepath.Join(root, v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case v.ConfigMap != nil:
			cm := get[*corev1.ConfigMap](t, m, "ConfigMap", v.ConfigMap.Name)
			files := map[string][]byte{}
			for k, d := range cm.Data {
				files[k] = []byte(d)
			}
			writeVolume(t, dir, files, 0o644)
		case v.Secret != nil:
			s := get[*corev1.Secret](t, m, "Secret", v.Secret.SecretName)
			files := map[string][]byte{}
			for _, it := range v.Secret.Items {
				b, ok := s.Data[it.Key]
				if !ok {
					t.Fatalf("Secret %s has no key %s", s.Name, it.Key)
				}
				files[it.Path] = b
			}
			mode := os.FileMode(0o644)
			if v.Secret.DefaultMode != nil {
				mode = os.FileMode(*v.Secret.DefaultMode)
			}
			writeVolume(t, dir, files, mode)
		case v.EmptyDir != nil:
		default:
			t.Fatalf("volume %s: a kind this test does not lay out", v.Name)
		}
		p.vols[v.Name] = dir
	}
	c := containerNamed(t, tmpl.Spec.Containers, container)
	for _, vm := range c.VolumeMounts {
		dir, ok := p.vols[vm.Name]
		if !ok {
			t.Fatalf("mount of a missing volume %s", vm.Name)
		}
		p.mounts[vm.MountPath] = dir
	}
	if len(c.Command) > 0 {
		t.Fatalf("command %v: the test runs the image's entrypoint", c.Command)
	}
	p.args = p.translate(t, c.Args)
	p.translateConfigFile(t)
	env := slicesClone(img.env)
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Fatalf("env %s uses valueFrom, which this test does not resolve", e.Name)
		}
		env = append(env, e.Name+"="+e.Value)
	}
	for i, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		env[i] = k + "=" + p.path(t, v)
	}
	p.env = env
	return p
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// path maps a container path to its directory here; other values are returned unchanged. A path
// on the container's root filesystem (read-only) fails the test.
func (p *pod) path(t testing.TB, v string) string {
	t.Helper()
	if !strings.HasPrefix(v, "/") {
		return v
	}
	var mps []string
	for mp := range p.mounts {
		mps = append(mps, mp)
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	for _, mp := range mps {
		if v == mp || strings.HasPrefix(v, mp+"/") {
			return p.mounts[mp] + strings.TrimPrefix(v, mp)
		}
	}
	t.Fatalf("%s is on no volume: the root filesystem is read-only", v)
	return ""
}

func (p *pod) translate(t testing.TB, args []string) []string {
	t.Helper()
	var out []string
	for _, a := range args {
		name, v, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(name, "--") {
			out = append(out, a)
			continue
		}
		if hp := hostPort.FindStringSubmatch(v); hp != nil {
			port, _ := strconv.Atoi(hp[2])
			p.listenPorts[strings.TrimPrefix(name, "--")] = int32(port)
			out = append(out, name+"="+hp[1]+":0")
			continue
		}
		out = append(out, name+"="+p.path(t, v))
	}
	return out
}

// translateConfigFile rewrites the --config file laid out here as translate does the arguments:
// its paths become directories here, its listeners port 0.
func (p *pod) translateConfigFile(t testing.TB) {
	t.Helper()
	file, ok := flagValue(p.args, "config")
	if !ok {
		return
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var kv map[string]any
	if err := yaml.UnmarshalStrict(raw, &kv); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for k, v := range kv {
		s, ok := v.(string)
		if !ok {
			continue
		}
		if hp := hostPort.FindStringSubmatch(s); hp != nil {
			port, _ := strconv.Atoi(hp[2])
			p.listenPorts[k] = int32(port)
			kv[k] = hp[1] + ":0"
			continue
		}
		kv[k] = p.path(t, s)
	}
	out, err := yaml.Marshal(kv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	p.fileArgs = configArgs(t, string(out))
}

// effectiveArgs are the arguments and then the --config file's settings (which they override).
func (p *pod) effectiveArgs() []string {
	return append(slicesClone(p.args), p.fileArgs...)
}

type running struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error
	bound  map[string]string // listener flag -> 127.0.0.1:port, to connect to
	logged map[string]string // listener flag -> the address the serving log line names
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs the image's entrypoint (the binary) with the pod's arguments and only its
// environment, and waits for the "crmauthz serving" log line with the bound addresses.
func (p *pod) start(t testing.TB, bin string) *running {
	t.Helper()
	r := &running{stderr: &lockedBuffer{}, done: make(chan struct{}), bound: map[string]string{}, logged: map[string]string{}}
	r.cmd = exec.Command(bin, p.args...)
	r.cmd.Env = p.env
	r.cmd.Dir = t.TempDir()
	pr, pw := io.Pipe()
	r.cmd.Stderr = io.MultiWriter(pw, r.stderr)
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		pw.Close()
		close(r.done)
	}()
	t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.done
	})
	serving := make(chan map[string]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			var line map[string]any
			if sent || json.Unmarshal(sc.Bytes(), &line) != nil || line["msg"] != "crmauthz serving" {
				continue
			}
			addrs := map[string]string{}
			for k, v := range line {
				if s, ok := v.(string); ok && s != "" && strings.HasSuffix(k, "addr") {
					addrs[strings.ReplaceAll(k, "_", "-")] = s
				}
			}
			serving <- addrs
			sent = true
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case addrs := <-serving:
		for flag, a := range addrs {
			_, port, err := net.SplitHostPort(a)
			if err != nil {
				t.Fatalf("log: %s=%q", flag, a)
			}
			r.bound[flag] = "127.0.0.1:" + port
			r.logged[flag] = a
		}
	case <-r.done:
		t.Fatalf("crmauthz exited before serving: %v\n%s", r.err, r.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("crmauthz did not serve within 30s\n%s", r.stderr.String())
	}
	return r
}

// addrOfPort returns where the listener behind a container port is bound here.
func (r *running) addrOfPort(t testing.TB, p *pod, c corev1.Container, portName string) string {
	t.Helper()
	var num int32
	for _, cp := range c.Ports {
		if cp.Name == portName {
			num = cp.ContainerPort
		}
	}
	if num == 0 {
		t.Fatalf("the container has no port %q", portName)
	}
	for flag, port := range p.listenPorts {
		if port == num {
			a, ok := r.bound[flag]
			if !ok {
				t.Fatalf("--%s is not in the serving log line %v", flag, r.bound)
			}
			return a
		}
	}
	t.Fatalf("container port %s (%d) is no listener's port %v", portName, num, p.listenPorts)
	return ""
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func do(t testing.TB, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func waitFor(t testing.TB, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

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
