package authoring

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"

	"github.com/crmauthz/crmauthz/internal/policy"
)

func TestFormat(t *testing.T) {
	const ugly = "package x\n\nallow  if   {input.a==1\n}\n"
	const pretty = "package x\n\nallow if input.a == 1\n"
	dir := t.TempDir()
	files := defaultPolicyFiles(t, true)
	files["ugly.rego"] = ugly
	files["sub/ugly_test.rego"] = "package x_test\ntest_a  if data.x.allow with input as {\"a\":1}\n"
	files[".hidden/ugly.rego"] = ugly // skipped, like the loader does
	files["notes.md"] = "not rego"
	writeFiles(t, dir, files)
	want := []string{filepath.Join(dir, "sub", "ugly_test.rego"), filepath.Join(dir, "ugly.rego")}

	t.Run("check", func(t *testing.T) {
		got, err := Format(dir, FormatOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Format = %q, want %q", got, want)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "ugly.rego")); string(b) != ugly {
			t.Errorf("check rewrote a file")
		}
	})
	t.Run("write", func(t *testing.T) {
		if err := os.Chmod(filepath.Join(dir, "ugly.rego"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := Format(dir, FormatOptions{Write: true})
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Format = %q, %v; want %q", got, err, want)
		}
		b, err := os.ReadFile(filepath.Join(dir, "ugly.rego"))
		if err != nil || string(b) != pretty {
			t.Errorf("ugly.rego = %q, want %q", b, pretty)
		}
		if fi, _ := os.Stat(filepath.Join(dir, "ugly.rego")); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600 kept", fi.Mode())
		}
		if b, _ := os.ReadFile(filepath.Join(dir, ".hidden", "ugly.rego")); string(b) != ugly {
			t.Errorf("a file under a dot directory was formatted")
		}
		got, err = Format(dir, FormatOptions{})
		if err != nil || len(got) != 0 {
			t.Errorf("after writing: Format = %q, %v; want nothing left", got, err)
		}
	})
	t.Run("one file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "a.rego")
		if err := os.WriteFile(f, []byte(ugly), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := Format(f, FormatOptions{})
		if err != nil || !reflect.DeepEqual(got, []string{f}) {
			t.Errorf("Format = %q, %v", got, err)
		}
	})
	t.Run("parse error", func(t *testing.T) {
		d := t.TempDir()
		writeFiles(t, d, map[string]string{"bad.rego": "package x\n\nallow if {\n", "ugly.rego": ugly})
		got, err := Format(d, FormatOptions{Write: true})
		var ce *policy.CompileError
		if !errors.As(err, &ce) || !regexp.MustCompile(`bad\.rego:\d+:\d+: rego_parse_error`).MatchString(err.Error()) {
			t.Fatalf("error %v, want a *policy.CompileError with bad.rego:line:col", err)
		}
		if !reflect.DeepEqual(got, []string{filepath.Join(d, "ugly.rego")}) {
			t.Errorf("Format = %q: the good file should still be formatted", got)
		}
	})
	t.Run("errors", func(t *testing.T) {
		if _, err := Format(filepath.Join(t.TempDir(), "missing"), FormatOptions{}); err == nil {
			t.Error("missing path: no error")
		}
		f := filepath.Join(t.TempDir(), "a.txt")
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Format(f, FormatOptions{}); err == nil {
			t.Error("not a .rego file: no error")
		}
	})
}
