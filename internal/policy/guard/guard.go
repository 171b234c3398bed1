// Package guard bounds the built-ins of OPA that can build a huge value from
// small operands (numbers.range, numbers.range_step, net.cidr_expand): OPA
// builds the whole array at once, without looking at the clock, so a call
// over MaxRangeElements is refused with ErrBuiltinLimit before it allocates
// (docs/policies.md "What is bounded"). OPA's built-ins cannot be replaced
// (topdown looks its own up first), so Module renames their calls in every
// parsed module to crmauthz.* built-ins, which internal/policy registers
// with topdown (RegoFuncs, TesterBuiltins), the interpreter (Funcs) and the
// compiler (Decls).
package guard

import (
	"errors"
	"fmt"
	"math/big"
	"net"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// MaxRangeElements is the most elements numbers.range, numbers.range_step
// and net.cidr_expand may produce in one call: count(numbers.range(1,
// 1000000000)) would allocate gigabytes before any deadline could stop it.
// A call over the limit is an evaluation error (a deny).
const MaxRangeElements = 100_000

// ErrBuiltinLimit is the error of a built-in call refused because its
// result would be too large (see MaxRangeElements): the request is denied.
var ErrBuiltinLimit = errors.New("built-in call refused: its result would be too large")

// guarded is a built-in of OPA that can build a huge value from small
// operands, and the check run before it: calls of orig are renamed (Module)
// to name, a built-in that runs check, then OPA's implementation.
type guarded struct {
	orig  *ast.Builtin
	name  string
	check func(name string, args []*ast.Term) error
}

// all is every guarded built-in.
func all() []guarded {
	return []guarded{
		{ast.NumbersRange, "crmauthz.numbers_range", checkRange},
		{ast.NumbersRangeStep, "crmauthz.numbers_range_step", checkRange},
		{ast.NetCIDRExpand, "crmauthz.net_cidr_expand", checkCIDRExpand},
	}
}

// Module renames the calls of the guarded built-ins in m.
func Module(m *ast.Module) error {
	gs := all()
	_, err := ast.TransformRefs(m, func(r ast.Ref) (ast.Value, error) {
		for _, g := range gs {
			if r.Equal(g.orig.Ref()) {
				return ast.MustParseRef(g.name), nil
			}
		}
		return r, nil
	})
	return err
}

// checkRange refuses a numbers.range(x, y) or numbers.range_step(x, y, step)
// call that would yield more than MaxRangeElements numbers. Operands the
// built-in itself refuses (not integers, a step <= 0) pass: its own error
// is the better one.
func checkRange(name string, args []*ast.Term) error {
	if len(args) < 2 {
		return nil
	}
	x, err := builtins.BigIntOperand(args[0].Value, 1)
	if err != nil {
		return nil
	}
	y, err := builtins.BigIntOperand(args[1].Value, 2)
	if err != nil {
		return nil
	}
	step := big.NewInt(1)
	if len(args) > 2 {
		if step, err = builtins.BigIntOperand(args[2].Value, 3); err != nil || step.Sign() <= 0 {
			return nil
		}
	}
	n := new(big.Int).Sub(y, x)
	n.Abs(n).Quo(n, step).Add(n, big.NewInt(1))
	if n.Cmp(big.NewInt(MaxRangeElements)) > 0 {
		return fmt.Errorf("%w: %s would yield %s numbers, at most %d", ErrBuiltinLimit, name, n, MaxRangeElements)
	}
	return nil
}

// checkCIDRExpand refuses net.cidr_expand of a network with more than
// MaxRangeElements addresses.
func checkCIDRExpand(name string, args []*ast.Term) error {
	if len(args) < 1 {
		return nil
	}
	s, ok := args[0].Value.(ast.String)
	if !ok {
		return nil
	}
	_, ipNet, err := net.ParseCIDR(string(s))
	if err != nil {
		return nil
	}
	ones, bits := ipNet.Mask.Size()
	if host := bits - ones; host >= 63 || int64(1)<<host > MaxRangeElements {
		return fmt.Errorf("%w: %s of %s would yield 2^%d addresses, at most %d", ErrBuiltinLimit, name, s, host, MaxRangeElements)
	}
	return nil
}

// impl is g's implementation: g.check, then OPA's.
func (g *guarded) impl() topdown.BuiltinFunc {
	orig := topdown.GetBuiltin(g.orig.Name)
	arity := len(g.orig.Decl.FuncArgs().Args)
	return func(bctx topdown.BuiltinContext, args []*ast.Term, iter func(*ast.Term) error) error {
		args = args[:min(arity, len(args))] // topdown passes the output variable after the operands
		if err := g.check(g.orig.Name, args); err != nil {
			return err
		}
		return orig(bctx, args, iter)
	}
}

func (g *guarded) decl() *ast.Builtin {
	return &ast.Builtin{Name: g.name, Description: g.orig.Description + " (bounded by crmauthz)", Decl: g.orig.Decl}
}

// Decls declares the guarded built-ins, for compilers and capabilities.
func Decls() []*ast.Builtin {
	gs := all()
	decls := make([]*ast.Builtin, len(gs))
	for i := range gs {
		decls[i] = gs[i].decl()
	}
	return decls
}

// Funcs are the guarded built-ins' implementations by name, for an
// evaluator other than topdown (internal/policy/irvm).
func Funcs() map[string]topdown.BuiltinFunc {
	gs := all()
	fns := make(map[string]topdown.BuiltinFunc, len(gs))
	for i := range gs {
		fns[gs[i].name] = gs[i].impl()
	}
	return fns
}

// regoFunc is the rego option that registers g for topdown.
func (g *guarded) regoFunc() func(*rego.Rego) {
	fn := g.impl()
	return rego.FunctionDyn(&rego.Function{Name: g.name, Decl: g.orig.Decl, Description: g.orig.Description},
		func(bctx topdown.BuiltinContext, args []*ast.Term) (*ast.Term, error) {
			var out *ast.Term
			err := fn(bctx, args, func(t *ast.Term) error { out = t; return nil })
			return out, err
		})
}

// RegoFuncs registers every guarded built-in for topdown.
func RegoFuncs() []func(*rego.Rego) {
	gs := all()
	opts := make([]func(*rego.Rego), len(gs))
	for i := range gs {
		opts[i] = gs[i].regoFunc()
	}
	return opts
}

// TesterBuiltins registers every guarded built-in for v1/tester runners.
func TesterBuiltins() []*tester.Builtin {
	gs := all()
	out := make([]*tester.Builtin, len(gs))
	for i := range gs {
		out[i] = &tester.Builtin{Decl: gs[i].decl(), Func: gs[i].regoFunc()}
	}
	return out
}
