package irvm

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// Fused statements (superinstructions). The planner spells the commonest
// steps of a rule as two statements: a lookup then a comparison with a
// constant (input.action == "edit"), a call then "the result is not false"
// (every call of a rule used as a condition), a lookup or a call then a
// copy of its result into another local, a constant or a copy then the
// rule's AssignVarOnceStmt. New compiles each such pair into one statement that
// does exactly what the two did, in order — the same locals written, the
// same undefined outcomes, the same errors — with one dispatch and one
// statement read instead of two, and the comparisons with a constant
// decided on the value's concrete type where that gives Go's answer
// without asking the runtime (a type switch on OPA's scalar types; any
// other value goes through vmState.equal as before). See docs/design.md,
// "internal/policy/irvm", and BENCHMARKS.md, "Session 7: fused statements".
//
//	fused          replaces                                   fields
//	opDotEq/Ne     DotStmt src[key] -> t; (Not)EqualStmt t, c  target t, a src, b key, ref c
//	opDotCopy      DotStmt src[key] -> t; AssignVarStmt t -> m target t, a src, b key, ref m
//	opCallNF       CallStmt f -> t; NotEqualStmt t, false      as opCall
//	opCallCopy     CallStmt f -> t; AssignVarStmt t -> m       as opCall, b m
//	opBuiltinNF    CallStmt b -> t; NotEqualStmt t, false      as opBuiltin
//	opNotCallNF    NotStmt { CallStmt f -> t; NotEqualStmt t, false }   as opCall
//	opAssign2      AssignVarStmt a -> t; AssignVarStmt b -> m  target t, a, b, ref m
//	opSetOnce      l := x; AssignVarOnceStmt l -> t            as opAssignVarOnce, a x, n l
//	opElseChain    BlockStmt whose blocks 1..n start with      as opBlock, target l
//	               IsUndefinedStmt l (an else chain: each
//	               block runs while the rule has no value)
//	               the test made before running the block,
//	               left out of it
//
// (c a constant operand; x a constant (AssignIntStmt, MakeNumberStmt, a
// folded collection...) or a local (AssignVarStmt); opSetOnce only for
// l < 256, the size of n.)

