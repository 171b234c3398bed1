package policy

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchConfig configures NewWatcher.
type WatchConfig struct {
	// Engine is the engine to reload; required, and loading from a directory
	// (Config.Dir), which is the directory watched.
	Engine *Engine
	// Debounce is the quiet time after the last change before a reload, so
	// that an editor's or the kubelet's burst of events makes one reload;
	// default 100ms.
	Debounce time.Duration
	// Recheck is the interval of a reload attempt without any event, for the
	// changes a watch cannot see (a network file system, a directory replaced
	// as a whole, a lost event); default 10s, negative to disable. A recheck
	// of unchanged sources costs a read of the files and a hash, no compile.
	Recheck time.Duration
	// Logger gets one line per reload that changes something or fails;
	// default slog.Default().
	Logger *slog.Logger
	// OnReload, if set, is called after each reload attempt that saw new
	// sources (never for a recheck that found them unchanged), from the
	// watcher's goroutine.
	OnReload func(ReloadEvent)
}

// ReloadEvent is the outcome of one reload attempt of a Watcher.
type ReloadEvent struct {
	// Revision is the revision in service after the attempt.
	Revision string
	// Changed is true when a new revision went into service.
	Changed bool
	// Err is why the new sources were refused (nil on success); the old
	// revision stays in service. Compile errors are "file:line:col: …" lines.
	Err error
}

// Watcher reloads an Engine when its policy directory changes.
//
// It watches the directory itself, not the files, and its subdirectories
// whose names do not start with ".", so that it sees files written in place,
// created, renamed over (editors) or removed, and a Kubernetes ConfigMap
// update, which only swaps the "..data" symbolic link. Any event starts the
// debounce timer; the reload then reads the whole directory again.
type Watcher struct {
	cfg  WatchConfig
	eng  *Engine
	dir  string
	log  *slog.Logger
	fw   *fsnotify.Watcher
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// NewWatcher starts watching cfg.Engine's policy directory. Stop it with Close.
func NewWatcher(cfg WatchConfig) (*Watcher, error) {
	if cfg.Engine == nil {
		return nil, errors.New("policy: WatchConfig.Engine is required")
	}
	dir := filepath.Clean(cfg.Engine.cfg.Dir)
	if cfg.Engine.cfg.Dir == "" {
		return nil, errors.New("policy: only a policy directory (Config.Dir) can be watched")
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.Recheck == 0 {
		cfg.Recheck = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &Watcher{cfg: cfg, eng: cfg.Engine, dir: dir, log: cfg.Logger, fw: fw, done: make(chan struct{})}
	if err := fw.Add(dir); err != nil {
		fw.Close()
		return nil, err
	}
	w.watchSubdirs()
	w.wg.Add(1)
	go w.run()
	return w, nil
}

// Close stops the watcher and waits for a reload in progress. It is
// idempotent.
func (w *Watcher) Close() error {
	var err error
	w.once.Do(func() {
		close(w.done)
		err = w.fw.Close()
		w.wg.Wait()
	})
	return err
}

func (w *Watcher) run() {
	defer w.wg.Done()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var recheck <-chan time.Time
	if w.cfg.Recheck > 0 {
		t := time.NewTicker(w.cfg.Recheck)
		defer t.Stop()
		recheck = t.C
	}
	for {
		select {
		case <-w.done:
			return
		case ev, ok := <-w.fw.Events:
			if !ok {
				return
			}
			w.log.Debug("policy directory event", "event", ev.String())
			debounce.Reset(w.cfg.Debounce)
		case err, ok := <-w.fw.Errors:
			if !ok {
				return
			}
			// An overflow loses events: reload to be sure.
			w.log.Warn("watching the policy directory", "dir", w.dir, "err", err)
			debounce.Reset(w.cfg.Debounce)
		case <-debounce.C:
			w.reload()
		case <-recheck:
			w.rewatch()
			w.reload()
		}
	}
}

// reload reloads the engine and reports what changed.
func (w *Watcher) reload() {
	old := w.eng.Revision()
	// A reload is not canceled by Close: it is short, and Close waits for it.
	outcome, err := w.eng.reload(context.Background())
	w.watchSubdirs()
	if outcome == reloadSame {
		return
	}
	ev := ReloadEvent{Revision: w.eng.Revision(), Changed: outcome == reloadApplied, Err: err}
	switch outcome {
	case reloadFailed:
		w.log.Error("policy reload failed: the last good policy keeps serving",
			"dir", w.dir, "revision", ev.Revision, "err", err.Error())
	case reloadApplied:
		evaluator, whyNot := w.eng.Evaluator()
		attrs := []any{"dir", w.dir, "revision", ev.Revision, "previous_revision", old, "policy_evaluator", string(evaluator)}
		if whyNot != nil {
			attrs = append(attrs, "why_not_ir", whyNot.Error())
		}
		w.log.Info("policy reloaded", attrs...)
	default:
		w.log.Info("policy sources changed; the served policy is the same", "dir", w.dir, "revision", ev.Revision)
	}
	if w.cfg.OnReload != nil {
		w.cfg.OnReload(ev)
	}
}

// rewatch watches the directory again if its watch is gone (the directory
// was removed or renamed, and perhaps created again).
func (w *Watcher) rewatch() {
	if slices.Contains(w.fw.WatchList(), w.dir) {
		return
	}
	if err := w.fw.Add(w.dir); err != nil {
		w.log.Warn("watching the policy directory", "dir", w.dir, "err", err)
	}
}

// watchSubdirs adds a watch on every subdirectory the loader reads (names
// not starting with "."; symbolic links are not followed, as by the loader).
func (w *Watcher) watchSubdirs() {
	watched := w.fw.WatchList()
	_ = fs.WalkDir(os.DirFS(w.dir), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || rel == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			return fs.SkipDir
		}
		if p := filepath.Join(w.dir, filepath.FromSlash(rel)); !slices.Contains(watched, p) {
			if err := w.fw.Add(p); err != nil {
				w.log.Warn("watching a policy subdirectory", "dir", p, "err", err)
			}
		}
		return nil
	})
}
