package irvm

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// One method per kind of IR statement, called by vmState.block. Each returns
// ctlNext to go on with the next statement, 0 when the statement is
// undefined (leave the innermost block), or the control result of a nested
// block (see the ctl constants).

// defined is the control result of a statement that holds or is undefined.
func defined(ok bool) int {
	if ok {
		return ctlNext
	}
	return 0
}

// execCall is CallStmt of a planned function (and the fused statements
// starting with one, fuse.go).
func (st *vmState) execCall(fr []*ast.Term, s *vmStmt) (int, error) {
	t, err := st.callFunc(s.ref, fr, st.args[s.a:s.a+vmOperand(s.n)])
	if err != nil {
		return 0, err
	}
	if t != nil {
		fr[s.target] = t
	}
	if s.op != opCall {
		return st.fusedCall(fr, s, t), nil
	}
	return defined(t != nil), nil
}

// execBuiltin is CallStmt of a built-in (and opBuiltinNF).
func (st *vmState) execBuiltin(fr []*ast.Term, s *vmStmt) (int, error) {
	t, err := st.builtin(fr, s)
	if err != nil {
		return 0, err
	}
	if t != nil {
		fr[s.target] = t
	}
	if s.op != opBuiltin {
		return st.fusedCall(fr, s, t), nil
	}
	return defined(t != nil), nil
}

// execBlock is BlockStmt: its blocks in turn; a break out of one of them
// by more than one level leaves the statement's block too.
func (st *vmState) execBlock(fr []*ast.Term, s *vmStmt) (int, error) {
	for k := s.ref; k < s.ref+int32(s.b); k++ {
		// opElseChain: blocks 1..n start with "IsUndefinedStmt target",
		// left out of them (fuse.go): a defined target leaves the block
		if s.op == opElseChain && k > s.ref && k <= s.ref+int32(s.n) && fr[s.target] != nil {
			continue
		}
		ctl, err := st.block(fr, st.blocks[k])
		switch {
		case err != nil:
			return 0, err
		case ctl == ctlReturn:
			return ctlReturn, nil
		case ctl > 0:
			return ctl - 1, nil
		}
	}
	return ctlNext, nil
}

// execDot is DotStmt: src[key], asked of src when it is Lazy (and the fused
// statements starting with one, fuse.go).
func (st *vmState) execDot(fr []*ast.Term, s *vmStmt) int {
	src, key := st.raw(fr, s.a), st.get(fr, s.b)
	if src == nil || key == nil {
		return 0
	}
	var t *ast.Term
	if l, ok := src.Value.(Lazy); ok {
		t = l.Lookup(key)
	} else {
		t = dot(src, key)
	}
	if t == nil {
		return 0
	}
	fr[s.target] = t
	if s.op != opDot {
		return st.fusedDot(fr, s, t)
	}
	return ctlNext
}

// execDotData is DotStmt on the data document or a document in it: a
// number key is looked up as its string, as topdown turns a reference into
// data into a storage path (data.nested[2] is data.nested["2"]); a value
// copied into a variable first is an ordinary object (obj[2] is undefined).
func (st *vmState) execDotData(fr []*ast.Term, s *vmStmt) int {
	src, key := st.raw(fr, s.a), st.get(fr, s.b)
	if src == nil || key == nil {
		return 0
	}
	t := dot(src, key)
	if n, ok := key.Value.(ast.Number); ok && t == nil {
		if obj, ok := src.Value.(ast.Object); ok {
			t = obj.Get(ast.StringTerm(n.String()))
		}
	}
	if t == nil {
		return 0
	}
	fr[s.target] = t
	return ctlNext
}

// execLen is LenStmt.
func (st *vmState) execLen(fr []*ast.Term, s *vmStmt) int {
	src := st.get(fr, s.a)
	if src == nil {
		return 0
	}
	fr[s.target] = ast.InternedTerm(length(src.Value))
	return ctlNext
}

// execNot is NotStmt: undefined when its block runs to its end.
func (st *vmState) execNot(fr []*ast.Term, s *vmStmt) (int, error) {
	ctl, err := st.block(fr, st.blocks[s.ref])
	switch {
	case err != nil:
		return 0, err
	case ctl == ctlNext: // the negated block held: not fails
		return 0, nil
	case ctl == ctlReturn:
		return ctlReturn, nil
	case ctl > 0:
		return ctl - 1, nil
	}
	return ctlNext, nil
}

