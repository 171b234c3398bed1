// Package source reads the policy's sources and watches them: the *.rego
// files of an fs.FS or of a directory (a Kubernetes ConfigMap mount read
// through one resolution of its "..data" link), their revision (a hash of
// names and contents), and a Watcher that has a Reloader (the policy engine)
// read them again when the directory changes (docs/policies.md,
// docs/design.md). It knows nothing of Rego beyond the file names: parsing
// and compiling are internal/policy's.
package source

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Config says where the sources are (Read) and how a Watcher watches them.
type Config struct {
	// FS holds the sources: *.rego files anywhere under it.
	FS fs.FS
	// Dir, if set, is read instead of FS, with os.DirFS semantics except:
	// entries whose name starts with "." are skipped (the Kubernetes
	// ConfigMap "..data" and "..2026_…" directories, but also .git and
	// editor files), and symbolic links to files are followed, so a ConfigMap
	// mount loads each file once, through its top-level link. The top-level
	// links into ..data/ are all read through one resolution of ..data, so a
	// read sees one ConfigMap version even while the kubelet swaps it. It is
	// the directory a Watcher watches.
	Dir string
	// Debounce is the quiet time after the last change before a reload, so
	// that an editor's or the kubelet's burst of events makes one reload;
	// 0 is DefaultConfig's, 100ms.
	Debounce time.Duration
	// Recheck is the interval of a reload attempt without any event, for the
	// changes a watch cannot see (a network file system, a directory replaced
	// as a whole, a lost event); 0 is DefaultConfig's, 10s; negative
	// disables it. A recheck of unchanged sources costs a read of the files
	// and a hash, no compile.
	Recheck time.Duration
	// Logger gets one line per reload that changes something or fails;
	// default slog.Default().
	Logger *slog.Logger
	// OnReload, if set, is called after each reload attempt that saw new
	// sources (never for one whose Outcome is Same), from the watcher's
	// goroutine.
	OnReload func(Reload)
}

// DefaultConfig is the watcher's defaults; no source.
func DefaultConfig() Config {
	return Config{Debounce: 100 * time.Millisecond, Recheck: 10 * time.Second}
}

// File is one policy file.
type File struct {
	Rel  string // path relative to the root, with '/' separators
	Name string // name used in locations and messages (Dir joined for Config.Dir)
	Src  []byte
}

// IsTest tells a Rego test file (*_test.rego), left out when serving.
func (f File) IsTest() bool {
	return strings.HasSuffix(f.Rel, "_test.rego")
}

// Read reads every *.rego file of cfg.Dir, or else of cfg.FS, sorted by
// path (Config.Dir says how a directory is read).
func Read(cfg Config) ([]File, error) {
	if cfg.Dir == "" {
		if cfg.FS == nil {
			return nil, errors.New("policy: no source configured (Config.FS or Config.Dir)")
		}
		return walkSources(cfg.FS, "", "")
	}
	fi, err := os.Stat(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("policy directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("policy directory %s: not a directory", cfg.Dir)
	}
	// A ConfigMap update swaps ..data and then removes the old directory: a
	// read that races with it fails, and the next attempt sees the new one.
	for attempt := 0; ; attempt++ {
		files, err := walkSources(os.DirFS(cfg.Dir), cfg.Dir, configMapData(cfg.Dir))
		if err == nil || attempt == 2 {
			return files, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// configMapData resolves dir/..data, the link a Kubernetes ConfigMap volume
// swaps atomically on an update; "" when there is none.
func configMapData(dir string) string {
	link := filepath.Join(dir, "..data")
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return ""
	}
	resolved, err := filepath.EvalSymlinks(link)
	if err != nil {
		return ""
	}
	return resolved
}

// walkSources reads the *.rego files of fsys. dir is the directory fsys
// reads (for file names in messages; "" for an fs.FS). dataDir is the resolved
// ConfigMap ..data directory, if any: top-level links into ..data/ are read
// from it, so all files come from the same ConfigMap version even when the
// kubelet swaps ..data during the walk.
func walkSources(fsys fs.FS, dir, dataDir string) ([]File, error) {
	var files []File
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			// "..data", "..2026_11_27_01.1" (ConfigMap), ".git", editor files
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".rego") {
			return nil
		}
		var src []byte
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			// follow links to files (ConfigMap: authz.rego -> ..data/authz.rego),
			// never links to directories
			src, err = readLink(fsys, p, dir, dataDir)
			if err != nil || src == nil {
				return err
			}
		case d.Type().IsRegular():
			if src, err = fs.ReadFile(fsys, p); err != nil {
				return err
			}
		default:
			return nil
		}
		name := p
		if dir != "" {
			name = filepath.Join(dir, filepath.FromSlash(p))
		}
		files = append(files, File{Rel: p, Name: name, Src: src})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading policies: %w", err)
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Rel, b.Rel) })
	return files, nil
}

// readLink reads the file a symbolic link points to; nil, nil when it points
// to something else than a regular file.
func readLink(fsys fs.FS, p, dir, dataDir string) ([]byte, error) {
	if dataDir != "" && !strings.Contains(p, "/") {
		if target, err := os.Readlink(filepath.Join(dir, p)); err == nil {
			if rest, ok := strings.CutPrefix(filepath.ToSlash(target), "..data/"); ok {
				return readRegular(filepath.Join(dataDir, filepath.FromSlash(rest)))
			}
		}
	}
	fi, err := fs.Stat(fsys, p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil
	}
	return fs.ReadFile(fsys, p)
}

func readRegular(name string) ([]byte, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil
	}
	return os.ReadFile(name)
}

// Revision is the first 16 hex digits of a SHA-256 over the sorted names and
// contents of files.
func Revision(files []File) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		binary.BigEndian.PutUint64(n[:], uint64(len(f.Rel)))
		h.Write(n[:])
		h.Write([]byte(f.Rel))
		binary.BigEndian.PutUint64(n[:], uint64(len(f.Src)))
		h.Write(n[:])
		h.Write(f.Src)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
