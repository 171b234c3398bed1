package policy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// The decision is evaluated by a small interpreter of OPA's intermediate
// representation (package ir): the plan OPA's own planner makes of the
// policy, the one OPA compiles to WebAssembly. The policy stays the Rego
// files; the planner turns the rules into functions of straight-line
// statements (look up a key, compare, call a built-in, break out of a block),
// and this file runs them over ast values. It does what topdown does without
// its general machinery (unification, bindings, a virtual-document cache, an
// evaluation tree per rule), and so allocates and branches far less.
//
// Semantics follow OPA's Wasm compiler (internal/compiler/wasm), the
// reference for the IR:
//
//   - A statement that is undefined leaves the innermost enclosing block (a
//     "br 0"); BreakStmt{Index: n} leaves n+1 blocks.
//   - The blocks of a BlockStmt, of a NotStmt, of a plan and all but the last
//     block of a function are blocks in that sense; a ScanStmt is two: its
//     body (leaving it goes on with the next element) inside the scan itself
//     (leaving that goes on after the scan).
//   - A function whose only parameters are input and data is evaluated once
//     per evaluation and remembered (as Wasm memoizes it).
//   - Built-ins are topdown's own implementations (topdown.GetBuiltin), called
//     as topdown calls them; the few on every decision's path are copied
//     here to skip the call's setup. crm.user and crm.record read the Facts.
//   - An error of a built-in aborts the evaluation (StrictBuiltinErrors, as
//     for topdown), so does a conflict (two values for one complete rule,
//     two values for one object key).
//
// What the planner or this interpreter does not support — `with` (WithStmt),
// dynamic calls into data (CallDynamicStmt), non-deterministic built-ins,
// print, relations (walk) — makes the policy fall back to topdown whole
// (see newVMProgram); the Engine then works as before.

// control results of executing a block: >= 0 is a break out of that many
// enclosing blocks (0: the innermost; an undefined statement is a break 0).
const (
	ctlNext   = -1 // the block ran to its end
	ctlReturn = -2 // a ReturnLocalStmt ran
)

type vmOp uint8

const (
	opNop vmOp = iota
	opReturnLocal
	opCall
	opBuiltin
	opBlock
	opBreak
	opDot
	opLen
	opScan
	opNot
	opAssignVar
	opAssignVarOnce
	opResetLocal
	opConst
	opMakeArray
	opMakeObject
	opMakeSet
	opEqual
	opNotEqual
	opIsArray
	opIsObject
	opIsSet
	opIsDefined
	opIsUndefined
	opArrayAppend
	opObjectInsert
	opObjectInsertOnce
	opObjectMerge
	opSetAdd
	opResultSetAdd
)

// vmOperand is a local (local >= 0) or a constant.
type vmOperand struct {
	local int32
	c     *ast.Term
}

type vmStmt struct {
	op     vmOp
	a, b   vmOperand // source/a/key/value, b/value
	target int32     // target local, or the array/object/set of an insert
	key    int32     // ScanStmt key local
	value  int32     // ScanStmt value local
	n      int32     // BreakStmt index
	fn     *vmFunc
	bi     *vmBuiltin
	args   []vmOperand
	blocks []*vmBlock
	loc    *ast.Location
}

type vmBlock struct {
	stmts []vmStmt
}

type vmFunc struct {
	name    string
	params  []int32
	ret     int32
	blocks  []*vmBlock
	nlocals int
	memo    int // index in the memo table; -1: not memoized
}

// vmBuiltin is a built-in function a plan calls.
type vmBuiltin struct {
	name   string
	native func(st *vmState, args []*ast.Term) (*ast.Term, error) // nil: fn
	fn     topdown.BuiltinFunc
}

// vmProgram is one plan (entry point) ready to run.
type vmProgram struct {
	plan   []*vmBlock
	direct *vmFunc // the plan only returns this function's result (see directCall)
	// directArgs are input and data, the arguments of direct
	directArgs []vmOperand
	nlocals    int
	nmemo      int
	data       *ast.Term // the data document: empty (crmauthz has no base documents)
	states     sync.Pool // *vmState
}

// errVMUnsupported marks a plan the interpreter does not run.
var errVMUnsupported = errors.New("not supported by the IR evaluator")

