package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestDecideGolden(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	e := newDefaultEngine(t)
	reasons := map[string]bool{}
	for _, c := range g.Cases {
		reasons[c.Reason] = true
		t.Run(c.Name, func(t *testing.T) {
			d, rev, err := e.Decide(context.Background(), facts, c.input())
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if rev != e.Revision() {
				t.Errorf("revision = %q, want %q", rev, e.Revision())
			}
			if d.Allow != c.Allow || d.Reason != c.Reason {
				t.Errorf("Decide = %+v, want allow=%v reason=%q", d, c.Allow, c.Reason)
			}
		})
	}
	// every reason of docs/reference.md §1 is covered by the golden cases
	for _, r := range []string{"unknown_action", "unknown_subject", "record_not_found", "cross_location",
		"module_disabled", "unknown_target", "target_cross_location", "follower_limit_reached", "admin",
		"unrestricted", "owner", "follower", "follower_unfollow", "followers_cannot_change_owner",
		"follower_not_permitted", "not_assigned"} {
		if !reasons[r] {
			t.Errorf("no golden case for reason %q", r)
		}
	}
}

func TestDecideWithCancelableContext(t *testing.T) {
	g := loadGolden(t)
	e := newDefaultEngine(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, _, err := e.Decide(ctx, newMemFacts(t, g), Input{Subject: "u-owner", Action: "view", ResourceType: "contact", ResourceID: "c-1"})
	if err != nil || !d.Allow || d.Reason != "owner" {
		t.Fatalf("Decide = %+v, %v; want allow owner", d, err)
	}
	cancel()
	if _, _, err := e.Decide(ctx, newMemFacts(t, g), Input{Subject: "u-owner", Action: "view", ResourceType: "contact", ResourceID: "c-1"}); err == nil {
		t.Fatal("Decide with a canceled context: no error")
	}
}

func TestDecideFactsErrors(t *testing.T) {
	e := newDefaultEngine(t)
	errIndex := errors.New("index: disk on fire")
	g := loadGolden(t)
	good := newMemFacts(t, g)
	tests := []struct {
		name  string
		facts Facts
		want  error
	}{
		{"user read error", &memFacts{err: errIndex}, errIndex},
		{"record read error", &recordErrFacts{memFacts: good, err: errIndex}, errIndex},
		{"no facts", nil, ErrNoFacts},
		{"user not JSON", &memFacts{users: map[string][]byte{"u-owner": []byte(`{"id": "u-owner",`)}}, nil},
		{"user not an object", &memFacts{users: map[string][]byte{"u-owner": []byte(`["u-owner"]`)}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _, err := e.Decide(context.Background(), tt.facts,
				Input{Subject: "u-owner", Action: "view", ResourceType: "contact", ResourceID: "c-1"})
			if err == nil {
				t.Fatalf("Decide = %+v, nil; want an error (fail closed)", d)
			}
			if d.Allow {
				t.Errorf("Decide allowed with an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v does not wrap %v", err, tt.want)
			}
		})
	}
}

// recordErrFacts fails on records only: the error happens after the user
// was read, in a later rule.
type recordErrFacts struct {
	*memFacts
	err error
}

func (f *recordErrFacts) RecordJSON(string, string) ([]byte, error) { return nil, f.err }

func TestInputTarget(t *testing.T) {
	e := newDefaultEngine(t)
	p := e.cur.Load()
	target := ast.StringTerm("target")
	without := p.input(Input{Subject: "u", Action: "view", ResourceType: "contact", ResourceID: "c", Target: "ignored"})
	if without.(ast.Object).Get(target) != nil {
		t.Errorf("input without HasTarget has a target: %v", without)
	}
	with := p.input(Input{Subject: "u", Action: "view", ResourceType: "contact", ResourceID: "c", Target: "t", HasTarget: true})
	want := ast.MustParseTerm(`{"subject": "u", "action": "view", "resource": {"type": "contact", "id": "c"}, "target": "t"}`)
	if with.Compare(want.Value) != 0 {
		t.Errorf("input = %v, want %v", with, want)
	}
}

func TestQueryEqualsDecide(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	e := newDefaultEngine(t)
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			d, _, err := e.Decide(context.Background(), facts, c.input())
			if err != nil {
				t.Fatal(err)
			}
			input := e.cur.Load().input(c.input())
			res, defined, rev, err := e.Query(context.Background(), facts, []string{"crmauthz", "decision"}, input)
			if err != nil || !defined {
				t.Fatalf("Query = %v, %v, %v", res, defined, err)
			}
			if rev != e.Revision() {
				t.Errorf("revision %q, want %q", rev, e.Revision())
			}
			want := map[string]any{"allow": d.Allow, "reason": d.Reason}
			if !reflect.DeepEqual(res, want) {
				t.Errorf("Query = %#v, Decide = %#v", res, want)
			}
			allow, defined, _, err := e.Query(context.Background(), facts, []string{"crmauthz", "allow"}, input)
			if err != nil || !defined || allow != d.Allow {
				t.Errorf("Query allow = %v, %v, %v; want %v", allow, defined, err, d.Allow)
			}
		})
	}
}

