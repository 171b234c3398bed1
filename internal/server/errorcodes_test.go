package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
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
	documented := map[string]bool{}
	for row := range readmeErrorRows(t) {
		_, c, _ := strings.Cut(row, " ")
		documented[c] = true
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

// statusNumbers are the net/http status constants the server's errors use; a new one is added
// here (the test says which).
var statusNumbers = map[string]string{
	"StatusBadRequest": "400", "StatusUnauthorized": "401", "StatusForbidden": "403",
	"StatusNotFound": "404", "StatusMethodNotAllowed": "405", "StatusNotAcceptable": "406",
	"StatusRequestTimeout": "408", "StatusConflict": "409", "StatusRequestEntityTooLarge": "413",
	"StatusUnprocessableEntity": "422", "StatusInternalServerError": "500",
	"StatusNotImplemented": "501", "StatusServiceUnavailable": "503", "StatusInsufficientStorage": "507",
}

// readmeErrorRows returns the README's table of errors as "status code" pairs.
func readmeErrorRows(tb testing.TB) map[string]bool {
	tb.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		tb.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### Errors")
	if !ok {
		tb.Fatal("README.md has no Errors section")
	}
	section, _, _ = strings.Cut(section, "\n#")
	rows := map[string]bool{}
	row := regexp.MustCompile(`(?m)^\| ([0-9]{3}) \| ([^|]*)\|`)
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		for _, c := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(m[2], -1) {
			rows[m[1]+" "+c[1]] = true
		}
	}
	return rows
}

// TestErrorStatusesAreDocumented: every error the server raises itself
// (newError(http.StatusX, errcode.Y, …) in its own files, the table of
// errors.go included) pairs a status and a code as a row of the README's
// table of errors does, so a client reading that table is never surprised by
// a code under another status.
func TestErrorStatusesAreDocumented(t *testing.T) {
	codes := constValues(t, "errcode/errcode.go", "")
	rows := readmeErrorRows(t)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	calls := 0
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if id, ok := call.Fun.(*ast.Ident); !ok || id.Name != "newError" {
				return true
			}
			calls++
			pos := fset.Position(call.Pos())
			status, code := selector(call.Args[0], "http"), selector(call.Args[1], "errcode")
			num, c := statusNumbers[status], codes[code]
			switch {
			case num == "":
				t.Errorf("%s: newError's status %s: not a constant http.Status… of statusNumbers", pos, status)
			case c == "":
				t.Errorf("%s: newError's code %s: not a constant of errcode", pos, code)
			case !rows[num+" "+c]:
				t.Errorf("%s: %s %s is not a row of the README's table of errors", pos, num, c)
			}
			return true
		})
	}
	if calls < 20 {
		t.Fatalf("found %d calls of newError", calls)
	}
}

// selector is the name X of pkg.X, or "" when e is not one.
func selector(e ast.Expr, pkg string) string {
	se, ok := e.(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	if id, ok := se.X.(*ast.Ident); !ok || id.Name != pkg {
		return ""
	}
	return se.Sel.Name
}
