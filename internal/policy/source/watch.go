package source

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

// Reloader is what a Watcher reloads: internal/policy's Engine.
type Reloader interface {
	// ReloadSources reads the sources again and puts them in service if
	// they compile; the old ones stay in service otherwise.
	ReloadSources(ctx context.Context) Reload
}

// Outcome is what one reload attempt did.
type Outcome int

// The outcomes of a reload.
const (
	// Same: the sources are those of the previous attempt; its outcome (its
	// error) stands and nothing was done.
	Same Outcome = iota
	// Unchanged: the sources changed, but not the served ones (a test file,
	// say); the policy in service stays.
	Unchanged
	// Applied: a new revision is in service.
	Applied
	// Failed: the new sources were refused; the old revision stays.
	Failed
)

// Reload is the outcome of one reload attempt.
type Reload struct {
	Outcome Outcome
	// Revision is the revision in service after the attempt; Previous the
	// one before.
	Revision, Previous string
	// Err is why the new sources were refused (nil unless Failed, or Same
	// as a failed attempt); the old revision stays in service. Compile
	// errors are "file:line:col: …" lines.
	Err error
	// Attrs are more attributes (key, value pairs) for the log line of an
	// applied reload.
	Attrs []any
}

// Watcher has a Reloader read its policy directory again when it changes.
//
// It watches the directory itself, not the files, and its subdirectories
// whose names do not start with ".", so that it sees files written in place,
// created, renamed over (editors) or removed, and a Kubernetes ConfigMap
// update, which only swaps the "..data" symbolic link. Any event starts the
// debounce timer; the reload then reads the whole directory again.
type Watcher struct {
	cfg  Config
	r    Reloader
	dir  string
	log  *slog.Logger
	fw   *fsnotify.Watcher
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// New starts watching cfg.Dir for r, which reads the same directory. Stop it
// with Close.
func New(cfg Config, r Reloader) (*Watcher, error) {
	if r == nil {
		return nil, errors.New("policy: source.New needs a Reloader")
	}
	if cfg.Dir == "" {
		return nil, errors.New("policy: only a policy directory (Config.Dir) can be watched")
	}
	dir := filepath.Clean(cfg.Dir)
	def := DefaultConfig()
	if cfg.Debounce <= 0 {
		cfg.Debounce = def.Debounce
	}
	if cfg.Recheck == 0 {
		cfg.Recheck = def.Recheck
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &Watcher{cfg: cfg, r: r, dir: dir, log: cfg.Logger, fw: fw, done: make(chan struct{})}
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

// reload has the Reloader reload and reports what changed.
func (w *Watcher) reload() {
	// A reload is not canceled by Close: it is short, and Close waits for it.
	ev := w.r.ReloadSources(context.Background())
	w.watchSubdirs()
	switch ev.Outcome {
	case Same:
		return
	case Failed:
		w.log.Error("policy reload failed: the last good policy keeps serving",
			"dir", w.dir, "revision", ev.Revision, "err", ev.Err.Error())
	case Applied:
		attrs := append([]any{"dir", w.dir, "revision", ev.Revision, "previous_revision", ev.Previous}, ev.Attrs...)
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
