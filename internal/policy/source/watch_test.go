package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
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

// dirReloader is a Reloader as the policy engine is one: it reads its
// directory, refuses sources with a file that says "broken" (keeping the
// last good ones in service) and records every reload the watcher reports.
type dirReloader struct {
	cfg Config

	mu       sync.Mutex
	lastSeen string // revision of the last attempt, tests included
	served   map[string]string
	revision string
	events   []Reload
}

func newDirReloader(tb testing.TB, dir string) *dirReloader {
	tb.Helper()
	r := &dirReloader{cfg: Config{Dir: dir}}
	if ev := r.ReloadSources(context.Background()); ev.Err != nil || ev.Outcome != Applied {
		tb.Fatalf("first load: %+v", ev)
	}
	return r
}

func (r *dirReloader) ReloadSources(context.Context) Reload {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := Reload{Previous: r.revision, Revision: r.revision}
	files, err := Read(r.cfg)
	fp := "error"
	if err == nil {
		fp = Revision(files)
	}
	if fp == r.lastSeen {
		return ev
	}
	r.lastSeen = fp
	served := slices.DeleteFunc(files, File.IsTest)
	for _, f := range served {
		if strings.Contains(string(f.Src), "broken") {
			err = errors.New(f.Name + ": broken")
		}
	}
	switch {
	case err != nil:
		ev.Outcome, ev.Err = Failed, err
	case Revision(served) == r.revision:
		ev.Outcome = Unchanged
	default:
		r.served = map[string]string{}
		for _, f := range served {
			r.served[f.Rel] = string(f.Src)
		}
		r.revision = Revision(served)
		ev.Outcome, ev.Revision, ev.Attrs = Applied, r.revision, []any{"files", len(served)}
	}
	return ev
}

func (r *dirReloader) add(ev Reload) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

// file is the served content of rel.
func (r *dirReloader) file(rel string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.served[rel]
}

func (r *dirReloader) reported() []Reload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *dirReloader) failures() []Reload {
	return slices.DeleteFunc(r.reported(), func(ev Reload) bool { return ev.Err == nil })
}

func startWatcher(tb testing.TB, r *dirReloader, cfg Config) *Watcher {
	tb.Helper()
	cfg.Dir, cfg.OnReload = r.cfg.Dir, r.add
	w, err := New(cfg, r)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := w.Close(); err != nil {
			tb.Errorf("Watcher.Close: %v", err)
		}
	})
	return w
}

func TestWatcherPlainDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.rego": "v1", "authz_test.rego": "t1"})
	r := newDirReloader(t, dir)
	w := startWatcher(t, r, Config{})
	rev0 := r.revision

	// an edit in place
	writeFiles(t, dir, map[string]string{"config.rego": "v2"})
	waitFor(t, time.Minute, "the edit to apply", func() bool { return r.file("config.rego") == "v2" })
	waitFor(t, time.Minute, "the reload event", func() bool { return len(r.reported()) > 0 })
	if ev := r.reported()[0]; ev.Outcome != Applied || ev.Err != nil || ev.Previous != rev0 || ev.Revision == rev0 {
		t.Errorf("first event = %+v, want a change from %s", ev, rev0)
	}

	// a test file only: reported, nothing applied
	writeFiles(t, dir, map[string]string{"authz_test.rego": "t2"})
	waitFor(t, time.Minute, "the unchanged reload", func() bool {
		return slices.ContainsFunc(r.reported(), func(ev Reload) bool { return ev.Outcome == Unchanged })
	})

	// a broken file: reported once, the last good sources stay
	writeFiles(t, dir, map[string]string{"config.rego": "broken"})
	waitFor(t, time.Minute, "the failed reload", func() bool { return len(r.failures()) > 0 })
	if f := r.failures()[0]; f.Outcome != Failed || !strings.Contains(f.Err.Error(), filepath.Join(dir, "config.rego")) {
		t.Errorf("failure event = %+v", f)
	}

	// an editor's save: write a new file, rename it over the old one
	tmp := filepath.Join(dir, ".config.rego.swp")
	if err := os.WriteFile(tmp, []byte("v3"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "config.rego")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the fix to apply", func() bool { return r.file("config.rego") == "v3" })

	// a new subdirectory and a file in it
	if err := os.Mkdir(filepath.Join(dir, "extra"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the subdirectory to be watched", func() bool {
		return slices.Contains(w.fw.WatchList(), filepath.Join(dir, "extra"))
	})
	writeFiles(t, dir, map[string]string{"extra/more.rego": "more"})
	waitFor(t, time.Minute, "the file in the subdirectory to load", func() bool { return r.file("extra/more.rego") == "more" })

	if n := len(r.failures()); n != 1 {
		t.Errorf("%d failed reloads reported, want 1: %+v", n, r.failures())
	}
	for _, ev := range r.reported() {
		if ev.Outcome == Same {
			t.Errorf("an attempt that saw the same sources was reported: %+v", ev)
		}
	}
}

func TestWatcherConfigMap(t *testing.T) {
	dir := t.TempDir()
	configMapDir(t, dir, "..2026_11_27_07_00_00.000000001", map[string]string{"config.rego": "v1"})
	r := newDirReloader(t, dir)
	startWatcher(t, r, Config{})

	configMapUpdate(t, dir, "..2026_11_27_07_00_00.000000001", "..2026_11_27_07_05_00.000000002", map[string]string{"config.rego": "v2"})
	waitFor(t, time.Minute, "the ConfigMap update to apply", func() bool { return r.file("config.rego") == "v2" })

	configMapUpdate(t, dir, "..2026_11_27_07_05_00.000000002", "..2026_11_27_07_10_00.000000003", map[string]string{"config.rego": "broken"})
	waitFor(t, time.Minute, "the failed reload", func() bool { return len(r.failures()) > 0 })
	// the file name in the error is the one the author knows (the top-level link)
	if err := r.failures()[0].Err; !strings.Contains(err.Error(), filepath.Join(dir, "config.rego")+":") {
		t.Errorf("error %q does not name the top-level link", err)
	}
	if got := r.file("config.rego"); got != "v2" {
		t.Errorf("served %q after a failed update, want v2", got)
	}
}

// TestWatcherRecheck loses the directory's watch (as when the directory is
// replaced as a whole): the periodic recheck watches it again and applies
// the change that no event announced.
func TestWatcherRecheck(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.rego": "v1"})
	r := newDirReloader(t, dir)
	w := startWatcher(t, r, Config{Recheck: 50 * time.Millisecond})
	if err := w.fw.Remove(dir); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"config.rego": "v2"})
	waitFor(t, time.Minute, "the recheck to apply the change", func() bool { return r.file("config.rego") == "v2" })
	waitFor(t, time.Minute, "the directory to be watched again", func() bool {
		return slices.Contains(w.fw.WatchList(), dir)
	})
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"config.rego": "v1"})
	r := newDirReloader(t, dir)
	for name, tc := range map[string]struct {
		cfg Config
		r   Reloader
	}{
		"no reloader":       {Config{Dir: dir}, nil},
		"no directory":      {Config{}, r},
		"missing directory": {Config{Dir: filepath.Join(dir, "missing")}, r},
	} {
		t.Run(name, func(t *testing.T) {
			if w, err := New(tc.cfg, tc.r); err == nil {
				w.Close()
				t.Error("no error")
			}
		})
	}
	w, err := New(Config{Dir: dir}, r)
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.Debounce != DefaultConfig().Debounce || w.cfg.Recheck != DefaultConfig().Recheck || w.log == nil {
		t.Errorf("defaults not filled in: %+v", w.cfg)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
