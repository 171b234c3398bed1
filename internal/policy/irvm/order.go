package irvm

import "slices"

// The statements in the order an evaluation meets them. The compiler
// appends a block's statements after those of the blocks nested in it, and
// the functions in the planner's order, so a decision's path jumps back and
// forth through the array (the rule it calls sits before the block calling
// it, a NotStmt's block before the NotStmt). With its caches cold, each
// statement a decision runs is a load from memory (BENCHMARKS.md, "Session
// 7: fused statements"); order lays them out again depth first from the
// entry point: a block, then the blocks nested in its statements and the
// functions it calls first, in the order of its statements. Statements no
// block holds any more (the blocks fuse.go folded into their statement) are
// dropped. The program runs exactly as before: only the ranges of the blocks
// change.
func (code *vmCode) order(plan []vmBlock, direct int32) {
	old, oldBlocks := code.code, slices.Clone(code.blocks)
	out := make([]vmStmt, 0, len(old))
	clear(code.blocks) // a block no statement refers to is empty
	placed := make([]bool, len(code.funcs))
	var block func(b *vmBlock, from vmBlock)
	var fn func(fi int32)
	block = func(b *vmBlock, from vmBlock) {
		stmts := old[from.start:from.end]
		*b = vmBlock{start: int32(len(out)), end: int32(len(out) + len(stmts))}
		out = append(out, stmts...)
		for i := range stmts {
			s := &stmts[i]
			switch s.op {
			case opBlock, opElseChain:
				for k := s.ref; k < s.ref+int32(s.b); k++ {
					block(&code.blocks[k], oldBlocks[k])
				}
			case opNot, opScan, opWith:
				block(&code.blocks[s.ref], oldBlocks[s.ref])
			case opCall, opCallNF, opCallCopy, opNotCallNF:
				fn(s.ref)
			}
		}
	}
	fn = func(fi int32) {
		if placed[fi] {
			return
		}
		placed[fi] = true
		f := &code.funcs[fi]
		for k := f.blocks; k < f.blocks+int32(f.nblocks); k++ {
			block(&code.fblocks[k], code.fblocks[k])
		}
	}
	if direct >= 0 {
		fn(direct)
	}
	for i := range plan {
		block(&plan[i], plan[i])
	}
	for fi := range code.funcs { // functions the entry point does not call
		fn(int32(fi))
	}
	code.code = out
}