// vmState is the mutable state of one evaluation; states are pooled.
type vmState struct {
	prog    *vmProgram
	ctx     context.Context
	facts   Facts
	intern  internTable
	stack   []*ast.Term // locals of the active frames
	sp      int
	memo    []*ast.Term
	memoSet []uint32 // == gen when memo[i] is set for this evaluation
	gen     uint32
	results []*ast.Term
	args    []*ast.Term // built-in operands
	steps   int
	// deadline ends the evaluation with ErrEvalTimeout (Config.EvalTimeout)
	deadline time.Time
	// generic built-ins
	out    *ast.Term
	nout   int
	iter   func(*ast.Term) error
	cancel topdown.Cancel
	cache  builtins.Cache
	// the input of this evaluation (see vmInput)
	inTerm, resTerm *ast.Term
	lazy            *vmInput
}

func (p *vmProgram) state() *vmState {
	if st, ok := p.states.Get().(*vmState); ok {
		return st
	}
	st := &vmState{prog: p, stack: make([]*ast.Term, 256), memo: make([]*ast.Term, p.nmemo),
		memoSet: make([]uint32, p.nmemo), cancel: topdown.NewCancel()}
	st.iter = func(t *ast.Term) error {
		st.out = t
		st.nout++
		return nil
	}
	return st
}

// eval runs the plan with input and returns the value of the plan's single
// result ({"result": x} → x); nil when the plan yields no result.
//
// The input is given as the Input and its builder: the interpreter reads its
// fields directly (see vmInput) and builds the ast object only when the
// policy uses the input otherwise than by its fields.
func (p *vmProgram) eval(ctx context.Context, deadline time.Time, facts Facts, intern internTable, in Input, build func(Input) ast.Value) (result ast.Value, err error) {
	defer func() {
		if r := recover(); r != nil { // a bug of the interpreter: never an answer
			result, err = nil, vmBug("panic: %v", r)
		}
	}()
	st := p.state()
	st.ctx, st.facts, st.intern, st.deadline = ctx, facts, intern, deadline
	st.gen++
	if st.gen == 0 { // wrapped: forget every memo
		clear(st.memoSet)
		st.gen = 1
	}
	st.results = st.results[:0]
	st.steps = 0
	st.cache = nil
	lazy := newVMInput(in, build)
	st.inTerm, st.resTerm, st.lazy = &lazy.top, &lazy.res, lazy
	frame := st.push(p.nlocals)
	frame[ir.Input] = st.inTerm
	frame[ir.Data] = p.data
	if p.direct != nil {
		var t *ast.Term
		t, err = st.callFunc(p.direct, frame, p.directArgs)
		st.pop(p.nlocals)
		if t != nil {
			result = st.materialize(t).Value
		}
		st.release()
		return result, err
	}
	for _, b := range p.plan {
		var ctl int
		if ctl, err = st.block(frame, b); err != nil {
			break
		}
		if ctl > 0 || ctl == ctlReturn {
			err = vmBug("illegal control flow out of a plan block (%d)", ctl)
			break
		}
	}
	st.pop(p.nlocals)
	if err == nil {
		switch len(st.results) {
		case 0:
		case 1:
			obj, ok := st.results[0].Value.(ast.Object)
			if !ok || obj.Len() != 1 {
				err = vmBug("malformed result")
				break
			}
			if t := obj.Get(ast.InternedTerm("result")); t != nil {
				result = t.Value
			}
		default:
			err = fmt.Errorf("%d results, want one", len(st.results))
		}
	}
	st.release()
	return result, err
}

// release drops the evaluation's references and pools the state.
func (st *vmState) release() {
	clear(st.results)
	clear(st.args)
	st.ctx, st.facts, st.out, st.cache = nil, nil, nil, nil
	st.inTerm, st.resTerm, st.lazy = nil, nil, nil
	st.prog.states.Put(st)
}

// push returns a cleared frame of n locals on the stack.
func (st *vmState) push(n int) []*ast.Term {
	if st.sp+n > len(st.stack) {
		// Frames below keep the old array; new ones go to a bigger one.
		st.stack = make([]*ast.Term, max(2*len(st.stack), n+256))
		st.sp = 0
	}
	f := st.stack[st.sp : st.sp+n : st.sp+n]
	st.sp += n
	return f
}

