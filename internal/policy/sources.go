package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// sourceFile is one policy file.
type sourceFile struct {
	rel  string // path relative to the root, with '/' separators
	name string // name used in locations and messages (Dir joined for Config.Dir)
	src  []byte
}

func (f sourceFile) isTest() bool {
	return strings.HasSuffix(f.rel, "_test.rego")
}

// readSources reads every *.rego file of the configured source, sorted by path.
func readSources(cfg Config) ([]sourceFile, error) {
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
func walkSources(fsys fs.FS, dir, dataDir string) ([]sourceFile, error) {
	var files []sourceFile
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
		files = append(files, sourceFile{rel: p, name: name, src: src})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading policies: %w", err)
	}
	slices.SortFunc(files, func(a, b sourceFile) int { return strings.Compare(a.rel, b.rel) })
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

// revisionOf is the first 16 hex digits of a SHA-256 over the sorted names and
// contents of files.
func revisionOf(files []sourceFile) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		binary.BigEndian.PutUint64(n[:], uint64(len(f.rel)))
		h.Write(n[:])
		h.Write([]byte(f.rel))
		binary.BigEndian.PutUint64(n[:], uint64(len(f.src)))
		h.Write(n[:])
		h.Write(f.src)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
