package chart_test

import (
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
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
