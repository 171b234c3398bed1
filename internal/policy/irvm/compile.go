package irvm

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
)

// New resolves the plan cfg.Entrypoint of pol for the interpreter. An
// error wrapping ErrUnsupported means the policy uses something the
// interpreter does not run; the caller then evaluates with topdown.
func New(pol *ir.Policy, cfg Config) (*Program, error) { return newProgram(pol, cfg, false) }

// newProgram is New; noFuse leaves every statement on its own (fuse.go).
func newProgram(pol *ir.Policy, cfg Config, noFuse bool) (*Program, error) {
	entry := cfg.Entrypoint
	if pol.Static == nil || pol.Plans == nil {
		return nil, fmt.Errorf("%w: empty plan", ErrUnsupported)
	}
	c := &vmCompiler{pol: pol, funcs: map[string]int32{}, builtins: map[string]int32{}, consts: map[*ast.Term]vmOperand{},
		noFuse: noFuse}
	c.strings = make([]*ast.Term, len(pol.Static.Strings))
	for i, s := range pol.Static.Strings {
		c.strings[i] = ast.StringTerm(s.Value)
	}
	for _, f := range pol.Static.Files {
		c.files = append(c.files, f.Value)
	}
	for _, bf := range pol.Static.BuiltinFuncs {
		bi, err := vmBuiltinFor(bf.Name, cfg.Natives)
		if err != nil {
			return nil, err
		}
		c.builtins[bf.Name] = int32(len(c.code.builtins))
		c.code.builtins = append(c.code.builtins, bi)
	}
	var funcs []*ir.Func
	if pol.Funcs != nil {
		funcs = pol.Funcs.Funcs
	}
	// The functions, their parameters and blocks each in one array, next
	// to each other in memory (a cold decision loads fewer lines).
	c.code.funcs = make([]vmFunc, len(funcs))
	c.code.finfo = make([]vmFuncInfo, len(funcs))
	nparams, nblocks := 0, 0
	for _, f := range funcs {
		nparams, nblocks = nparams+len(f.Params), nblocks+len(f.Blocks)
	}
	c.code.params, c.code.fblocks = make([]int32, 0, nparams), make([]vmBlock, 0, nblocks)
	for i, f := range funcs {
		fn := &c.code.funcs[i]
		c.code.finfo[i].name, fn.memo = f.Name, -1
		fn.params, fn.nparams = int32(len(c.code.params)), c.count(len(f.Params))
		for _, p := range f.Params {
			c.code.params = append(c.code.params, int32(c.local(p)))
		}
		if len(f.Params) == 2 { // input and data only: once per evaluation
			fn.memo = int32(c.nmemo)
			c.nmemo++
		}
		c.funcs[f.Name] = int32(i)
	}
	for i, f := range funcs {
		fn, info := &c.code.funcs[i], &c.code.finfo[i]
		c.maxLocal = max(int(f.Return), 0)
		for _, p := range f.Params {
			c.maxLocal = max(c.maxLocal, int(p))
		}
		fn.ret = c.local(f.Return)
		c.fold = foldable(f.Blocks)
		c.cur, c.dataLocals, c.inserts = int32(i), dataLocals(f.Blocks), insertTargets(f.Blocks)
		info.conflict = conflictMessage(f)
		body := f.Blocks
		if x, as, ok := ruleEpilogue(f); ok {
			fn.epilogue, fn.defined, body = true, c.local(x), body[:1]
			info.epilogueLoc = c.code.locs[c.location(as.Location)-1]
		}
		blocks, err := c.blockList(withoutEntryReset(f, body))
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", f.Name, err)
		}
		fn.blocks, fn.nblocks = int32(len(c.code.fblocks)), c.count(len(blocks))
		c.code.fblocks = append(c.code.fblocks, blocks...)
		fn.nlocals = c.count(c.maxLocal + 1)
	}
	prog := &Program{nmemo: c.nmemo, data: ast.NewTerm(ast.NewObject())}
	for _, p := range pol.Plans.Plans {
		if p.Name != entry {
			continue
		}
		c.maxLocal = int(ir.Data)
		c.fold = foldable(p.Blocks)
		c.cur, c.dataLocals, c.inserts = -1, dataLocals(p.Blocks), insertTargets(p.Blocks)
		blocks, err := c.blockList(p.Blocks)
		if err != nil {
			return nil, fmt.Errorf("plan %s: %w", p.Name, err)
		}
		prog.plan, prog.nlocals = blocks, c.maxLocal+1
		prog.direct = c.directCall(p) + 1
		prog.directArgs = []vmOperand{vmOperand(ir.Input), vmOperand(ir.Data)}
		if c.tooLarge != nil {
			return nil, c.tooLarge
		}
		c.code.order(prog.plan, prog.direct-1)
		c.code.packConsts()
		prog.vmCode = c.code
		return prog, nil
	}
	return nil, fmt.Errorf("no plan %q", entry)
}

