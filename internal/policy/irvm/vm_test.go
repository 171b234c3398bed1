package irvm

import (
	"context"
	"errors"
	"testing"
	"time"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/types"
)

// The seams of the package: a plan of an entry point (Plan), the caller's
// natives and Lazy values, the direct call, internal errors, the deadline.

const seamModule = `package t

import rego.v1

default decision := {"allow": false}

decision := {"allow": true, "who": u.name} if {
	input.kind == "doc"
	u := test.user(input.subject)
	u.active
}

decision := {"allow": false, "whole": input} if input.kind == "whole"

spin if {
	some i in numbers.range(1, 5000)
	i < 0
}
`

var userDecl = &ast.Builtin{
	Name: "test.user",
	Decl: types.NewFunction(types.Args(types.S), types.A),
}

// countingLazy is an object the interpreter reads without building it; it
// counts how often it was built.
type countingLazy struct {
	obj   ast.Object
	built *int
}

func (l countingLazy) Lookup(key *ast.Term) *ast.Term { return l.obj.Get(key) }
func (l countingLazy) Materialize() *ast.Term {
	*l.built++
	return ast.NewTerm(l.obj)
}
func (l countingLazy) Compare(o ast.Value) int              { return l.obj.Compare(o) }
func (l countingLazy) Find(path ast.Ref) (ast.Value, error) { return l.obj.Find(path) }
func (l countingLazy) Hash() int                            { return l.obj.Hash() }
func (l countingLazy) IsGround() bool                       { return true }
func (l countingLazy) String() string                       { return l.obj.String() }
func (l countingLazy) StringLength() int                    { return l.obj.StringLength() }

func seamProgram(tb testing.TB, entry string, natives map[string]Native) *Program {
	tb.Helper()
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, userDecl)
	m, err := ast.ParseModuleWithOpts("t.rego", seamModule, ast.ParserOptions{RegoVersion: ast.RegoV1, Capabilities: caps})
	if err != nil {
		tb.Fatal(err)
	}
	pol, err := Plan(context.Background(), []bundle.ModuleFile{{URL: "t.rego", Path: "t.rego", Raw: []byte(seamModule), Parsed: m}},
		entry, []*ast.Builtin{userDecl})
	if err != nil {
		tb.Fatal(err)
	}
	prog, err := New(pol, Config{Entrypoint: entry, Natives: natives})
	if err != nil {
		tb.Fatal(err)
	}
	return prog
}

func TestSeams(t *testing.T) {
	var envSeen any
	natives := map[string]Native{userDecl.Name: func(c *Call, a []*ast.Term) (*ast.Term, error) {
		envSeen = c.Env
		switch a[0].Value.Compare(ast.String("boom")) {
		case 0:
			return nil, errors.New("no such store")
		}
		return ast.NewTerm(ast.NewObject(ast.Item(ast.StringTerm("name"), a[0]), ast.Item(ast.StringTerm("active"), ast.BooleanTerm(true)))), nil
	}}
	prog := seamProgram(t, "t/decision", natives)
	if !prog.DirectCall() {
		t.Fatal("the plan of one rule is not a direct call")
	}
	viaPlan := &Program{vmCode: prog.vmCode, plan: prog.plan, nlocals: prog.nlocals, nmemo: prog.nmemo, data: prog.data}
	for _, tc := range []struct {
		name    string
		input   string
		want    string
		built   int // times the input was materialized
		wantErr string
	}{
		{name: "lookups only", input: `{"kind": "doc", "subject": "ann"}`, want: `{"allow": true, "who": "ann"}`},
		{name: "default", input: `{"kind": "other"}`, want: `{"allow": false}`},
		{name: "whole input", input: `{"kind": "whole"}`, want: `{"allow": false, "whole": {"kind": "whole"}}`, built: 1},
		{name: "native error", input: `{"kind": "doc", "subject": "boom"}`, wantErr: "test.user: no such store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range []*Program{prog, viaPlan} {
				built := 0
				in := ast.NewTerm(countingLazy{obj: ast.MustParseTerm(tc.input).Value.(ast.Object), built: &built})
				env := &struct{}{}
				got, err := p.Eval(context.Background(), EvalOpts{Input: in, Env: env})
				if tc.wantErr != "" {
					var te *topdown.Error
					if !errors.As(err, &te) || te.Code != topdown.BuiltinErr || te.Message != tc.wantErr {
						t.Fatalf("direct %v: got %v, %v; want the built-in error %q", p.DirectCall(), got, err, tc.wantErr)
					}
					continue
				}
				if err != nil || got.Compare(ast.MustParseTerm(tc.want).Value) != 0 {
					t.Fatalf("direct %v: got %v, %v; want %s", p.DirectCall(), got, err, tc.want)
				}
				if built != tc.built {
					t.Fatalf("direct %v: input built %d times, want %d", p.DirectCall(), built, tc.built)
				}
				if envSeen != nil && envSeen != any(env) {
					t.Fatalf("the native saw env %v", envSeen)
				}
			}
		})
	}
}

