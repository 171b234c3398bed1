package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/policy/source"
)

// waitFor polls cond until it holds or timeout passes (a timeout, not a
// speed requirement).
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reloadLog records a watcher's reload events.
type reloadLog struct {
	mu     sync.Mutex
	events []source.Reload
}

func (l *reloadLog) add(ev source.Reload) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
}

func (l *reloadLog) snapshot() []source.Reload {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]source.Reload(nil), l.events...)
}

func (l *reloadLog) failures() []source.Reload {
	var out []source.Reload
	for _, ev := range l.snapshot() {
		if ev.Err != nil {
			out = append(out, ev)
		}
	}
	return out
}

// startWatcher watches e's directory for e (source.New), as crmauthz serve
// does.
func startWatcher(tb testing.TB, e *Engine) (*source.Watcher, *reloadLog) {
	tb.Helper()
	log := &reloadLog{}
	w, err := source.New(source.Config{Dir: e.Dir(), OnReload: log.add}, e)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := w.Close(); err != nil {
			tb.Errorf("Watcher.Close: %v", err)
		}
	})
	return w, log
}

// followerDelete is u-fol deleting c-1, which it follows: denied unless
// followers_can_delete.
var followerDelete = Input{Subject: "u-fol", Action: "delete", ResourceType: "contact", ResourceID: "c-1"}

func decideReason(tb testing.TB, e *Engine, facts Facts, in Input) string {
	tb.Helper()
	d, _, err := e.Decide(context.Background(), facts, in)
	if err != nil {
		tb.Fatalf("Decide: %v", err)
	}
	if d.Allow {
		return "allow:" + d.Reason
	}
	return "deny:" + d.Reason
}

func flipDelete(tb testing.TB, config string, on bool) string {
	tb.Helper()
	from, to := "default followers_can_delete := false", "default followers_can_delete := true"
	if !on {
		from, to = to, from
	}
	out := strings.Replace(config, from, to, 1)
	if out == config {
		tb.Fatalf("config.rego has no %q", from)
	}
	return out
}

// brokenConfig does not compile: config.rego:5:18: rego_unsafe_var_error.
const brokenConfig = "package crmauthz.config\n\ndefault followers_can_delete := true\n\nmax_followers := nope\n"

func TestWatcherPlainDirectory(t *testing.T) {
	dir := t.TempDir()
	files := defaultPolicyFiles(t, true)
	writeFiles(t, dir, files)
	e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	facts := newMemFacts(t, loadGolden(t))
	_, log := startWatcher(t, e)
	rev0 := e.Revision()
	if got := decideReason(t, e, facts, followerDelete); got != "deny:follower_not_permitted" {
		t.Fatalf("before: %s", got)
	}

	// an edit in place
	writeFiles(t, dir, map[string]string{"config.rego": flipDelete(t, files["config.rego"], true)})
	waitFor(t, time.Minute, "the edit to apply", func() bool {
		return decideReason(t, e, facts, followerDelete) == "allow:follower"
	})
	rev1 := e.Revision()
	if rev1 == rev0 {
		t.Fatal("revision unchanged")
	}
	waitFor(t, time.Minute, "the reload event", func() bool { return len(log.snapshot()) > 0 })
	if ev := log.snapshot()[0]; ev.Outcome != source.Applied || ev.Err != nil || ev.Revision != rev1 {
		t.Errorf("first event = %+v, want a change to %s", ev, rev1)
	}

	// a broken file: the last good policy keeps serving, the error is reported
	writeFiles(t, dir, map[string]string{"config.rego": brokenConfig})
	waitFor(t, time.Minute, "the failed reload", func() bool { return len(log.failures()) > 0 })
	want := regexp.MustCompile(regexp.QuoteMeta(filepath.Join(dir, "config.rego")) + `:5:18: rego_unsafe_var_error`)
	if f := log.failures()[0]; !want.MatchString(f.Err.Error()) || f.Revision != rev1 || f.Outcome != source.Failed {
		t.Errorf("failure event = %+v, want %v on revision %s", f, want, rev1)
	}
	if st := e.Status(); st.Revision != rev1 || st.LastError == nil || !want.MatchString(st.LastError.Error()) {
		t.Errorf("Status = %+v", st)
	}
	if got := decideReason(t, e, facts, followerDelete); got != "allow:follower" {
		t.Errorf("after the failed reload: %s, want the last good policy's allow", got)
	}

	// an editor's save: write a new file, rename it over the old one
	tmp := filepath.Join(dir, ".config.rego.swp")
	if err := os.WriteFile(tmp, []byte(files["config.rego"]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "config.rego")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the fix to apply", func() bool {
		return decideReason(t, e, facts, followerDelete) == "deny:follower_not_permitted"
	})
	if st := e.Status(); st.LastError != nil || st.Revision != rev0 {
		t.Errorf("Status after the fix = %+v, want revision %s and no error", st, rev0)
	}

	if n := len(log.failures()); n != 1 {
		t.Errorf("%d failed reloads reported, want 1: %+v", n, log.failures())
	}
}