func (st *vmState) pop(n int) {
	if st.sp >= n {
		clear(st.stack[st.sp-n : st.sp])
		st.sp -= n
	} else {
		st.sp = 0 // a frame on an older array
	}
}

// get reads an operand for any use but a lookup (Dot), a call's argument
// or a copy: the input is its ast value there.
func (st *vmState) get(fr []*ast.Term, o vmOperand) *ast.Term {
	if o.c != nil {
		return o.c
	}
	return st.materialize(fr[o.local])
}

// raw reads an operand as it is, the input possibly unbuilt.
func (st *vmState) raw(fr []*ast.Term, o vmOperand) *ast.Term {
	if o.c != nil {
		return o.c
	}
	return fr[o.local]
}

// equal is a.Equal(b) for terms that may stand for the input or a fact
// (objects): one of those never equals a value that is not an object, which
// is told without building it (the policy's "not subject" compares the
// user's object with false); otherwise both are materialized.
func (st *vmState) equal(a, b *ast.Term) bool {
	la, lb := isLazy(a.Value), isLazy(b.Value)
	if la || lb {
		_, oa := a.Value.(ast.Object)
		_, ob := b.Value.(ast.Object)
		if (la && !lb && !ob) || (lb && !la && !oa) {
			return false
		}
		a, b = st.materialize(a), st.materialize(b)
	}
	return a.Equal(b)
}

func isLazy(v ast.Value) bool {
	switch v.(type) {
	case lazyValue, *factObject:
		return true
	}
	return false
}

// materialize returns t, or the ast value t stands for: the input, or a
// fact (see vmInput, factObject).
func (st *vmState) materialize(t *ast.Term) *ast.Term {
	if t == nil {
		return nil
	}
	switch v := t.Value.(type) {
	case lazyValue:
		if v.resource {
			return v.v.resource()
		}
		return v.v.object()
	case *factObject:
		return v.object()
	}
	return t
}

// tick counts work, and every so often checks for cancellation.
func (st *vmState) tick() error {
	st.steps++
	if st.steps&1023 == 0 {
		if err := st.ctx.Err(); err != nil {
			return err
		}
		if !st.deadline.IsZero() && time.Now().After(st.deadline) {
			return ErrEvalTimeout
		}
	}
	return nil
}

