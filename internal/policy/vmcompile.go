package policy

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// newVMProgram resolves the plan named entry of pol for the interpreter. An
// error wrapping errVMUnsupported means the policy uses something the
// interpreter does not run; the caller then evaluates with topdown.
func newVMProgram(pol *ir.Policy, entry string) (*vmProgram, error) {
	if pol.Static == nil || pol.Plans == nil {
		return nil, fmt.Errorf("%w: empty plan", errVMUnsupported)
	}
	c := &vmCompiler{pol: pol, funcs: map[string]*vmFunc{}, builtins: map[string]*vmBuiltin{}}
	c.strings = make([]*ast.Term, len(pol.Static.Strings))
	for i, s := range pol.Static.Strings {
		c.strings[i] = ast.StringTerm(s.Value)
	}
	for _, f := range pol.Static.Files {
		c.files = append(c.files, f.Value)
	}
	for _, bf := range pol.Static.BuiltinFuncs {
		bi, err := vmBuiltinFor(bf.Name)
		if err != nil {
			return nil, err
		}
		c.builtins[bf.Name] = bi
	}
	var funcs []*ir.Func
	if pol.Funcs != nil {
		funcs = pol.Funcs.Funcs
	}
	for _, f := range funcs {
		fn := &vmFunc{name: f.Name, ret: int32(f.Return), memo: -1}
		for _, p := range f.Params {
			fn.params = append(fn.params, int32(p))
		}
		if len(f.Params) == 2 { // input and data only: once per evaluation
			fn.memo = c.nmemo
			c.nmemo++
		}
		c.funcs[f.Name] = fn
	}
	for _, f := range funcs {
		fn := c.funcs[f.Name]
		c.maxLocal = max(int(f.Return), 0)
		for _, p := range f.Params {
			c.maxLocal = max(c.maxLocal, int(p))
		}
		c.fold = foldable(f.Blocks)
		blocks, err := c.blocks(f.Blocks)
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", f.Name, err)
		}
		fn.blocks, fn.nlocals = blocks, c.maxLocal+1
	}
	prog := &vmProgram{nmemo: c.nmemo, data: ast.NewTerm(ast.NewObject())}
	for _, p := range pol.Plans.Plans {
		if p.Name != entry {
			continue
		}
		c.maxLocal = int(ir.Data)
		c.fold = foldable(p.Blocks)
		blocks, err := c.blocks(p.Blocks)
		if err != nil {
			return nil, fmt.Errorf("plan %s: %w", p.Name, err)
		}
		prog.plan, prog.nlocals = blocks, c.maxLocal+1
		prog.direct = c.directCall(p)
		prog.directArgs = []vmOperand{{local: int32(ir.Input)}, {local: int32(ir.Data)}}
		return prog, nil
	}
	return nil, fmt.Errorf("no plan %q", entry)
}

type vmCompiler struct {
	pol      *ir.Policy
	strings  []*ast.Term
	files    []string
	funcs    map[string]*vmFunc
	builtins map[string]*vmBuiltin
	nmemo    int
	maxLocal int  // of the function being compiled
	fold     bool // constant collections may be built once (see foldable)
}

func (c *vmCompiler) local(l ir.Local) int32 {
	c.maxLocal = max(c.maxLocal, int(l))
	return int32(l)
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
		return vmOperand{local: c.local(v)}, nil
	case ir.StringIndex:
		if int(v) < 0 || int(v) >= len(c.strings) {
			return vmOperand{}, fmt.Errorf("string index %d out of range", v)
		}
		return vmOperand{local: -1, c: c.strings[v]}, nil
	case ir.Bool:
		return vmOperand{local: -1, c: ast.InternedTerm(bool(v))}, nil
	}
	return vmOperand{}, fmt.Errorf("%w: operand %T", errVMUnsupported, o.Value)
}

func (c *vmCompiler) location(l ir.Location) *ast.Location {
	loc := &ast.Location{Row: l.Row, Col: l.Col}
	if l.File >= 0 && l.File < len(c.files) {
		loc.File = c.files[l.File]
	}
	return loc
}

func (c *vmCompiler) blocks(bs []*ir.Block) ([]*vmBlock, error) {
	out := make([]*vmBlock, len(bs))
	for i, b := range bs {
		vb, err := c.block(b)
		if err != nil {
			return nil, err
		}
		out[i] = vb
	}
	return out, nil
}

func (c *vmCompiler) block(b *ir.Block) (*vmBlock, error) {
	vb := &vmBlock{stmts: make([]vmStmt, 0, len(b.Stmts))}
	for i := 0; i < len(b.Stmts); i++ {
		if c.fold {
			if s, n, ok := c.foldConst(b.Stmts[i:]); ok {
				vb.stmts = append(vb.stmts, s)
				i += n - 1
				continue
			}
		}
		s, err := c.stmt(b.Stmts[i])
		if err != nil {
			return nil, err
		}
		vb.stmts = append(vb.stmts, s)
	}
	return vb, nil
}

