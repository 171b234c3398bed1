package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// constValues returns the string constants of file whose names start with prefix.
func constValues(tb testing.TB, file, prefix string) map[string]string {
	tb.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, sp := range gd.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !strings.HasPrefix(n.Name, prefix) || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					out[n.Name] = v
				}
			}
		}
	}
	return out
}

// TestErrorCodesAreDocumented: the one block of error codes (errcode/errcode.go) and the README's table
// of errors name the same codes, so neither gains one the other lacks.
func TestErrorCodesAreDocumented(t *testing.T) {
	codes := constValues(t, "errcode/errcode.go", "")
	if len(codes) < 25 {
		t.Fatalf("found %d error codes in errcode.go: %v", len(codes), codes)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### Errors")
	if !ok {
		t.Fatal("README.md has no Errors section")
	}
	section, _, _ = strings.Cut(section, "\n#")
	documented := map[string]bool{}
	row := regexp.MustCompile(`(?m)^\| [0-9]{3} \| ([^|]*)\|`)
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		for _, c := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(m[1], -1) {
			documented[c[1]] = true
		}
	}
	known := map[string]bool{}
	for name, c := range codes {
		known[c] = true
		if !documented[c] {
			t.Errorf("%s = %q is not in the README's table of errors", name, c)
		}
	}
	for _, c := range constValues(t, "gateway/gateway.go", "reason") {
		known[c] = true
	}
	for c := range documented {
		if !known[c] {
			t.Errorf("the README's table of errors names %q, which is neither a code of errcode.go nor a gateway reason", c)
		}
	}
}