// A small policy with one switch and a test of it, for require-tests.
var switchPolicy = map[string]string{
	"authz.rego": `package crmauthz

import data.crmauthz.config

decision := {"allow": true, "reason": "open"} if {
	config.open
} else := {"allow": false, "reason": "closed"}
`,
	"config.rego": "package crmauthz.config\n\ndefault open := false\n",
	"authz_test.rego": `package crmauthz_test

import data.crmauthz

test_closed_by_default if {
	crmauthz.decision.reason == "closed"
}
`,
}

func TestWatcherRequireTests(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, switchPolicy)
	e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir, RequireTests: true})
	if err != nil {
		t.Fatal(err)
	}
	_, log := startWatcher(t, e)
	rev0 := e.Revision()
	in := Input{Subject: "u", Action: "view", ResourceType: "contact", ResourceID: "c"}

	// The switch flipped without its test: the test fails, nothing applies.
	writeFiles(t, dir, map[string]string{"config.rego": "package crmauthz.config\n\ndefault open := true\n"})
	waitFor(t, time.Minute, "the refused reload", func() bool { return len(log.failures()) > 0 })
	err = log.failures()[0].Err
	var tf *TestsFailedError
	if !errors.As(err, &tf) || len(tf.Failed) != 1 || tf.Total != 1 {
		t.Fatalf("error %v is not a *TestsFailedError with one failure", err)
	}
	want := regexp.MustCompile(regexp.QuoteMeta(filepath.Join(dir, "authz_test.rego")) + `:5:1: data\.crmauthz_test\.test_closed_by_default: FAIL`)
	if !want.MatchString(err.Error()) {
		t.Errorf("error %q does not match %v", err, want)
	}
	if e.Revision() != rev0 || decideReason(t, e, &memFacts{}, in) != "deny:closed" {
		t.Errorf("a policy with failing tests went into service: %s", e.Revision())
	}
	if st := e.Status(); st.LastError == nil || !want.MatchString(st.LastError.Error()) {
		t.Errorf("Status = %+v", st)
	}

	// The test updated with the switch: applied.
	writeFiles(t, dir, map[string]string{"authz_test.rego": strings.ReplaceAll(
		strings.ReplaceAll(switchPolicy["authz_test.rego"], "closed", "open"), "_by_default", "")})
	waitFor(t, time.Minute, "the tested change to apply", func() bool {
		return decideReason(t, e, &memFacts{}, in) == "allow:open"
	})
	if st := e.Status(); st.LastError != nil || st.Revision == rev0 {
		t.Errorf("Status = %+v", st)
	}
}

func TestReloadOutcomes(t *testing.T) {
	dir := t.TempDir()
	files := defaultPolicyFiles(t, true)
	writeFiles(t, dir, files)
	e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name  string
		write map[string]string
		want  source.Outcome
		err   bool
	}{
		{"nothing changed", nil, source.Same, false},
		{"a test file changed", map[string]string{"authz_test.rego": files["authz_test.rego"] + "\n# note\n"}, source.Unchanged, false},
		{"again nothing", nil, source.Same, false},
		{"broken", map[string]string{"config.rego": brokenConfig}, source.Failed, true},
		{"still broken: same outcome, not compiled again", nil, source.Same, true},
		{"fixed to the served sources", map[string]string{"config.rego": files["config.rego"]}, source.Unchanged, false},
		{"a real change", map[string]string{"config.rego": flipDelete(t, files["config.rego"], true)}, source.Applied, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			writeFiles(t, dir, st.write)
			got, err := e.reload(context.Background())
			if got != st.want || (err != nil) != st.err {
				t.Errorf("reload = %v, %v; want %v, error %v", got, err, st.want, st.err)
			}
			if (e.Status().LastError != nil) != st.err {
				t.Errorf("Status().LastError = %v", e.Status().LastError)
			}
		})
	}
}

func TestNewRequireTests(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no tests", nil, "there are none"},
		{"a failing test", map[string]string{"x_test.rego": "package x_test\n\ntest_no if false\n"}, "x_test.rego:3:1: data.x_test.test_no: FAIL"},
		{"an erroring test", map[string]string{"x_test.rego": "package x_test\n\nv := 1 if true\n\nv := 2 if true\n\ntest_err if v == 1\n"},
			"x_test.rego:7:1: data.x_test.test_err: ERROR: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			files := defaultPolicyFiles(t, false)
			for k, v := range tt.files {
				files[k] = v
			}
			writeFiles(t, dir, files)
			_, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir, RequireTests: true})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := New(Config{EvalTimeout: testEvalTimeout, Dir: t.TempDir() + "/missing", RequireTests: true}); err == nil {
		t.Error("missing directory: no error")
	}
	dir := t.TempDir()
	writeFiles(t, dir, defaultPolicyFiles(t, true))
	if _, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir, RequireTests: true}); err != nil {
		t.Errorf("default policy with its tests: %v", err)
	}
}

// BenchmarkLoad measures a load of the default policy from a directory, as a
// reload of changed sources does, with and without running its tests.
func BenchmarkLoad(b *testing.B) {
	dir := b.TempDir()
	writeFiles(b, dir, allDefaultFiles(b))
	for _, requireTests := range []bool{false, true} {
		name := "compile"
		if requireTests {
			name = "compile+tests"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir, RequireTests: requireTests}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