func (c *vmCompiler) stmt(stmt ir.Stmt) (vmStmt, error) {
	var (
		s   vmStmt
		err error
	)
	op := func(o ir.Operand) vmOperand {
		v, e := c.operand(o)
		if e != nil && err == nil {
			err = e
		}
		return v
	}
	switch st := stmt.(type) {
	case *ir.NopStmt:
		s.op = opNop
	case *ir.ReturnLocalStmt:
		s.op, s.target = opReturnLocal, c.local(st.Source)
	case *ir.CallStmt:
		s.target, s.loc = c.local(st.Result), c.location(st.Location)
		for _, a := range st.Args {
			s.args = append(s.args, op(a))
		}
		if fn, ok := c.funcs[st.Func]; ok {
			s.op, s.fn = opCall, fn
			if len(s.args) != len(fn.params) {
				return s, fmt.Errorf("call of %s with %d arguments, want %d", st.Func, len(s.args), len(fn.params))
			}
		} else if bi, ok := c.builtins[st.Func]; ok {
			s.op, s.bi = opBuiltin, bi
		} else {
			return s, fmt.Errorf("%w: call of %s", errVMUnsupported, st.Func)
		}
	case *ir.BlockStmt:
		s.op = opBlock
		s.blocks, err = c.blocks(st.Blocks)
	case *ir.BreakStmt:
		s.op, s.n = opBreak, int32(st.Index)
	case *ir.DotStmt:
		s.op, s.a, s.b, s.target = opDot, op(st.Source), op(st.Key), c.local(st.Target)
	case *ir.LenStmt:
		s.op, s.a, s.target = opLen, op(st.Source), c.local(st.Target)
	case *ir.ScanStmt:
		s.op, s.a, s.key, s.value = opScan, vmOperand{local: c.local(st.Source)}, c.local(st.Key), c.local(st.Value)
		var b *vmBlock
		if b, err = c.block(st.Block); err == nil {
			s.blocks = []*vmBlock{b}
		}
	case *ir.NotStmt:
		s.op = opNot
		var b *vmBlock
		if b, err = c.block(st.Block); err == nil {
			s.blocks = []*vmBlock{b}
		}
	case *ir.AssignIntStmt:
		s.op, s.target, s.a = opConst, c.local(st.Target), vmOperand{local: -1, c: ast.InternedTerm(int(st.Value))}
	case *ir.AssignVarStmt:
		s.op, s.a, s.target = opAssignVar, op(st.Source), c.local(st.Target)
	case *ir.AssignVarOnceStmt:
		s.op, s.a, s.target, s.loc = opAssignVarOnce, op(st.Source), c.local(st.Target), c.location(st.Location)
	case *ir.ResetLocalStmt:
		s.op, s.target = opResetLocal, c.local(st.Target)
	case *ir.MakeNullStmt:
		s.op, s.target, s.a = opConst, c.local(st.Target), vmOperand{local: -1, c: ast.InternedNullTerm}
	case *ir.MakeNumberIntStmt:
		s.op, s.target, s.a = opConst, c.local(st.Target), vmOperand{local: -1, c: ast.InternedTerm(int(st.Value))}
	case *ir.MakeNumberRefStmt:
		if st.Index < 0 || st.Index >= len(c.strings) {
			return s, fmt.Errorf("number string index %d out of range", st.Index)
		}
		n := ast.Number(c.pol.Static.Strings[st.Index].Value)
		if _, ok := n.Int(); !ok {
			if _, ok := n.Float64(); !ok {
				return s, fmt.Errorf("%w: number %q", errVMUnsupported, n)
			}
		}
		s.op, s.target, s.a = opConst, c.local(st.Target), vmOperand{local: -1, c: ast.NewTerm(n)}
	case *ir.MakeArrayStmt:
		s.op, s.target, s.n = opMakeArray, c.local(st.Target), st.Capacity
	case *ir.MakeObjectStmt:
		s.op, s.target = opMakeObject, c.local(st.Target)
	case *ir.MakeSetStmt:
		s.op, s.target = opMakeSet, c.local(st.Target)
	case *ir.EqualStmt:
		s.op, s.a, s.b = opEqual, op(st.A), op(st.B)
	case *ir.NotEqualStmt:
		s.op, s.a, s.b = opNotEqual, op(st.A), op(st.B)
	case *ir.IsArrayStmt:
		s.op, s.a = opIsArray, op(st.Source)
	case *ir.IsObjectStmt:
		s.op, s.a = opIsObject, op(st.Source)
	case *ir.IsSetStmt:
		s.op, s.a = opIsSet, op(st.Source)
	case *ir.IsDefinedStmt:
		s.op, s.target = opIsDefined, c.local(st.Source)
	case *ir.IsUndefinedStmt:
		s.op, s.target = opIsUndefined, c.local(st.Source)
	case *ir.ArrayAppendStmt:
		s.op, s.a, s.target = opArrayAppend, op(st.Value), c.local(st.Array)
	case *ir.ObjectInsertStmt:
		s.op, s.a, s.b, s.target = opObjectInsert, op(st.Key), op(st.Value), c.local(st.Object)
	case *ir.ObjectInsertOnceStmt:
		s.op, s.a, s.b, s.target, s.loc = opObjectInsertOnce, op(st.Key), op(st.Value), c.local(st.Object), c.location(st.Location)
	case *ir.ObjectMergeStmt:
		s.op, s.a, s.b, s.target, s.loc = opObjectMerge, vmOperand{local: c.local(st.A)}, vmOperand{local: c.local(st.B)}, c.local(st.Target), c.location(st.Location)
	case *ir.SetAddStmt:
		s.op, s.a, s.target = opSetAdd, op(st.Value), c.local(st.Set)
	case *ir.ResultSetAddStmt:
		s.op, s.target = opResultSetAdd, c.local(st.Value)
	default:
		// WithStmt, CallDynamicStmt, and anything newer
		return s, fmt.Errorf("%w: %T", errVMUnsupported, stmt)
	}
	return s, err
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
		return v.c
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
	return vmStmt{op: opConst, target: c.local(target), a: vmOperand{local: -1, c: ast.NewTerm(value)}}, n, true
}

