package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one server process the tool started (crmauthz or opa).
type proc struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	mono    time.Duration // started on CLOCK_MONOTONIC (--sample-out, --server-logs)
	stderr  *tailBuffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done
}

// startProc starts bin with args; its output is kept (the last 64 KiB) for
// error messages and, when logDir is not "", written whole to
// logDir/NAME-PID.log (--server-logs: a server's GODEBUG=gctrace=1 lines,
// laid over the requests by their times), after a first line giving the
// moment of the start on CLOCK_MONOTONIC (serverLogHeader).
// cpus, when not "", pins it to those CPUs (taskset -c, see slices.go).
func startProc(name, bin string, args, env []string, cpus, logDir string) (*proc, error) {
	name0, argv := pinned(cpus, bin, args)
	cmd := exec.Command(name0, argv...)
	// The servers run with the Go runtime's defaults: the tool's own GC
	// settings (see mainErr) are not theirs; env sets them explicitly.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	p := &proc{name: name, cmd: cmd, stderr: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	var out io.Writer = p.stderr
	var logFile *os.File
	if logDir != "" {
		f, err := os.CreateTemp(logDir, name+"-*.log")
		if err != nil {
			return nil, fmt.Errorf("the log of %s: %w", name, err)
		}
		_ = f.Chmod(0o644)
		logFile, out = f, io.MultiWriter(p.stderr, f)
	}
	cmd.Stdout, cmd.Stderr = out, out
	p.started, p.mono = time.Now(), monotonicNow()
	if logFile != nil {
		fmt.Fprintln(logFile, serverLogHeader(name, p.mono, p.started))
	}
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
			os.Remove(logFile.Name())
		}
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	if logFile != nil {
		_ = os.Rename(logFile.Name(), filepath.Join(logDir, fmt.Sprintf("%s-%d.log", name, cmd.Process.Pid)))
	}
	go func() {
		p.waitErr = cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// serverLogHeader is the first line of a server's log (--server-logs): the
// moment just before it was started, on CLOCK_MONOTONIC (the clock of
// --requests-out's mono_ns and --sample-out) and the wall clock. A Go
// server's gctrace line "gc N @Ts …" counts T from its runtime's start, a
// few milliseconds after this moment (the exec and the runtime's own start).
func serverLogHeader(name string, mono time.Duration, wall time.Time) string {
	return fmt.Sprintf("# %s started mono_ns=%d wall=%s", name, mono.Nanoseconds(), wall.UTC().Format(time.RFC3339Nano))
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to timeout, then kills the process.
func (p *proc) stop(timeout time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM: killed", p.name, timeout)
	}
}

// waitReady polls url until it answers 200 and returns the time from the
// process's start. It fails when the process exits or timeout passes.
func (p *proc) waitReady(ctx context.Context, url string, timeout time.Duration) (time.Duration, error) {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			return 0, fmt.Errorf("%s exited before it was ready (%v): %s", p.name, p.waitErr, p.stderr)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(p.started), nil
			}
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s not ready at %s after %s: %s", p.name, url, timeout, p.stderr)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// memStatus is the memory of a process from /proc/PID/status, in KiB.
type memStatus struct {
	RSS, HWM, Anon, File int64
}

func readMem(pid int) (memStatus, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memStatus{}, err
	}
	defer f.Close()
	var m memStatus
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.HWM
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		*dst = n
	}
	return m, sc.Err()
}

// rssSampler records the highest VmRSS (and its anonymous part) of a process
// while it runs.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	peak memStatus
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if m, err := readMem(pid); err == nil && m.RSS > s.peak.RSS {
				s.peak = m
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the peak.
func (s *rssSampler) finish() memStatus {
	close(s.stop)
	<-s.done
	return s.peak
}

// defaultOPACache sets an empty --opa-cache to .cache/opa in the repository.
func defaultOPACache(dir *string) error {
	if *dir != "" {
		return nil
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	*dir = filepath.Join(root, ".cache", "opa")
	return nil
}

// repoRoot finds the directory of this module's go.mod, from the working
// directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/crmauthz/crmauthz\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the crmauthz module (no go.mod of github.com/crmauthz/crmauthz above the working directory)")
		}
		dir = parent
	}
}

// goCmd runs the go command in dir and returns its standard output.
func goCmd(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

const opaModule = "github.com/open-policy-agent/opa"

// opaBinary returns an `opa` built from source at the version the main
// module requires, into cacheDir/<version>/opa. A binary already there is
// reused: building OPA takes minutes here, so the cache (gitignored) is what
// keeps the smoke test in `make test` short after the first run.
func opaBinary(ctx context.Context, root, cacheDir string, logw io.Writer) (string, error) {
	out, err := goCmd(ctx, root, nil, "list", "-m", "-f", "{{.Version}}", opaModule)
	if err != nil {
		return "", err
	}
	version := strings.TrimSpace(string(out))
	if version == "" || strings.ContainsAny(version, `/\ `) {
		return "", fmt.Errorf("unexpected version %q of %s", version, opaModule)
	}
	bin := filepath.Join(cacheDir, version, "opa")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin, nil
	}
	// The module's own directory (the module cache, filled through the
	// module proxy when missing), built with its own go.mod and go.sum.
	tmp, err := os.MkdirTemp("", "crmauthz-bench-mod-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	out, err = goCmd(ctx, tmp, []string{"GOWORK=off", "GO111MODULE=on"}, "mod", "download", "-json", opaModule+"@"+version)
	if err != nil {
		return "", err
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: no module directory (%v)", opaModule, version, err)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	fmt.Fprintf(logw, "building opa %s from %s into %s (once; takes a few minutes)\n", version, mod.Dir, bin)
	start := time.Now()
	part := fmt.Sprintf("%s.part-%d", bin, os.Getpid())
	defer os.Remove(part)
	if _, err := goCmd(ctx, mod.Dir, []string{"GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false"}, "build", "-trimpath", "-o", part, "."); err != nil {
		return "", err
	}
	if err := os.Rename(part, bin); err != nil {
		return "", err
	}
	fmt.Fprintf(logw, "built opa %s in %s\n", version, time.Since(start).Round(time.Second))
	return bin, nil
}

// buildCrmauthz builds ./cmd/crmauthz of root into dir.
func buildCrmauthz(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "crmauthz")
	if _, err := goCmd(ctx, root, []string{"CGO_ENABLED=0"}, "build", "-trimpath", "-o", bin, "./cmd/crmauthz"); err != nil {
		return "", err
	}
	return bin, nil
}

// cpuTime is the user+system CPU time a process has used, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// startOnFreePorts starts a server with launch, which picks free loopback
// ports (freeAddr), starts the process and returns the URL that answers
// once it is ready, and waits up to wait for it. A port another process
// took between freeAddr and the server's bind ("address already in use")
// is tried again with new ports, three times in all.
func startOnFreePorts(ctx context.Context, wait time.Duration, launch func() (*proc, string, error)) (*proc, time.Duration, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, readyURL, err := launch()
		if err != nil {
			return nil, 0, err
		}
		ready, err := p.waitReady(ctx, readyURL, wait)
		if err == nil {
			return p, ready, nil
		}
		p.stop(5 * time.Second)
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			return nil, 0, err
		}
	}
	return nil, 0, lastErr
}
