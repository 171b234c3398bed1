package source

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"testing/fstest"
)

// writeFiles writes name -> content under dir, creating directories.
func writeFiles(tb testing.TB, dir string, files map[string]string) {
	tb.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// configMapDir lays out dir as the kubelet does for a ConfigMap volume:
// ..<timestamp>/ with the files, ..data -> ..<timestamp>, and one link per
// file, name -> ..data/name.
func configMapDir(tb testing.TB, dir, ts string, files map[string]string) {
	tb.Helper()
	writeFiles(tb, filepath.Join(dir, ts), files)
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		tb.Fatal(err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			tb.Fatal(err)
		}
	}
}

// configMapUpdate swaps dir's ConfigMap to a new version as the kubelet does:
// write ..<ts>/, link ..data_tmp -> ..<ts>, rename ..data_tmp over ..data,
// remove the old version's directory.
func configMapUpdate(tb testing.TB, dir, oldTS, ts string, files map[string]string) {
	tb.Helper()
	writeFiles(tb, filepath.Join(dir, ts), files)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		tb.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, oldTS)); err != nil {
		tb.Fatal(err)
	}
}

// read reads cfg and returns the files by relative path.
func read(tb testing.TB, cfg Config) map[string]File {
	tb.Helper()
	files, err := Read(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]File{}
	var rels []string
	for _, f := range files {
		rels = append(rels, f.Rel)
		out[f.Rel] = f
	}
	for i := 1; i < len(rels); i++ {
		if rels[i-1] >= rels[i] {
			tb.Errorf("files not sorted: %v", rels)
		}
	}
	return out
}

func names(files map[string]File) map[string]string {
	out := map[string]string{}
	for rel, f := range files {
		out[rel] = string(f.Src)
	}
	return out
}

func TestConfigMapLayout(t *testing.T) {
	dir := t.TempDir()
	v1 := map[string]string{"authz.rego": "package a\n", "authz_test.rego": "package a_test\n", "config.rego": "package c\n"}
	configMapDir(t, dir, "..2026_11_27_01.1", v1)
	// an old timestamped directory being removed, with another file
	writeFiles(t, filepath.Join(dir, "..2026_11_26_23.9"), map[string]string{"authz.rego": "package old\n"})

	got := read(t, Config{Dir: dir})
	if !reflect.DeepEqual(names(got), v1) {
		t.Errorf("read %v, want %v (each file once, through its link)", names(got), v1)
	}
	if f := got["config.rego"]; f.Name != filepath.Join(dir, "config.rego") || f.IsTest() || !got["authz_test.rego"].IsTest() {
		t.Errorf("config.rego = %+v: want the top-level link's name, not a test", f)
	}

	// the kubelet swaps ..data to a new directory
	v2 := map[string]string{"authz.rego": "package a\n", "config.rego": "package c2\n"}
	configMapUpdate(t, dir, "..2026_11_27_01.1", "..2026_11_28_02.2", v2)
	if err := os.Remove(filepath.Join(dir, "authz_test.rego")); err != nil {
		t.Fatal(err)
	}
	if got := names(read(t, Config{Dir: dir})); !reflect.DeepEqual(got, v2) {
		t.Errorf("after the update: read %v, want %v", got, v2)
	}
}

func TestSkipsDotEntries(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"authz.rego": "package a\n", "config.rego": "package c\n",
		".git/x.rego": "not rego", ".#authz.rego": "not rego",
		"sub/extra.rego": "package crmauthz.extra\n\nx := 1\n", "README.md": "# policies",
	})
	if err := os.Symlink("sub", filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(maps.Keys(read(t, Config{Dir: dir})))
	if want := []string{"authz.rego", "config.rego", "sub/extra.rego"}; !reflect.DeepEqual(got, want) {
		t.Errorf("read %v, want %v (no links to directories)", got, want)
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"file.rego": "package a\n"})
	for name, cfg := range map[string]Config{
		"no source":         {},
		"missing directory": {Dir: filepath.Join(dir, "missing")},
		"not a directory":   {Dir: filepath.Join(dir, "file.rego")},
	} {
		t.Run(name, func(t *testing.T) {
			if files, err := Read(cfg); err == nil {
				t.Errorf("Read = %v, nil; want an error", files)
			}
		})
	}
	got := read(t, Config{FS: fstest.MapFS{"p/x.rego": {Data: []byte("package x\n")}, "p/y.txt": {}}})
	if f, ok := got["p/x.rego"]; len(got) != 1 || !ok || f.Name != "p/x.rego" {
		t.Errorf("read from an fs.FS: %+v", got)
	}
}

func TestRevision(t *testing.T) {
	a := []File{{Rel: "a.rego", Src: []byte("x")}, {Rel: "b.rego", Src: []byte("y")}}
	b := []File{{Rel: "a.rego", Src: []byte("xb")}, {Rel: ".rego", Src: []byte("y")}}
	if Revision(a) == Revision(b) {
		t.Error("different sources, same revision")
	}
	if r := Revision(a); len(r) != 16 || r != Revision(a) {
		t.Errorf("revision %q: want 16 stable hex digits", r)
	}
	c := []File{{Rel: "a.rego", Name: "/elsewhere/a.rego", Src: []byte("x")}, {Rel: "b.rego", Src: []byte("y")}}
	if Revision(a) != Revision(c) {
		t.Error("the revision depends on where the files are, not only on their paths and contents")
	}
}
