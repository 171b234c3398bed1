package irvm

import (
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
)

// The planner gives every rule's function the same frame: a body that
// starts by resetting the rule's value and ends by assigning it, then two
// blocks, "IsDefinedStmt x; AssignVarOnceStmt x -> ret" and
// "ReturnLocalStmt ret". A decision calls about ten of them, so those four
// statements are a quarter of what it runs. New compiles such a function
// without them: the reset is dropped (a new frame's locals are undefined),
// and callFunc runs the two last blocks as Go code (epilogue), with the same
// semantics, conflict included.

// ruleEpilogue recognises the two last blocks of a rule's function; x is
// the local they return.
func ruleEpilogue(f *ir.Func) (x ir.Local, assign *ir.AssignVarOnceStmt, ok bool) {
	if len(f.Blocks) != 3 || len(f.Blocks[1].Stmts) != 2 || len(f.Blocks[2].Stmts) != 1 {
		return 0, nil, false
	}
	isDef, ok1 := f.Blocks[1].Stmts[0].(*ir.IsDefinedStmt)
	as, ok2 := f.Blocks[1].Stmts[1].(*ir.AssignVarOnceStmt)
	ret, ok3 := f.Blocks[2].Stmts[0].(*ir.ReturnLocalStmt)
	if !ok1 || !ok2 || !ok3 {
		return 0, nil, false
	}
	src, ok := localOf(as.Source)
	if !ok || src != isDef.Source || as.Target != f.Return || ret.Source != f.Return {
		return 0, nil, false
	}
	return src, as, true
}

// withoutEntryReset is blocks with a ResetLocalStmt that starts the first
// one left out, when its local is not a parameter: in a new frame it is
// undefined already (vmState.push).
func withoutEntryReset(f *ir.Func, blocks []*ir.Block) []*ir.Block {
	if len(blocks) == 0 || len(blocks[0].Stmts) == 0 {
		return blocks
	}
	r, ok := blocks[0].Stmts[0].(*ir.ResetLocalStmt)
	if !ok || slices.Contains(f.Params, r.Target) {
		return blocks
	}
	out := slices.Clone(blocks)
	out[0] = &ir.Block{Stmts: blocks[0].Stmts[1:]}
	return out
}

// epilogue is "IsDefinedStmt x; AssignVarOnceStmt x -> ret", then
// "ReturnLocalStmt ret" (see ruleEpilogue) in the frame fr of function fi.
func (st *vmState) epilogue(fi int32, fr []*ast.Term) (*ast.Term, error) {
	fn := &st.funcs[fi]
	if v := fr[fn.defined]; v != nil {
		if cur := fr[fn.ret]; cur != nil && !st.equal(cur, v) {
			return nil, conflictError(st.finfo[fi].epilogueLoc, st.finfo[fi].conflict)
		}
		fr[fn.ret] = v
	}
	return fr[fn.ret], nil
}