func TestQuery(t *testing.T) {
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	e := newDefaultEngine(t)
	tests := []struct {
		name        string
		path        []string
		input       ast.Value
		want        any
		wantDefined bool
	}{
		{"config without input", []string{"crmauthz", "config", "max_followers"}, nil, jsonNumber("10"), true},
		{"switch", []string{"crmauthz", "config", "followers_can_delete"}, nil, false, true},
		{"undefined path", []string{"crmauthz", "nothing", "here"}, nil, nil, false},
		{"undefined package", []string{"nope"}, nil, nil, false},
		{"decision without input", []string{"crmauthz", "decision"}, nil,
			map[string]any{"allow": false, "reason": "unknown_action"}, true},
		{"subject via built-in", []string{"crmauthz", "subject"},
			ast.MustParseTerm(`{"subject": "u-owner"}`).Value,
			map[string]any{"id": "u-owner", "role": "user", "location_ids": []any{"loc-1"}, "assigned_data_only": true,
				"contacts_enabled": true, "opportunities_enabled": true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // the second time from the cache
				got, defined, _, err := e.Query(context.Background(), facts, tt.path, tt.input)
				if err != nil {
					t.Fatal(err)
				}
				if defined != tt.wantDefined || !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("Query = %#v (defined %v), want %#v (defined %v)", got, defined, tt.want, tt.wantDefined)
				}
			}
		})
	}
	t.Run("cache is bounded", func(t *testing.T) {
		for i := range maxCachedQueries + 10 {
			if _, _, _, err := e.Query(context.Background(), facts, []string{"p", strings.Repeat("x", i+1)}, nil); err != nil {
				t.Fatal(err)
			}
		}
		p := e.cur.Load()
		p.mu.Lock()
		n := len(p.queries)
		p.mu.Unlock()
		if n > maxCachedQueries {
			t.Errorf("%d cached queries, want at most %d", n, maxCachedQueries)
		}
	})
	t.Run("facts error", func(t *testing.T) {
		_, _, _, err := e.Query(context.Background(), &memFacts{err: errors.New("boom")},
			[]string{"crmauthz", "decision"}, ast.MustParseTerm(`{"subject": "u-owner", "action": "view"}`).Value)
		if err == nil {
			t.Fatal("no error")
		}
	})
}

// jsonNumber is how rego returns numbers.
func jsonNumber(s string) any {
	var v any
	_ = ast.As(ast.Number(s), &v)
	return v
}