// vmBuiltinFor resolves a built-in the plan calls: crm.user and crm.record,
// a copy of topdown's for the few on every decision's path, else topdown's
// own implementation. Built-ins whose result is not a function of their
// arguments, that need the evaluator (print, trace) or yield several values
// (relations) are not supported.
func vmBuiltinFor(name string) (*vmBuiltin, error) {
	if g := vmGuarded(name); g != nil { // limits.go
		return &vmBuiltin{name: name, native: g}, nil
	}
	if native := nativeBuiltin(name); native != nil {
		return &vmBuiltin{name: name, native: native}, nil
	}
	decl, ok := ast.BuiltinMap[name]
	if !ok {
		return nil, fmt.Errorf("%w: built-in %s", errVMUnsupported, name)
	}
	switch {
	case decl.Nondeterministic, decl.Relation:
		return nil, fmt.Errorf("%w: built-in %s", errVMUnsupported, name)
	}
	switch name {
	case "print", "internal.print", "trace", "opa.runtime", "rego.metadata.chain", "rego.metadata.rule", "internal.test_case":
		return nil, fmt.Errorf("%w: built-in %s", errVMUnsupported, name)
	}
	fn := topdown.GetBuiltin(name)
	if fn == nil {
		return nil, fmt.Errorf("%w: built-in %s has no implementation", errVMUnsupported, name)
	}
	return &vmBuiltin{name: name, fn: fn}, nil
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
// and returns f: the value of the entry point is then f's result, without
// building the result set. nil for any other plan.
func (c *vmCompiler) directCall(p *ir.Plan) *vmFunc {
	if len(p.Blocks) != 1 || len(p.Blocks[0].Stmts) != 5 {
		return nil
	}
	st := p.Blocks[0].Stmts
	call, ok1 := st[0].(*ir.CallStmt)
	assign, ok2 := st[1].(*ir.AssignVarStmt)
	mk, ok3 := st[2].(*ir.MakeObjectStmt)
	ins, ok4 := st[3].(*ir.ObjectInsertStmt)
	add, ok5 := st[4].(*ir.ResultSetAddStmt)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || len(call.Args) != 2 {
		return nil
	}
	local := func(o ir.Operand) (ir.Local, bool) {
		v, err := c.operand(o)
		return ir.Local(v.local), err == nil && v.c == nil
	}
	in, ok := local(call.Args[0])
	data, okd := local(call.Args[1])
	src, oks := local(assign.Source)
	val, okv := local(ins.Value)
	key, err := c.operand(ins.Key)
	fn := c.funcs[call.Func]
	if !ok || !okd || !oks || !okv || err != nil || fn == nil || in != ir.Input || data != ir.Data ||
		src != call.Result || val != assign.Target || ins.Object != mk.Target || add.Value != mk.Target ||
		key.c == nil || key.c.Value.Compare(ast.String("result")) != 0 {
		return nil
	}
	return fn
}