// block runs the statements of b in the frame fr.
func (st *vmState) block(fr []*ast.Term, b *vmBlock) (int, error) {
	for i := range b.stmts {
		s := &b.stmts[i]
		switch s.op {
		case opNop:
		case opReturnLocal:
			return ctlReturn, nil
		case opCall:
			t, err := st.call(fr, s)
			if err != nil {
				return 0, err
			}
			if t == nil {
				return 0, nil
			}
			fr[s.target] = t
		case opBuiltin:
			t, err := st.builtin(fr, s)
			if err != nil {
				return 0, err
			}
			if t == nil {
				return 0, nil
			}
			fr[s.target] = t
		case opBlock:
			for _, inner := range s.blocks {
				ctl, err := st.block(fr, inner)
				if err != nil {
					return 0, err
				}
				switch {
				case ctl == ctlReturn:
					return ctlReturn, nil
				case ctl > 0:
					return ctl - 1, nil
				}
			}
		case opBreak:
			return int(s.n), nil
		case opDot:
			src, key := st.raw(fr, s.a), st.get(fr, s.b)
			if src == nil || key == nil {
				return 0, nil
			}
			var t *ast.Term
			switch v := src.Value.(type) {
			case *factObject:
				t = v.get(key)
			case lazyValue:
				if v.resource {
					t = v.v.resourceField(key)
				} else {
					t = v.v.field(key, &v.v.res)
				}
			default:
				t = dot(src, key)
			}
			if t == nil {
				return 0, nil
			}
			fr[s.target] = t
		case opLen:
			src := st.get(fr, s.a)
			if src == nil {
				return 0, nil
			}
			fr[s.target] = ast.InternedTerm(length(src.Value))
		case opScan:
			ctl, err := st.scan(fr, s)
			if err != nil || ctl != ctlNext {
				return ctl, err
			}
		case opNot:
			ctl, err := st.block(fr, s.blocks[0])
			if err != nil {
				return 0, err
			}
			switch {
			case ctl == ctlNext: // the negated block held: not fails
				return 0, nil
			case ctl == ctlReturn:
				return ctlReturn, nil
			case ctl > 0:
				return ctl - 1, nil
			}
		case opAssignVar:
			fr[s.target] = st.raw(fr, s.a)
		case opAssignVarOnce:
			src := st.raw(fr, s.a)
			if src == nil {
				return 0, nil
			}
			if cur := fr[s.target]; cur != nil && !st.equal(cur, src) {
				return 0, conflictError(s.loc, "complete rules must not produce multiple outputs")
			}
			fr[s.target] = src
		case opResetLocal:
			fr[s.target] = nil
		case opConst:
			fr[s.target] = s.a.c
		case opMakeArray:
			fr[s.target] = ast.NewTerm(ast.NewArrayWithCapacity(int(s.n)))
		case opMakeObject:
			fr[s.target] = ast.NewTerm(ast.NewObject())
		case opMakeSet:
			fr[s.target] = ast.NewTerm(ast.NewSet())
		case opEqual, opNotEqual:
			a, b := st.raw(fr, s.a), st.raw(fr, s.b)
			if a == nil || b == nil || st.equal(a, b) != (s.op == opEqual) {
				return 0, nil
			}
		case opIsArray, opIsObject, opIsSet:
			src := st.get(fr, s.a)
			if src == nil {
				return 0, nil
			}
			var ok bool
			switch src.Value.(type) {
			case *ast.Array:
				ok = s.op == opIsArray
			case ast.Object:
				ok = s.op == opIsObject
			case ast.Set:
				ok = s.op == opIsSet
			}
			if !ok {
				return 0, nil
			}
		case opIsDefined:
			if fr[s.target] == nil {
				return 0, nil
			}
		case opIsUndefined:
			if fr[s.target] != nil {
				return 0, nil
			}
		case opArrayAppend:
			arr, ok := fr[s.target].Value.(*ast.Array)
			v := st.get(fr, s.a)
			if !ok || v == nil {
				return 0, vmBug("ArrayAppendStmt on a non-array")
			}
			fr[s.target] = ast.NewTerm(arr.Append(v))
		case opObjectInsert, opObjectInsertOnce:
			obj, ok := fr[s.target].Value.(ast.Object)
			k, v := st.get(fr, s.a), st.get(fr, s.b)
			if !ok || k == nil || v == nil {
				return 0, vmBug("ObjectInsertStmt on a non-object")
			}
			if s.op == opObjectInsertOnce {
				if cur := obj.Get(k); cur != nil && !cur.Equal(v) {
					return 0, conflictError(s.loc, "object keys must be unique")
				}
			}
			obj.Insert(k, v)
		case opObjectMerge:
			a, b := st.get(fr, s.a), st.get(fr, s.b)
			ao, aok := valueOf(a).(ast.Object)
			bo, bok := valueOf(b).(ast.Object)
			if !aok || !bok {
				return 0, conflictError(s.loc, "object merge of a non-object")
			}
			m, ok := ao.Merge(bo)
			if !ok {
				return 0, conflictError(s.loc, "object keys must be unique")
			}
			fr[s.target] = ast.NewTerm(m)
		case opSetAdd:
			set, ok := fr[s.target].Value.(ast.Set)
			v := st.get(fr, s.a)
			if !ok || v == nil {
				return 0, vmBug("SetAddStmt on a non-set")
			}
			set.Add(v)
		case opResultSetAdd:
			if t := st.materialize(fr[s.target]); t != nil {
				dup := false
				for _, r := range st.results {
					if r.Equal(t) {
						dup = true
					}
				}
				if !dup {
					st.results = append(st.results, t)
				}
			}
		default:
			return 0, vmBug("unknown operation %d", s.op)
		}
	}
	return ctlNext, nil
}

// vmError is an error of the interpreter itself (a plan it cannot have been
// given, a panic): not the policy's. Decide then asks topdown instead.
type vmError struct{ msg string }

func (e *vmError) Error() string { return "IR evaluation: " + e.msg }

func vmBug(format string, args ...any) error {
	return &vmError{msg: fmt.Sprintf(format, args...)}
}
