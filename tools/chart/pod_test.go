package chart_test

import (
	"bufio"
	"bytes"
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
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

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
