package irvm

import (
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
)

// The statements of vmCompiler.stmt that take more than a line.

// unary is a statement of one operand a and a target local.
func (c *vmCompiler) unary(op vmOp, a ir.Operand, target uint16) (vmStmt, error) {
	oa, err := c.operand(a)
	return vmStmt{op: op, a: oa, target: target}, err
}

// binary is a statement of two operands a, b and a target local.
func (c *vmCompiler) binary(op vmOp, a, b ir.Operand, target ir.Local) (vmStmt, error) {
	s, err := c.compare(op, a, b)
	s.target = c.local(target)
	return s, err
}

// compare is a statement of two operands (EqualStmt, NotEqualStmt).
func (c *vmCompiler) compare(op vmOp, a, b ir.Operand) (vmStmt, error) {
	oa, err := c.operand(a)
	if err != nil {
		return vmStmt{}, err
	}
	ob, err := c.operand(b)
	return vmStmt{op: op, a: oa, b: ob}, err
}

// constStmt sets target to the constant t.
func (c *vmCompiler) constStmt(target ir.Local, t *ast.Term) vmStmt {
	return vmStmt{op: opConst, target: c.local(target), a: c.constant(t)}
}

// callStmt is CallStmt: a planned function or a built-in.
func (c *vmCompiler) callStmt(st *ir.CallStmt) (vmStmt, error) {
	if len(st.Args) > maxArgs {
		return vmStmt{}, fmt.Errorf("%w: call of %s with %d arguments", ErrUnsupported, st.Func, len(st.Args))
	}
	s := vmStmt{target: c.local(st.Result), b: vmOperand(c.location(st.Location)),
		a: vmOperand(len(c.code.args)), n: uint8(len(st.Args))}
	for _, a := range st.Args {
		o, err := c.operand(a)
		if err != nil {
			return s, err
		}
		c.code.args = append(c.code.args, o)
	}
	if fi, ok := c.funcs[st.Func]; ok {
		s.op, s.ref = opCall, fi
		if fn := &c.code.funcs[fi]; len(st.Args) != int(fn.nparams) {
			return s, fmt.Errorf("call of %s with %d arguments, want %d", st.Func, len(st.Args), fn.nparams)
		}
		return s, nil
	}
	if bi, ok := c.builtins[st.Func]; ok {
		s.op, s.ref = opBuiltin, bi
		return s, nil
	}
	return s, fmt.Errorf("%w: call of %s", ErrUnsupported, st.Func)
}

// scanStmt is ScanStmt.
func (c *vmCompiler) scanStmt(st *ir.ScanStmt) (vmStmt, error) {
	s := vmStmt{op: opScan, a: vmOperand(c.local(st.Source)), target: c.local(st.Key), b: vmOperand(c.local(st.Value))}
	b, err := c.blocks(st.Block)
	s.ref = b
	return s, err
}

// withStmt is WithStmt of a whole document (`with input as x`, and the
// planner's restoring of it around the rest of the body); a with of a part
// of a document (a path: `with input.a.b as x`, `with data.x as y`) is not
// supported.
func (c *vmCompiler) withStmt(st *ir.WithStmt) (vmStmt, error) {
	if len(st.Path) > 0 {
		return vmStmt{}, fmt.Errorf("%w: with of a path (%d keys)", ErrUnsupported, len(st.Path))
	}
	v, err := c.operand(st.Value)
	if err != nil {
		return vmStmt{}, err
	}
	s := vmStmt{op: opWith, target: c.local(st.Local), a: v}
	s.ref, err = c.blocks(st.Block)
	return s, err
}

// numberRef is MakeNumberRefStmt: a number literal from the string table.
func (c *vmCompiler) numberRef(st *ir.MakeNumberRefStmt) (vmStmt, error) {
	if st.Index < 0 || st.Index >= len(c.strings) {
		return vmStmt{}, fmt.Errorf("number string index %d out of range", st.Index)
	}
	n := ast.Number(c.pol.Static.Strings[st.Index].Value)
	if _, ok := n.Int(); !ok {
		if _, ok := n.Float64(); !ok {
			return vmStmt{}, fmt.Errorf("%w: number %q", ErrUnsupported, n)
		}
	}
	return c.constStmt(st.Target, ast.NewTerm(n)), nil
}

// localOf is the local an operand reads, if it reads one.
func localOf(o ir.Operand) (ir.Local, bool) {
	switch v := o.Value.(type) {
	case ir.Local:
		return v, true
	case *ir.Local:
		return *v, true
	}
	return 0, false
}

// dataLocals finds the locals of a function (or plan) that hold the data
// document or a document the planner looked up in it by a chain of
// DotStmts (data.a.b[k]): lookups into those are lookups in the data
// document (opDotData). A copy into another variable (AssignVarStmt) is
// not: topdown treats it as an ordinary value.
func dataLocals(bs []*ir.Block) map[ir.Local]bool {
	d := map[ir.Local]bool{ir.Data: true}
	eachStmt(bs, func(s ir.Stmt) {
		if st, ok := s.(*ir.DotStmt); ok {
			if l, ok := localOf(st.Source); ok && d[l] {
				d[st.Target] = true
			}
		}
	})
	return d
}

// eachStmt calls fn for each statement of bs, in order, a statement before
// those of the blocks nested in it.
func eachStmt(bs []*ir.Block, fn func(ir.Stmt)) {
	for _, b := range bs {
		for _, s := range b.Stmts {
			fn(s)
			switch st := s.(type) {
			case *ir.BlockStmt:
				eachStmt(st.Blocks, fn)
			case *ir.ScanStmt:
				eachStmt([]*ir.Block{st.Block}, fn)
			case *ir.NotStmt:
				eachStmt([]*ir.Block{st.Block}, fn)
			case *ir.WithStmt:
				eachStmt([]*ir.Block{st.Block}, fn)
			}
		}
	}
}

// conflictMessage is topdown's message for two values of the rule or
// function f computes: "rule data.a.b produced conflicting values", or
// "function data.a.f produced conflicting values for the same inputs" for a
// function (which takes more than input and data).
func conflictMessage(f *ir.Func) string {
	path := f.Path
	if len(path) > 0 && strings.HasPrefix(path[0], "g") { // the planner's group prefix (g0)
		path = path[1:]
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, p := range path {
		ref = append(ref, ast.StringTerm(p))
	}
	if len(f.Params) > 2 {
		return "function " + ref.String() + " produced conflicting values for the same inputs"
	}
	return "rule " + ref.String() + " produced conflicting values"
}