type vmCompiler struct {
	pol      *ir.Policy
	code     vmCode // what is compiled so far
	strings  []*ast.Term
	files    []string
	funcs    map[string]int32 // index in code.funcs
	builtins map[string]int32 // index in code.builtins
	consts   map[*ast.Term]vmOperand
	nmemo    int
	maxLocal int   // of the function being compiled
	fold     bool  // constant collections may be built once (see foldable)
	cur      int32 // the function being compiled (code.funcs); -1 for a plan
	// dataLocals are the locals holding the data document or a document
	// looked up in it (see dataLocals)
	dataLocals map[ir.Local]bool
	// inserts counts the inserts into each local of the function (see
	// recordRun)
	inserts map[ir.Local]int
	// tooLarge is set when a local or a call does not fit a vmStmt
	tooLarge error
	// noFuse compiles every statement on its own (fuse.go): the tests'
	// reference for the fused statements
	noFuse bool
}

// count is n for a vmFunc's uint16 counts; past them, the plan is not
// supported (c.tooLarge).
func (c *vmCompiler) count(n int) uint16 {
	if n > 1<<16-1 {
		c.tooLarge = fmt.Errorf("%w: %d locals, parameters or blocks in a function", ErrUnsupported, n)
		return 0
	}
	return uint16(n)
}

func (c *vmCompiler) local(l ir.Local) uint16 {
	c.maxLocal = max(c.maxLocal, int(l))
	if l < 0 || l > maxLocals {
		c.tooLarge = fmt.Errorf("%w: local %d", ErrUnsupported, l)
		return 0
	}
	return uint16(l)
}

func (c *vmCompiler) operand(o ir.Operand) (vmOperand, error) {
	v := o.Value
	switch p := v.(type) { // the plan's JSON decodes operands as pointers
	case *ir.Local:
		v = *p
	case *ir.StringIndex:
		v = *p
	case *ir.Bool:
		v = *p
	}
	switch v := v.(type) {
	case ir.Local:
		return vmOperand(c.local(v)), nil
	case ir.StringIndex:
		if int(v) < 0 || int(v) >= len(c.strings) {
			return 0, fmt.Errorf("string index %d out of range", v)
		}
		return c.constant(c.strings[v]), nil
	case ir.Bool:
		return c.constant(ast.InternedTerm(bool(v))), nil
	}
	return 0, fmt.Errorf("%w: operand %T", ErrUnsupported, o.Value)
}

// constant is the operand of the constant t (once per term).
func (c *vmCompiler) constant(t *ast.Term) vmOperand {
	if o, ok := c.consts[t]; ok {
		return o
	}
	o := ^vmOperand(len(c.code.consts))
	c.code.consts = append(c.code.consts, t)
	c.consts[t] = o
	return o
}

// packConsts copies the constants next to each other: their terms in one
// array, the bytes of their strings in one string.
func (code *vmCode) packConsts() {
	n := 0
	for _, t := range code.consts {
		if s, ok := t.Value.(ast.String); ok {
			n += len(s)
		}
	}
	buf := make([]byte, 0, n)
	for _, t := range code.consts {
		if s, ok := t.Value.(ast.String); ok {
			buf = append(buf, s...)
		}
	}
	all := string(buf)
	terms := make([]ast.Term, len(code.consts))
	moved := make(map[*ast.Term]*ast.Term, len(code.consts))
	for i, t := range code.consts {
		terms[i] = *t
		if s, ok := t.Value.(ast.String); ok {
			terms[i].Value = ast.String(all[:len(s)])
			all = all[len(s):]
		}
		code.consts[i] = &terms[i]
		moved[t] = &terms[i]
	}
	// a record's keys are the constants' terms (record.Lookup compares
	// the pointers first)
	for _, keys := range code.recKeys {
		for i, k := range keys {
			keys[i] = moved[k]
		}
	}
}

// constTerm is the term of a constant operand; nil for a local.
func (c *vmCompiler) constTerm(o vmOperand) *ast.Term {
	if o >= 0 {
		return nil
	}
	return c.code.consts[^o]
}