// execWith is WithStmt of a whole document: the local (input) is the value
// while the block runs, in a memo frame of its own (a new generation: the
// memoized results from before are not seen in the block, and those made in
// it are not seen after), then both are restored, whatever the block did.
// Undefined when the block is; a break out of more leaves the blocks around
// (as execBlock).
func (st *vmState) execWith(fr []*ast.Term, s *vmStmt) (int, error) {
	// The value may be undefined: the planner restores the input around
	// the rest of a body with one, and an evaluation may have no input.
	saved, gen := fr[s.target], st.gen
	fr[s.target], st.gen = st.raw(fr, s.a), st.nextGen()
	ctl, err := st.block(fr, st.blocks[s.ref])
	fr[s.target], st.gen = saved, gen
	switch {
	case err != nil:
		return 0, err
	case ctl == ctlReturn:
		return ctlReturn, nil
	case ctl > 0:
		return ctl - 1, nil
	case ctl == 0:
		return 0, nil
	}
	return ctlNext, nil
}

// execAssignVarOnce is AssignVarOnceStmt: a second, different value of a
// complete rule is a conflict.
func (st *vmState) execAssignVarOnce(fr []*ast.Term, s *vmStmt) (int, error) {
	src := st.raw(fr, s.a)
	if src == nil {
		return 0, nil
	}
	if cur := fr[s.target]; cur != nil && !st.equal(cur, src) {
		msg := "complete rules must not produce multiple outputs"
		if s.ref >= 0 {
			msg = st.finfo[s.ref].conflict
		}
		return 0, conflictError(st.location(s), msg)
	}
	fr[s.target] = src
	return ctlNext, nil
}

// execEqual is EqualStmt and NotEqualStmt.
func (st *vmState) execEqual(fr []*ast.Term, s *vmStmt) int {
	a, b := st.raw(fr, s.a), st.raw(fr, s.b)
	return defined(a != nil && b != nil && st.equal(a, b) == (s.op == opEqual))
}

// execIsType is IsArrayStmt, IsObjectStmt and IsSetStmt.
func (st *vmState) execIsType(fr []*ast.Term, s *vmStmt) int {
	src := st.get(fr, s.a)
	if src == nil {
		return 0
	}
	switch src.Value.(type) {
	case *ast.Array:
		return defined(s.op == opIsArray)
	case ast.Object:
		return defined(s.op == opIsObject)
	case ast.Set:
		return defined(s.op == opIsSet)
	}
	return 0
}

// execArrayAppend is ArrayAppendStmt.
func (st *vmState) execArrayAppend(fr []*ast.Term, s *vmStmt) (int, error) {
	arr, ok := fr[s.target].Value.(*ast.Array)
	v := st.get(fr, s.a)
	if !ok || v == nil {
		return 0, vmBug("ArrayAppendStmt on a non-array")
	}
	fr[s.target] = ast.NewTerm(arr.Append(v))
	return ctlNext, nil
}

// execObjectInsert is ObjectInsertStmt and ObjectInsertOnceStmt (a key
// given two values is a conflict).
func (st *vmState) execObjectInsert(fr []*ast.Term, s *vmStmt) (int, error) {
	obj, ok := fr[s.target].Value.(ast.Object)
	k, v := st.get(fr, s.a), st.get(fr, s.b)
	if !ok || k == nil || v == nil {
		return 0, vmBug("ObjectInsertStmt on a non-object")
	}
	if s.op == opObjectInsertOnce {
		if cur := obj.Get(k); cur != nil && !cur.Equal(v) {
			return 0, conflictError(st.location(s), "object keys must be unique")
		}
	}
	obj.Insert(k, v)
	return ctlNext, nil
}

// execObjectMerge is ObjectMergeStmt.
func (st *vmState) execObjectMerge(fr []*ast.Term, s *vmStmt) (int, error) {
	a, b := st.get(fr, s.a), st.get(fr, s.b)
	ao, aok := valueOf(a).(ast.Object)
	bo, bok := valueOf(b).(ast.Object)
	if !aok || !bok {
		return 0, conflictError(st.location(s), "object merge of a non-object")
	}
	m, ok := ao.Merge(bo)
	if !ok {
		return 0, conflictError(st.location(s), "object keys must be unique")
	}
	fr[s.target] = ast.NewTerm(m)
	return ctlNext, nil
}

// execSetAdd is SetAddStmt.
func (st *vmState) execSetAdd(fr []*ast.Term, s *vmStmt) (int, error) {
	set, ok := fr[s.target].Value.(ast.Set)
	v := st.get(fr, s.a)
	if !ok || v == nil {
		return 0, vmBug("SetAddStmt on a non-set")
	}
	set.Add(v)
	return ctlNext, nil
}

// execResultSetAdd is ResultSetAddStmt: a result, once.
func (st *vmState) execResultSetAdd(fr []*ast.Term, s *vmStmt) {
	t := st.materialize(fr[s.target])
	if t == nil {
		return
	}
	for _, r := range st.results {
		if r.Equal(t) {
			return
		}
	}
	st.results = append(st.results, t)
}