// fuse rewrites the compiled statements of one block, pairs into fused
// statements; nested blocks were compiled (and fused) before their
// statement, so a NotStmt whose block is one opCallNF becomes opNotCallNF.
func (c *vmCompiler) fuse(in []vmStmt) []vmStmt {
	out := in[:0]
	for i := 0; i < len(in); i++ {
		s := in[i]
		if s.op == opBlock {
			c.elseChain(&s)
		}
		if s.op == opNot {
			if b := c.code.blocks[s.ref]; b.end-b.start == 1 && c.code.code[b.start].op == opCallNF {
				s = c.code.code[b.start]
				s.op = opNotCallNF
			}
		}
		if i+1 < len(in) {
			f, ok := c.fuseNotFalse(s, in[i+1])
			if !ok {
				f, ok = fusePair(s, in[i+1])
			}
			if ok {
				out = append(out, f)
				i++
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

// elseChain makes the BlockStmt s an opElseChain when its blocks after the
// first start with "IsUndefinedStmt l" (the planner's else: a block runs
// while the rule's local l is undefined): execBlock then tests l before a
// block, which starts after the test, so that a decision answered by an
// early block reads none of the later ones. At most 255 blocks (s.n).
func (c *vmCompiler) elseChain(s *vmStmt) {
	var l uint16
	n := 0
	for k := s.ref + 1; k < s.ref+int32(s.b) && n < maxArgs; k++ {
		b := c.code.blocks[k]
		if b.start == b.end {
			break
		}
		first := c.code.code[b.start]
		if first.op != opIsUndefined || (n > 0 && first.target != l) {
			break
		}
		l = first.target
		n++
	}
	if n == 0 {
		return
	}
	for k := s.ref + 1; k <= s.ref+int32(n); k++ {
		c.code.blocks[k].start++
	}
	s.op, s.target, s.n = opElseChain, l, uint8(n)
}

// fusePair is the fused statement doing s then next, if there is one.
func fusePair(s, next vmStmt) (vmStmt, bool) {
	t := vmOperand(s.target)
	switch {
	case s.op == opDot && (next.op == opEqual || next.op == opNotEqual) && next.a == t && next.b < 0:
		f := s
		f.op, f.ref = opDotEq, int32(next.b)
		if next.op == opNotEqual {
			f.op = opDotNe
		}
		return f, true
	case s.op == opDot && next.op == opAssignVar && next.a == t:
		f := s
		f.op, f.ref = opDotCopy, int32(next.target)
		return f, true
	case s.op == opCall && next.op == opAssignVar && next.a == t:
		f := s // a call's location (b) is for errors of built-ins only
		f.op, f.b = opCallCopy, vmOperand(next.target)
		return f, true
	case s.op == opAssignVar && next.op == opAssignVar:
		return vmStmt{op: opAssign2, target: s.target, a: s.a, b: next.a, ref: int32(next.target)}, true
	case (s.op == opConst || s.op == opAssignVar) && next.op == opAssignVarOnce && next.a == t && s.target < 256:
		f := next
		f.op, f.a, f.n = opSetOnce, s.a, uint8(s.target)
		return f, true
	}
	return vmStmt{}, false
}

// fuseNotFalse fuses "CallStmt -> t; NotEqualStmt t, false"; it needs the
// constants (is the operand false?), hence a method.
func (c *vmCompiler) fuseNotFalse(s, next vmStmt) (vmStmt, bool) {
	if (s.op != opCall && s.op != opBuiltin) || next.op != opNotEqual || next.a != vmOperand(s.target) || next.b >= 0 {
		return vmStmt{}, false
	}
	if b, ok := c.code.consts[^next.b].Value.(ast.Boolean); !ok || bool(b) {
		return vmStmt{}, false
	}
	f := s
	f.op = opCallNF
	if s.op == opBuiltin {
		f.op = opBuiltinNF
	}
	return f, true
}

// falseTerm is the constant of "NotEqualStmt t, false".
var falseTerm = ast.InternedTerm(false)

// equalConst is st.equal(a, c) for a defined a and a constant c (never a
// Lazy): for a string, a boolean or null, ast.ValueEqual's answer is Go's
// == of the two values of the same type; anything else goes through equal.
func (st *vmState) equalConst(a, c *ast.Term) bool {
	switch v := a.Value.(type) {
	case ast.String:
		w, ok := c.Value.(ast.String)
		return ok && v == w
	case ast.Boolean:
		w, ok := c.Value.(ast.Boolean)
		return ok && v == w
	case ast.Null:
		_, ok := c.Value.(ast.Null)
		return ok
	}
	return st.equal(a, c)
}

// fusedDot ends the fused statements that start with a lookup (execDot),
// once its result t is in its target.
func (st *vmState) fusedDot(fr []*ast.Term, s *vmStmt, t *ast.Term) int {
	switch s.op {
	case opDotEq:
		return defined(st.equalConst(t, st.consts[^s.ref]))
	case opDotNe:
		return defined(!st.equalConst(t, st.consts[^s.ref]))
	case opDotCopy:
		fr[s.ref] = t
	}
	return ctlNext
}

// fusedCall ends the fused statements that start with a call (execCall,
// execBuiltin) once its result t is known (nil: undefined) and, if
// defined, in its target.
func (st *vmState) fusedCall(fr []*ast.Term, s *vmStmt, t *ast.Term) int {
	switch s.op {
	case opNotCallNF: // the negated block held: the call defined and not false
		return defined(t == nil || st.equalConst(t, falseTerm))
	case opCallNF, opBuiltinNF:
		return defined(t != nil && !st.equalConst(t, falseTerm))
	case opCallCopy:
		if t != nil {
			fr[s.b] = t
		}
	}
	return defined(t != nil)
}