// location is the location l for a vmStmt: its index in code.locs + 1.
func (c *vmCompiler) location(l ir.Location) int32 {
	loc := &ast.Location{Row: l.Row, Col: l.Col}
	if l.File >= 0 && l.File < len(c.files) {
		loc.File = c.files[l.File]
	}
	c.code.locs = append(c.code.locs, loc)
	return int32(len(c.code.locs))
}

// blockList compiles the blocks bs.
func (c *vmCompiler) blockList(bs []*ir.Block) ([]vmBlock, error) {
	out := make([]vmBlock, len(bs))
	for i, b := range bs {
		vb, err := c.block(b)
		if err != nil {
			return nil, err
		}
		out[i] = vb
	}
	return out, nil
}

// blocks compiles the blocks bs into code.blocks, one after the other, and
// returns the index of the first.
func (c *vmCompiler) blocks(bs ...*ir.Block) (int32, error) {
	list, err := c.blockList(bs)
	first := int32(len(c.code.blocks))
	c.code.blocks = append(c.code.blocks, list...)
	return first, err
}

// block compiles b: its statements go to the end of code.code, after those
// of the blocks nested in them (compiled on the way).
func (c *vmCompiler) block(b *ir.Block) (vmBlock, error) {
	stmts := make([]vmStmt, 0, len(b.Stmts))
	for i := 0; i < len(b.Stmts); i++ {
		if c.fold {
			if s, n, ok := c.foldConst(b.Stmts[i:]); ok {
				stmts = append(stmts, s)
				i += n - 1
				continue
			}
		}
		if !c.noFuse {
			rs, n, ok, err := c.record(b.Stmts[i:])
			if err != nil {
				return vmBlock{}, err
			}
			if ok {
				stmts = append(stmts, rs...)
				i += n - 1
				continue
			}
		}
		s, err := c.stmt(b.Stmts[i])
		if err != nil {
			return vmBlock{}, err
		}
		stmts = append(stmts, s)
	}
	if !c.noFuse {
		stmts = c.fuse(stmts)
	}
	start := int32(len(c.code.code))
	c.code.code = append(c.code.code, stmts...)
	return vmBlock{start: start, end: int32(len(c.code.code))}, nil
}

// stmt resolves one statement; each kind has its own method
// (vmcompilestmt.go).
func (c *vmCompiler) stmt(stmt ir.Stmt) (vmStmt, error) {
	switch st := stmt.(type) {
	case *ir.NopStmt:
		return vmStmt{op: opNop}, nil
	case *ir.ReturnLocalStmt:
		return vmStmt{op: opReturnLocal, target: c.local(st.Source)}, nil
	case *ir.CallStmt:
		return c.callStmt(st)
	case *ir.BlockStmt:
		first, err := c.blocks(st.Blocks...)
		return vmStmt{op: opBlock, ref: first, b: vmOperand(len(st.Blocks))}, err
	case *ir.BreakStmt:
		return vmStmt{op: opBreak, ref: int32(st.Index)}, nil
	case *ir.DotStmt:
		op := opDot
		if l, ok := localOf(st.Source); ok && c.dataLocals[l] {
			op = opDotData
		}
		return c.binary(op, st.Source, st.Key, st.Target)
	case *ir.LenStmt:
		return c.unary(opLen, st.Source, c.local(st.Target))
	case *ir.ScanStmt:
		return c.scanStmt(st)
	case *ir.NotStmt:
		b, err := c.blocks(st.Block)
		return vmStmt{op: opNot, ref: b}, err
	case *ir.AssignIntStmt:
		return c.constStmt(st.Target, ast.InternedTerm(int(st.Value))), nil
	case *ir.AssignVarStmt:
		return c.unary(opAssignVar, st.Source, c.local(st.Target))
	case *ir.AssignVarOnceStmt:
		s, err := c.unary(opAssignVarOnce, st.Source, c.local(st.Target))
		s.b, s.ref = vmOperand(c.location(st.Location)), c.cur
		return s, err
	case *ir.ResetLocalStmt:
		return vmStmt{op: opResetLocal, target: c.local(st.Target)}, nil
	case *ir.MakeNullStmt:
		return c.constStmt(st.Target, ast.InternedNullTerm), nil
	case *ir.MakeNumberIntStmt:
		return c.constStmt(st.Target, ast.InternedTerm(int(st.Value))), nil
	case *ir.MakeNumberRefStmt:
		return c.numberRef(st)
	case *ir.MakeArrayStmt:
		return vmStmt{op: opMakeArray, target: c.local(st.Target), b: vmOperand(st.Capacity)}, nil
	case *ir.MakeObjectStmt:
		return vmStmt{op: opMakeObject, target: c.local(st.Target)}, nil
	case *ir.MakeSetStmt:
		return vmStmt{op: opMakeSet, target: c.local(st.Target)}, nil
	case *ir.EqualStmt:
		return c.compare(opEqual, st.A, st.B)
	case *ir.NotEqualStmt:
		return c.compare(opNotEqual, st.A, st.B)
	case *ir.IsArrayStmt:
		return c.unary(opIsArray, st.Source, 0)
	case *ir.IsObjectStmt:
		return c.unary(opIsObject, st.Source, 0)
	case *ir.IsSetStmt:
		return c.unary(opIsSet, st.Source, 0)
	case *ir.IsDefinedStmt:
		return vmStmt{op: opIsDefined, target: c.local(st.Source)}, nil
	case *ir.IsUndefinedStmt:
		return vmStmt{op: opIsUndefined, target: c.local(st.Source)}, nil
	case *ir.ArrayAppendStmt:
		return c.unary(opArrayAppend, st.Value, c.local(st.Array))
	case *ir.ObjectInsertStmt:
		return c.binary(opObjectInsert, st.Key, st.Value, st.Object)
	case *ir.ObjectInsertOnceStmt:
		s, err := c.binary(opObjectInsertOnce, st.Key, st.Value, st.Object)
		s.ref = c.location(st.Location)
		return s, err
	case *ir.ObjectMergeStmt:
		return vmStmt{op: opObjectMerge, a: vmOperand(c.local(st.A)), b: vmOperand(c.local(st.B)),
			target: c.local(st.Target), ref: c.location(st.Location)}, nil
	case *ir.SetAddStmt:
		return c.unary(opSetAdd, st.Value, c.local(st.Set))
	case *ir.ResultSetAddStmt:
		return vmStmt{op: opResultSetAdd, target: c.local(st.Value)}, nil
	case *ir.WithStmt:
		return c.withStmt(st)
	}
	// CallDynamicStmt, and anything newer
	return vmStmt{}, fmt.Errorf("%w: %T", ErrUnsupported, stmt)
}