func TestInternalErrors(t *testing.T) {
	// a return out of the plan itself cannot come from the planner
	bad, err := New(&ir.Policy{Static: &ir.Static{}, Plans: &ir.Plans{Plans: []*ir.Plan{{Name: "p",
		Blocks: []*ir.Block{{Stmts: []ir.Stmt{&ir.ReturnLocalStmt{Source: ir.Input}}}}}}}}, Config{Entrypoint: "p"})
	if err != nil {
		t.Fatal(err)
	}
	var ie *InternalError
	if _, err := bad.Eval(context.Background(), EvalOpts{}); !errors.As(err, &ie) {
		t.Fatalf("illegal control flow: %v", err)
	}
	// a panic (here of a native) is an internal error, never an answer
	prog := seamProgram(t, "t/decision", map[string]Native{userDecl.Name: func(*Call, []*ast.Term) (*ast.Term, error) { panic("x") }})
	if v, err := prog.Eval(context.Background(), EvalOpts{Input: ast.MustParseTerm(`{"kind": "doc", "subject": "a"}`)}); !errors.As(err, &ie) || v != nil {
		t.Fatalf("panic: %v, %v", v, err)
	}
	// a plan using `with` is refused
	if _, err := New(&ir.Policy{Static: &ir.Static{}, Plans: &ir.Plans{Plans: []*ir.Plan{{Name: "p",
		Blocks: []*ir.Block{{Stmts: []ir.Stmt{&ir.WithStmt{Local: ir.Input, Block: &ir.Block{}}}}}}}}}, Config{Entrypoint: "p"}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("WithStmt: %v", err)
	}
	// a local past what a statement holds is refused, not truncated
	if _, err := New(&ir.Policy{Static: &ir.Static{}, Plans: &ir.Plans{Plans: []*ir.Plan{{Name: "p",
		Blocks: []*ir.Block{{Stmts: []ir.Stmt{&ir.ResetLocalStmt{Target: maxLocals + 1}}}}}}}}, Config{Entrypoint: "p"}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("local %d: %v", maxLocals+1, err)
	}
}

// TestWideStatements runs statements whose counts do not fit the small
// fields of a vmStmt: a BlockStmt of 300 blocks and a break out of 300
// nested ones.
func TestWideStatements(t *testing.T) {
	var blocks []*ir.Block
	for range 300 {
		blocks = append(blocks, &ir.Block{})
	}
	// the 300th block breaks out of the BlockStmt and the plan's block:
	// nothing after it runs
	inner := &ir.Block{Stmts: []ir.Stmt{&ir.BreakStmt{Index: 1}}}
	blocks = append(blocks, inner)
	res := ir.Local(2)
	mk := []ir.Stmt{&ir.MakeObjectStmt{Target: res}, &ir.ResultSetAddStmt{Value: res}}
	// 300 nested blocks; the innermost leaves them all, so that the
	// result added after them is not
	deep := &ir.Block{Stmts: []ir.Stmt{&ir.BreakStmt{Index: 299}}}
	for range 299 {
		deep = &ir.Block{Stmts: []ir.Stmt{&ir.BlockStmt{Blocks: []*ir.Block{deep}}}}
	}
	deep.Stmts = append(deep.Stmts, mk...)
	for _, tc := range []struct {
		name    string
		block   *ir.Block
		results int
	}{
		{"300 blocks", &ir.Block{Stmts: append([]ir.Stmt{&ir.BlockStmt{Blocks: blocks}}, mk...)}, 0},
		{"break 300", deep, 0},
		{"ran", &ir.Block{Stmts: mk}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prog, err := New(&ir.Policy{Static: &ir.Static{}, Plans: &ir.Plans{Plans: []*ir.Plan{{Name: "p",
				Blocks: []*ir.Block{tc.block}}}}}, Config{Entrypoint: "p"})
			if err != nil {
				t.Fatal(err)
			}
			rs, err := prog.EvalQuery(context.Background(), EvalOpts{})
			if err != nil || len(rs) != tc.results {
				t.Fatalf("%d results, %v; want %d", len(rs), err, tc.results)
			}
		})
	}
}

func TestDeadlineAndCancel(t *testing.T) {
	prog := seamProgram(t, "t/spin", nil)
	if _, err := prog.Eval(context.Background(), EvalOpts{Deadline: time.Now().Add(-time.Second)}); !errors.Is(err, ErrDeadline) {
		t.Fatalf("past deadline: %v", err)
	}
	// a timeout: the clock starts after clockStart steps, the spin's 5,000
	// iterations run past it
	if _, err := prog.Eval(context.Background(), EvalOpts{Timeout: time.Nanosecond}); !errors.Is(err, ErrDeadline) {
		t.Fatalf("past timeout: %v", err)
	}
	if _, err := prog.Eval(context.Background(), EvalOpts{Timeout: time.Hour}); err != nil {
		t.Fatalf("within its timeout: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := prog.Eval(ctx, EvalOpts{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	if v, err := prog.Eval(context.Background(), EvalOpts{}); err != nil || v != nil {
		t.Fatalf("spin: %v, %v; want undefined", v, err)
	}
}

// TestStmtSize keeps a statement at 16 bytes, four to a cache line: a cold
// decision's cost follows the bytes of the statements it runs
// (BENCHMARKS.md, "CPU per decision", session 5).
func TestStmtSize(t *testing.T) {
	if n := unsafe.Sizeof(vmStmt{}); n > 16 {
		t.Fatalf("vmStmt is %d bytes, want at most 16", n)
	}
}

// TestFuncSize keeps what a call reads of a function at 24 bytes (see
// vmFunc).
func TestFuncSize(t *testing.T) {
	if n := unsafe.Sizeof(vmFunc{}); n > 24 {
		t.Fatalf("vmFunc is %d bytes, want at most 24", n)
	}
}
