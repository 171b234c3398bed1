package replication

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/index"
)

// wordDirs are the packages that write or read the replication log (from the
// module's root): they take the domain's words from internal/index (keys.go)
// and the ops from this package (event.go), never spell them. Left out:
// internal/refmodel (written independently on purpose), the fake HighLevel
// (hlfake, which speaks HighLevel's words) and the tests (which may spell the
// wire format).
var wordDirs = []string{
	"internal/replication",
	"internal/natspub",
	"internal/natssource",
	"internal/connect/sink",
	"internal/connect/postgres",
	"internal/connect/highlevel",
	"internal/dataset",
	"tools/crmauthz-bench",
}

// literalWords finds the string literals of the Go files (tests left out) of
// dir that spell one of words, and the literal role "user" compared with or
// given as a role; the op names' own declarations (Op* constants of
// event.go) are not counted. It returns "file:line: word" for each.
func literalWords(tb testing.TB, dir string, words map[string]bool) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no Go files in %s (%v)", dir, err)
	}
	var found []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			tb.Fatal(err)
		}
		report := func(lit *ast.BasicLit) {
			v, _ := strconv.Unquote(lit.Value)
			found = append(found, fset.Position(lit.Pos()).String()+": "+strconv.Quote(v))
		}
		isWord := func(e ast.Expr) *ast.BasicLit {
			lit, ok := e.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return nil
			}
			if v, err := strconv.Unquote(lit.Value); err == nil && words[v] {
				return lit
			}
			return nil
		}
		isRoleUser := func(e ast.Expr) *ast.BasicLit {
			if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if v, _ := strconv.Unquote(lit.Value); v == index.RoleUser {
					return lit
				}
			}
			return nil
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ImportSpec, *ast.Field: // import paths, struct tags
				return false
			case *ast.GenDecl:
				if n.Tok == token.CONST && filepath.Base(file) == "event.go" && filepath.Base(dir) == "replication" {
					return false // the ops' one declaration
				}
			case *ast.BasicLit:
				if isWord(n) != nil {
					report(n)
				}
			case *ast.BinaryExpr:
				if n.Op == token.EQL || n.Op == token.NEQ {
					for _, pair := range [][2]ast.Expr{{n.X, n.Y}, {n.Y, n.X}} {
						if lit := isRoleUser(pair[0]); lit != nil && mentionsRole(pair[1]) {
							report(lit)
						}
					}
				}
			case *ast.KeyValueExpr:
				if lit := isRoleUser(n.Value); lit != nil && mentionsRole(n.Key) {
					report(lit)
				}
			}
			return true
		})
	}
	return found
}

// mentionsRole tells whether e names a role (an identifier or field called
// role or Role).
func mentionsRole(e ast.Expr) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && strings.EqualFold(id.Name, "role") {
			found = true
		}
		return !found
	})
	return found
}

// TestDomainWordsDeclaredOnce: the record types, roles and actions are
// index's constants (internal/index/keys.go) and the op names this package's
// (event.go) in every package of wordDirs; a literal spelling one of them
// could drift from the declaration unnoticed (docs/design.md, "Configuration
// and defaults").
func TestDomainWordsDeclaredOnce(t *testing.T) {
	words := map[string]bool{index.TypeContact: true, index.TypeOpportunity: true, index.RoleAdmin: true}
	for _, a := range index.Actions() {
		// "delete" is also a plain word (the HighLevel connector's work items
		// are "refresh" or "delete").
		if a != index.ActionDelete {
			words[a] = true
		}
	}
	for _, op := range Ops {
		words[op] = true
	}
	root := filepath.Join("..", "..")
	for _, dir := range wordDirs {
		t.Run(dir, func(t *testing.T) {
			path := filepath.Join(root, filepath.FromSlash(dir))
			if _, err := os.Stat(path); err != nil {
				t.Fatal(err)
			}
			for _, f := range literalWords(t, path, words) {
				t.Errorf("%s: spell it with internal/index's or internal/replication's constant", f)
			}
		})
	}
	t.Run("the scanner finds them", func(t *testing.T) {
		dir := t.TempDir()
		src := `package p
const Op = "user.upsert"
var types = map[string]bool{"contact": true}
func admin(role string) bool { return role == "admin" || "user" == role }
type u struct{ Role string ` + "`json:\"contact\"`" + ` }
var x = u{Role: "user"}
var kind = "user"
`
		if err := os.WriteFile(filepath.Join(dir, "p.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range literalWords(t, dir, words) {
			got = append(got, f[strings.LastIndex(f, ": ")+2:])
		}
		want := []string{`"user.upsert"`, `"contact"`, `"admin"`, `"user"`, `"user"`}
		if !slices.Equal(got, want) {
			t.Errorf("found %v, want %v (the tag and the kind \"user\" not counted)", got, want)
		}
	})
}