func TestDecisionShape(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   string // part of the error
	}{
		{"undefined", `package crmauthz
decision := {"allow": true, "reason": "x"} if input.never`, "undefined"},
		{"not an object", `package crmauthz
decision := true`, "want an object"},
		{"allow not a boolean", `package crmauthz
decision := {"allow": "yes", "reason": "x"}`, `"allow" is string`},
		{"no allow", `package crmauthz
decision := {"reason": "x"}`, `no "allow"`},
		{"reason not a string", `package crmauthz
decision := {"allow": false, "reason": 1}`, `"reason" is number`},
		{"no reason", `package crmauthz
decision := {"allow": false}`, `no "reason"`},
		{"runtime error", `package crmauthz
decision := {"allow": false, "reason": x} if x := sprintf("%d", [1 / 0])`, "divide by zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"p.rego": tt.policy})
			e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			d, _, err := e.Decide(context.Background(), &memFacts{},
				Input{Subject: "u", Action: "view", ResourceType: "contact", ResourceID: "c"})
			if err == nil {
				t.Fatalf("Decide = %+v, nil; want an error", d)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	t.Run("conflict evaluated", func(t *testing.T) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"p.rego": `package crmauthz
decision := {"allow": false, "reason": "a"} if input.subject
decision := {"allow": true, "reason": "b"} if input.action`})
		e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.Decide(context.Background(), &memFacts{}, Input{Subject: "u", Action: "view"}); err == nil {
			t.Fatal("two values for the decision: no error")
		}
	})
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  *regexp.Regexp
	}{
		{"parse error", map[string]string{"authz.rego": "package crmauthz\n\ndecision := {\"allow\": true\n"},
			regexp.MustCompile(`authz\.rego:\d+:\d+: rego_parse_error`)},
		{"compile error", map[string]string{"authz.rego": "package crmauthz\n\ndecision := {\"allow\": true, \"reason\": x}\n"},
			regexp.MustCompile(`authz\.rego:3:\d+: rego_unsafe_var_error: var x is unsafe`)},
		{"unknown built-in", map[string]string{"authz.rego": "package crmauthz\n\ndecision := crm.nope(1)\n"},
			regexp.MustCompile(`authz\.rego:3:\d+: rego_type_error: undefined function crm\.nope`)},
		{"built-in arity", map[string]string{"authz.rego": "package crmauthz\n\ndecision := crm.record(\"x\")\n"},
			regexp.MustCompile(`authz\.rego:3:\d+: rego_type_error`)},
		{"no entry point", map[string]string{"authz.rego": "package other\n\nx := 1\n"},
			regexp.MustCompile(`data\.crmauthz\.decision`)},
		{"no files", map[string]string{"README.md": "hi"}, regexp.MustCompile(`no \.rego files`)},
		{"only tests", map[string]string{"a_test.rego": "package crmauthz\ntest_x if true\n"}, regexp.MustCompile(`no \.rego files`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			_, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
			if err == nil {
				t.Fatal("New: no error")
			}
			if !tt.want.MatchString(err.Error()) {
				t.Errorf("error %q does not match %v", err, tt.want)
			}
		})
	}
	if _, err := New(Config{EvalTimeout: testEvalTimeout}); err == nil {
		t.Error("New without a source: no error")
	}
	if _, err := New(Config{EvalTimeout: testEvalTimeout, Dir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("New with a missing directory: no error")
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	files := defaultPolicyFiles(t, true)
	writeFiles(t, dir, files)
	e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	follower := Input{Subject: "u-fol", Action: "delete", ResourceType: "contact", ResourceID: "c-1"}
	rev0 := e.Revision()
	st := e.Status()
	if st.Revision != rev0 || st.LastError != nil || st.LastReload.IsZero() {
		t.Fatalf("Status after New = %+v", st)
	}

	t.Run("unchanged", func(t *testing.T) {
		if err := e.Reload(); err != nil {
			t.Fatal(err)
		}
		if e.Revision() != rev0 {
			t.Errorf("revision changed without a change")
		}
	})

	t.Run("test file change does not change the revision", func(t *testing.T) {
		writeFiles(t, dir, map[string]string{"authz_test.rego": files["authz_test.rego"] + "\n# edited\n"})
		if err := e.Reload(); err != nil {
			t.Fatal(err)
		}
		if e.Revision() != rev0 {
			t.Errorf("revision changed by a test file")
		}
	})

	t.Run("broken file keeps the old policy", func(t *testing.T) {
		writeFiles(t, dir, map[string]string{"config.rego": "package crmauthz.config\n\nmax_followers := \n"})
		err := e.Reload()
		if err == nil {
			t.Fatal("Reload of a broken policy: no error")
		}
		want := regexp.MustCompile(regexp.QuoteMeta(filepath.Join(dir, "config.rego")) + `:\d+:\d+: rego_parse_error`)
		if !want.MatchString(err.Error()) {
			t.Errorf("error %q does not match %v", err, want)
		}
		if e.Revision() != rev0 {
			t.Errorf("revision changed to %s after a failed reload", e.Revision())
		}
		st := e.Status()
		if st.Revision != rev0 || st.LastError == nil || !want.MatchString(st.LastError.Error()) {
			t.Errorf("Status = %+v, want the old revision and the error", st)
		}
		d, _, err := e.Decide(context.Background(), facts, follower)
		if err != nil || d.Allow || d.Reason != "follower_not_permitted" {
			t.Errorf("Decide after a failed reload = %+v, %v", d, err)
		}
	})

	t.Run("good change swaps", func(t *testing.T) {
		before := e.Status().LastReload
		cfg := strings.Replace(files["config.rego"], "default followers_can_delete := false", "default followers_can_delete := true", 1)
		if cfg == files["config.rego"] {
			t.Fatal("config.rego has no followers_can_delete switch to flip")
		}
		writeFiles(t, dir, map[string]string{"config.rego": cfg})
		if err := e.Reload(); err != nil {
			t.Fatal(err)
		}
		st := e.Status()
		if st.Revision == rev0 || st.LastError != nil || !st.LastReload.After(before) {
			t.Errorf("Status after a good reload = %+v", st)
		}
		d, rev, err := e.Decide(context.Background(), facts, follower)
		if err != nil || !d.Allow || d.Reason != "follower" || rev != st.Revision {
			t.Errorf("Decide after the switch = %+v, %s, %v", d, rev, err)
		}
	})
}

func TestReloadConcurrentWithDecide(t *testing.T) {
	dir := t.TempDir()
	files := defaultPolicyFiles(t, false)
	writeFiles(t, dir, files)
	e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	g := loadGolden(t)
	facts := newMemFacts(t, g)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c := g.Cases[i%len(g.Cases)]
				d, _, err := e.Decide(context.Background(), facts, c.input())
				if err != nil || d.Allow != c.Allow || d.Reason != c.Reason {
					t.Errorf("%s: Decide = %+v, %v", c.Name, d, err)
					return
				}
			}
		})
	}
	for i := range 5 {
		writeFiles(t, dir, map[string]string{"config.rego": files["config.rego"] + strings.Repeat("\n", i+1)})
		if err := e.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestConfigMapLayout(t *testing.T) {
	dir := t.TempDir()
	ts := "..2026_11_27_01.1"
	files := defaultPolicyFiles(t, true)
	writeFiles(t, filepath.Join(dir, ts), files)
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// an old timestamped directory being removed, with a broken file
	writeFiles(t, filepath.Join(dir, "..2026_11_26_23.9"), map[string]string{"authz.rego": "package crmauthz\nbroken :=\n"})

	got, err := readSources(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range got {
		names = append(names, f.Rel)
	}
	if want := []string{"authz.rego", "authz_test.rego", "config.rego"}; !reflect.DeepEqual(names, want) {
		t.Errorf("loaded %v, want %v (each file once)", names, want)
	}

	e, err := New(Config{EvalTimeout: testEvalTimeout, Dir: dir})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	d, _, err := e.Decide(context.Background(), newMemFacts(t, loadGolden(t)),
		Input{Subject: "u-fol", Action: "edit", ResourceType: "contact", ResourceID: "c-1"})
	if err != nil || !d.Allow || d.Reason != "follower" {
		t.Errorf("Decide = %+v, %v", d, err)
	}
	if err := Compile(Config{Dir: dir}); err != nil {
		t.Errorf("Compile: %v", err)
	}
	if err := requireTests(context.Background(), got); err != nil {
		t.Errorf("requireTests: %v", err)
	}

	// the kubelet swaps ..data to a new directory
	ts2 := "..2026_11_28_02.2"
	cfg := strings.Replace(files["config.rego"], "max_followers := 10", "max_followers := 5", 1)
	writeFiles(t, filepath.Join(dir, ts2), map[string]string{"authz.rego": files["authz.rego"], "config.rego": cfg, "authz_test.rego": files["authz_test.rego"]})
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(ts2, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	rev := e.Revision()
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if e.Revision() == rev {
		t.Error("revision unchanged after the ConfigMap update")
	}
	max, _, _, err := e.Query(context.Background(), nil, []string{"crmauthz", "config", "max_followers"}, nil)
	if err != nil || !reflect.DeepEqual(max, jsonNumber("5")) {
		t.Errorf("max_followers = %v, %v; want 5", max, err)
	}
}

func TestRevision(t *testing.T) {
	e1 := newDefaultEngine(t)
	e2 := newDefaultEngine(t)
	if e1.Revision() != e2.Revision() {
		t.Error("same sources, different revisions")
	}
}