// Constant folding. The planner builds every collection literal at run time:
// MakeObjectStmt, then one ObjectInsertStmt per key (the decision objects of
// the default policy, {"allow": false, "reason": "cross_location"}); likewise
// sets and arrays. When the keys and values are constants, foldConst builds
// the collection once, here, and the statement only points the local at it.
//
// The shared value must never be changed afterwards. The planner changes a
// collection in place only through insert statements right after it made it
// in the same function; so folding is done only in functions (and plans)
// where every insert statement is part of such a constant run (foldable).

// foldable tells whether every in-place change of a collection in bs belongs
// to a run foldConst folds.
func foldable(bs []*ir.Block) bool {
	total, folded := 0, 0
	var walk func(b *ir.Block)
	walk = func(b *ir.Block) {
		for i := 0; i < len(b.Stmts); i++ {
			if n, ok := constRun(b.Stmts[i:]); ok {
				folded += n - 1
				total += n - 1
				i += n - 1
				continue
			}
			switch st := b.Stmts[i].(type) {
			case *ir.ObjectInsertStmt, *ir.ObjectInsertOnceStmt, *ir.SetAddStmt, *ir.ArrayAppendStmt:
				total++
			case *ir.BlockStmt:
				for _, inner := range st.Blocks {
					walk(inner)
				}
			case *ir.ScanStmt:
				walk(st.Block)
			case *ir.NotStmt:
				walk(st.Block)
			case *ir.WithStmt:
				total++ // never folded around a with
				walk(st.Block)
			}
		}
	}
	for _, b := range bs {
		walk(b)
	}
	return total == folded
}

