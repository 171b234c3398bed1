package authoring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/policy/source"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"
)

// FormatOptions are the options of Format.
type FormatOptions struct {
	// Write rewrites the files that are not formatted; without it Format
	// only reports them (`crmauthz policy fmt --check`).
	Write bool
}

// Format formats the Rego files at path as `opa fmt` does (OPA's v1/format,
// Rego v1). path is a .rego file or a directory, read like source.Config.Dir (every
// *.rego file below it, tests included; names starting with "." skipped). It
// returns the files whose formatting differs (rewritten in place with
// opts.Write). A file that does not parse is left alone and reported in the
// error, a *policy.CompileError with file:line:col; the other files are still
// formatted.
func Format(path string, opts FormatOptions) (unformatted []string, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var files []source.File
	if fi.IsDir() {
		files, err = source.Read(source.Config{Dir: path})
		if err != nil {
			return nil, err
		}
	} else {
		if !strings.HasSuffix(path, ".rego") {
			return nil, fmt.Errorf("%s: not a .rego file", path)
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		files = []source.File{{Name: path, Src: src}}
	}
	var errs ast.Errors
	for _, f := range files {
		out, err := formatSource(f.Name, f.Src)
		if err != nil {
			var aerrs ast.Errors
			if errors.As(err, &aerrs) {
				errs = append(errs, aerrs...)
				continue
			}
			return unformatted, fmt.Errorf("%s: %w", f.Name, err)
		}
		if bytes.Equal(out, f.Src) {
			continue
		}
		unformatted = append(unformatted, f.Name)
		if opts.Write {
			// WriteFile truncates and keeps the file's mode (and follows a
			// symbolic link to the file it names).
			if err := os.WriteFile(f.Name, out, 0o644); err != nil {
				return unformatted, err
			}
		}
	}
	if len(errs) > 0 {
		return unformatted, &policy.CompileError{Errors: errs}
	}
	return unformatted, nil
}

// formatSource is `opa fmt` of one Rego v1 file.
func formatSource(name string, src []byte) ([]byte, error) {
	return format.SourceWithOpts(name, src, format.Opts{
		RegoVersion:   ast.RegoV1,
		ParserOptions: &ast.ParserOptions{RegoVersion: ast.RegoV1},
	})
}