// constRun reports the length of a run "make collection; insert constants…"
// at the start of stmts (n >= 1; the make alone is a run of one).
func constRun(stmts []ir.Stmt) (int, bool) {
	isConst := func(o ir.Operand) bool {
		switch o.Value.(type) {
		case ir.StringIndex, ir.Bool, *ir.StringIndex, *ir.Bool:
			return true
		}
		return false
	}
	n := 1
	switch mk := stmts[0].(type) {
	case *ir.MakeObjectStmt:
		seen := map[any]bool{}
		for ; n < len(stmts); n++ {
			var key, value ir.Operand
			var obj ir.Local
			switch ins := stmts[n].(type) {
			case *ir.ObjectInsertStmt:
				key, value, obj = ins.Key, ins.Value, ins.Object
			case *ir.ObjectInsertOnceStmt:
				key, value, obj = ins.Key, ins.Value, ins.Object
				if seen[constKey(key)] { // a conflict (or not): leave it to run time
					return n, true
				}
			default:
				return n, true
			}
			if obj != mk.Target || !isConst(key) || !isConst(value) {
				return n, true
			}
			seen[constKey(key)] = true
		}
	case *ir.MakeSetStmt:
		for ; n < len(stmts); n++ {
			ins, ok := stmts[n].(*ir.SetAddStmt)
			if !ok || ins.Set != mk.Target || !isConst(ins.Value) {
				return n, true
			}
		}
	case *ir.MakeArrayStmt:
		for ; n < len(stmts); n++ {
			ins, ok := stmts[n].(*ir.ArrayAppendStmt)
			if !ok || ins.Array != mk.Target || !isConst(ins.Value) {
				return n, true
			}
		}
	default:
		return 0, false
	}
	return n, true
}

// foldConst folds the constant run at the start of stmts into one statement.
func (c *vmCompiler) foldConst(stmts []ir.Stmt) (vmStmt, int, bool) {
	n, ok := constRun(stmts)
	if !ok {
		return vmStmt{}, 0, false
	}
	val := func(o ir.Operand) *ast.Term {
		v, _ := c.operand(o) // constants only: no error
		return c.constTerm(v)
	}
	var target ir.Local
	var value ast.Value
	switch mk := stmts[0].(type) {
	case *ir.MakeObjectStmt:
		target = mk.Target
		obj := ast.NewObject()
		for _, s := range stmts[1:n] {
			switch ins := s.(type) {
			case *ir.ObjectInsertStmt:
				obj.Insert(val(ins.Key), val(ins.Value))
			case *ir.ObjectInsertOnceStmt:
				obj.Insert(val(ins.Key), val(ins.Value))
			}
		}
		value = obj
	case *ir.MakeSetStmt:
		target = mk.Target
		set := ast.NewSet()
		for _, s := range stmts[1:n] {
			set.Add(val(s.(*ir.SetAddStmt).Value))
		}
		value = set
	case *ir.MakeArrayStmt:
		target = mk.Target
		elems := make([]*ast.Term, 0, n-1)
		for _, s := range stmts[1:n] {
			elems = append(elems, val(s.(*ir.ArrayAppendStmt).Value))
		}
		value = ast.NewArray(elems...)
	}
	return c.constStmt(target, ast.NewTerm(value)), n, true
}

// constKey identifies a constant operand (the plan's JSON decodes operands
// as pointers).
func constKey(o ir.Operand) any {
	switch v := o.Value.(type) {
	case *ir.StringIndex:
		return *v
	case *ir.Bool:
		return *v
	}
	return o.Value
}

// directCall recognises the plan of an entry point that is one rule,
//
//	CallStmt f(input, data) -> r; AssignVarStmt r -> t; MakeObjectStmt o;
//	ObjectInsertStmt o["result"] = t; ResultSetAddStmt o
//
// and returns f (its index in code.funcs): the value of the entry point is
// then f's result, without building the result set. -1 for any other plan.
func (c *vmCompiler) directCall(p *ir.Plan) int32 {
	if len(p.Blocks) != 1 || len(p.Blocks[0].Stmts) != 5 {
		return -1
	}
	st := p.Blocks[0].Stmts
	call, ok1 := st[0].(*ir.CallStmt)
	assign, ok2 := st[1].(*ir.AssignVarStmt)
	mk, ok3 := st[2].(*ir.MakeObjectStmt)
	ins, ok4 := st[3].(*ir.ObjectInsertStmt)
	add, ok5 := st[4].(*ir.ResultSetAddStmt)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || len(call.Args) != 2 {
		return -1
	}
	local := func(o ir.Operand) (ir.Local, bool) {
		v, err := c.operand(o)
		return ir.Local(v), err == nil && v >= 0
	}
	in, ok := local(call.Args[0])
	data, okd := local(call.Args[1])
	src, oks := local(assign.Source)
	val, okv := local(ins.Value)
	key, err := c.operand(ins.Key)
	fi, okf := c.funcs[call.Func]
	if !ok || !okf || !okd || !oks || !okv || err != nil || in != ir.Input || data != ir.Data ||
		src != call.Result || val != assign.Target || ins.Object != mk.Target || add.Value != mk.Target ||
		c.constTerm(key) == nil || c.constTerm(key).Value.Compare(ast.String("result")) != 0 {
		return -1
	}
	return fi
}
