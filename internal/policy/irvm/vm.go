// Package irvm plans Rego with OPA's planner and runs the plan: a small
// interpreter of OPA's intermediate representation (package ir), the plan
// OPA compiles to WebAssembly. internal/policy evaluates its decisions with
// it; irvm imports no package of this module (docs/design.md).
//
// The policy stays the Rego files; the planner turns the rules into
// functions of straight-line statements (look up a key, compare, call a
// built-in, break out of a block), and this package runs them over ast
// values. It does what topdown does without its general machinery
// (unification, bindings, a virtual-document cache, an evaluation tree per
// rule), and so allocates and branches far less.
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
//     per evaluation and remembered (as Wasm memoizes it). An undefined
//     argument (no input) is passed on, as Wasm does.
//   - A lookup in the data document by a number key uses its string
//     (data.a[2] is data.a["2"]), as topdown's storage paths do.
//   - Built-ins are topdown's own implementations (topdown.GetBuiltin), called
//     as topdown calls them; the few on every decision's path are copied
//     here to skip the call's setup. The caller adds its own (Config.Natives:
//     internal/policy's crm.user and crm.record).
//   - The caller may hand in values it has not built (Lazy: the decision's
//     input, a fact): lookups go to the Lazy, any other use builds it.
//   - An error of a built-in aborts the evaluation (StrictBuiltinErrors, as
//     for topdown), so does a conflict (two values for one complete rule,
//     two values for one object key).
//   - A WithStmt replaces a whole document (`with input as x`) while its
//     block runs, in a memo frame of its own (as Wasm's memoize push and pop):
//     no function result from outside it is used inside, none from inside
//     outside.
//
// What the planner or this interpreter does not support — `with` of a part
// of a document (a WithStmt with a path: `with input.a as x`),
// dynamic calls into data (CallDynamicStmt), non-deterministic built-ins,
// print, relations (walk) — is refused by New (ErrUnsupported); the caller
// then evaluates with topdown.
package irvm

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

// control results of executing a block: >= 0 is a break out of that many
// enclosing blocks (0: the innermost; an undefined statement is a break 0).
const (
	ctlNext   = -1 // the block ran to its end
	ctlReturn = -2 // a ReturnLocalStmt ran
)

// Native is a built-in implemented for the interpreter, called with the
// evaluation's Call and its arguments (never nil); a nil result is
// undefined. An error aborts the evaluation as a built-in error.
type Native func(c *Call, args []*ast.Term) (*ast.Term, error)

// Call is what a Native gets of the evaluation calling it.
type Call struct {
	Context context.Context
	// Env is EvalOpts.Env, as the caller passed it.
	Env    any
	Cancel topdown.Cancel
	// arena is EvalOpts.Arena (nil: the heap)
	arena *Arena
}

// Lazy is a value the caller hands to the interpreter without building it
// (internal/policy's decision input and facts): a lookup (DotStmt) asks
// Lookup; any other use (a comparison with a collection, a built-in's
// argument, an iteration, the result) uses Materialize, the ast value it
// stands for, which is an object or an array (a Lazy never equals a string,
// number, boolean or null). Its ast.Value methods must behave as that
// value's (should one escape).
type Lazy interface {
	ast.Value
	// Lookup is the value at key; nil when undefined.
	Lookup(key *ast.Term) *ast.Term
	// Materialize is the term of the value it stands for (built once).
	Materialize() *ast.Term
}

// Members is a Lazy array that answers `x in a` (internal.member_2) and
// count(a) without being built (internal/policy/regovalue.StringArray).
type Members interface {
	Lazy
	// Contains tells whether an element equals x (never a Lazy).
	Contains(x *ast.Term) bool
	// Len is the number of elements.
	Len() int
}

// Config is what New needs besides the plan.
type Config struct {
	// Entrypoint is the name of the plan to run: the entry point's path
	// ("crmauthz/decision") for a plan of Plan, "eval" for a query's.
	Entrypoint string
	// Natives are the caller's built-ins by name, used before irvm's and
	// topdown's implementations.
	Natives map[string]Native
}

// DefaultConfig is the configuration for the plan of a query.
func DefaultConfig() Config { return Config{Entrypoint: "eval"} }

// EvalOpts are the arguments of one evaluation.
type EvalOpts struct {
	// Input is the input document; nil when there is none. Its Value may
	// be a Lazy.
	Input *ast.Term
	// Env is handed to the Natives (Call.Env).
	Env any
	// Deadline, when set, stops the evaluation with ErrDeadline.
	Deadline time.Time
	// LazyResult lets Eval return a Lazy as the value of a plan that
	// returns one function's result (Program.DirectCall): an object
	// literal (record.go) or a value of the caller's, not built, which the
	// caller reads by Lookup (or Materialize) before it reuses anything it
	// handed in. Otherwise the value is built.
	LazyResult bool
	// Arena, when set, is where the evaluation makes its records (object
	// literals, unions: arena.go); the caller resets it once it has read
	// the result, and not before. Nil: the heap.
	Arena *Arena
	// Timeout, when set, stops the evaluation with ErrDeadline once it has
	// run that long, counted from its clockStart-th step (function call or
	// iteration): a short evaluation (a decision of the default policy runs
	// about twenty) never reads the clock. The clock is checked every 1,024
	// steps in any case, so a bound is never exact to within the first
	// steps' time.
	Timeout time.Duration
}

// clockStart is the step at which an evaluation with EvalOpts.Timeout reads
// the clock to start it.
const clockStart = 64

// ErrDeadline is the error of an evaluation past EvalOpts.Deadline.
var ErrDeadline = errors.New("the evaluation ran past its deadline")

// Program is one plan (entry point) ready to run.
type Program struct {
	vmCode
	plan []vmBlock
	// direct is 1 + the function whose result is all the plan returns (see
	// directCall); 0: none
	direct int32
	// directArgs are input and data, the arguments of direct
	directArgs []vmOperand
	nlocals    int
	nmemo      int
	data       *ast.Term // the data document: empty (the engine has no base documents)
	// lenient makes a built-in's error undefined instead of aborting, as
	// topdown without StrictBuiltinErrors. Only this package's tests set it
	// (OPA's non-strict cases): a program of New is always strict, so every
	// decision fails closed.
	lenient bool
	states  sync.Pool // *vmState
}

// DirectCall tells whether the plan only returns one function's result,
// which Eval then calls without building the result set (see directCall).
func (p *Program) DirectCall() bool { return p.direct > 0 }

// Builtins are the names of the built-in functions the program calls.
func (p *Program) Builtins() []string {
	names := make([]string, len(p.builtins))
	for i, b := range p.builtins {
		names[i] = b.name
	}
	return names
}

// OwnBuiltin tells whether the interpreter has its own implementation of
// the built-in name (used unless the caller's Natives has one): those keep
// nothing of their arguments past the call.
func OwnBuiltin(name string) bool {
	fn, _ := nativeBuiltin(name)
	return fn != nil
}

// ErrUnsupported marks a plan the interpreter does not run.
var ErrUnsupported = errors.New("not supported by the IR evaluator")

// vmState is the mutable state of one evaluation; states are pooled.
type vmState struct {
	vmCode  // the program's
	prog    *Program
	call    Call        // ctx, env, cancel of this evaluation
	stack   []*ast.Term // locals of the active frames
	sp      int
	memo    []*ast.Term
	memoSet []uint32 // == gen when memo[i] is set in this evaluation's current memo frame
	gen     uint32
	// lastGen is the last generation handed out (to an evaluation or a
	// with's memo frame, execWith); the next is lastGen+1
	lastGen uint32
	results []*ast.Term
	bargs   []*ast.Term // built-in operands
	steps   int
	// deadline ends the evaluation with ErrDeadline (EvalOpts.Deadline,
	// or Timeout from the clockStart-th step)
	deadline time.Time
	timeout  time.Duration
	// generic built-ins
	out   *ast.Term
	nout  int
	iter  func(*ast.Term) error
	cache builtins.Cache
}

func (p *Program) state() *vmState {
	if st, ok := p.states.Get().(*vmState); ok {
		return st
	}
	st := &vmState{vmCode: p.vmCode, prog: p, stack: make([]*ast.Term, 256), memo: make([]*ast.Term, p.nmemo),
		memoSet: make([]uint32, p.nmemo), call: Call{Cancel: topdown.NewCancel()}}
	st.iter = func(t *ast.Term) error {
		st.out = t
		st.nout++
		return nil
	}
	return st
}

// Eval runs the plan and returns the value of its single result
// ({"result": x} → x); nil when the plan yields no result. An error of the
// interpreter itself (a panic, a plan it cannot have been given) is an
// *InternalError, never an answer.
func (p *Program) Eval(ctx context.Context, opts EvalOpts) (result ast.Value, err error) {
	defer func() {
		if r := recover(); r != nil { // a bug of the interpreter: never an answer
			result, err = nil, vmBug("panic: %v", r)
		}
	}()
	st := p.begin(ctx, opts)
	frame := st.push(p.nlocals)
	frame[ir.Input] = opts.Input
	frame[ir.Data] = p.data
	if p.direct > 0 {
		var t *ast.Term
		t, err = st.callFunc(p.direct-1, frame, p.directArgs)
		st.pop(p.nlocals)
		switch {
		case t != nil && opts.LazyResult:
			result = t.Value
		case t != nil:
			result = st.materialize(t).Value
		}
		st.release()
		return result, err
	}
	err = st.runPlan(frame)
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

// EvalQuery runs the plan of a query and returns its result set: one object
// of the query's bindings per result, as OPA's Wasm target answers.
func (p *Program) EvalQuery(ctx context.Context, opts EvalOpts) (rs []*ast.Term, err error) {
	defer func() {
		if r := recover(); r != nil {
			rs, err = nil, vmBug("panic: %v", r)
		}
	}()
	st := p.begin(ctx, opts)
	frame := st.push(p.nlocals)
	frame[ir.Input] = opts.Input
	frame[ir.Data] = p.data
	err = st.runPlan(frame)
	st.pop(p.nlocals)
	if err == nil {
		rs = append(rs, st.results...)
	}
	st.release()
	return rs, err
}

// begin readies a pooled state for one evaluation.
func (p *Program) begin(ctx context.Context, opts EvalOpts) *vmState {
	st := p.state()
	st.call.Context, st.call.Env, st.deadline, st.timeout = ctx, opts.Env, opts.Deadline, opts.Timeout
	st.call.arena = opts.Arena
	st.gen = st.nextGen()
	st.results = st.results[:0]
	st.steps = 0
	return st
}

// nextGen is a generation not used before in st's memo (every memo is
// forgotten when the counter wraps).
func (st *vmState) nextGen() uint32 {
	st.lastGen++
	if st.lastGen == 0 {
		clear(st.memoSet)
		st.lastGen = 1
	}
	return st.lastGen
}

// runPlan runs the blocks of the plan in frame; the results are in
// st.results.
func (st *vmState) runPlan(frame []*ast.Term) error {
	for _, b := range st.prog.plan {
		ctl, err := st.block(frame, b)
		if err != nil {
			return err
		}
		if ctl > 0 || ctl == ctlReturn {
			return vmBug("illegal control flow out of a plan block (%d)", ctl)
		}
	}
	return nil
}

// release drops the evaluation's references and pools the state.
func (st *vmState) release() {
	clear(st.results)
	clear(st.bargs)
	st.call.Context, st.call.Env, st.call.arena, st.out = nil, nil, nil, nil
	clear(st.cache) // kept: a map made per evaluation is an allocation
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
	if o < 0 {
		return st.consts[^o]
	}
	return st.materialize(fr[o])
}

// raw reads an operand as it is, the input possibly unbuilt.
func (st *vmState) raw(fr []*ast.Term, o vmOperand) *ast.Term {
	if o < 0 {
		return st.consts[^o]
	}
	return fr[o]
}

// location is the location of s; nil when it has none.
func (st *vmState) location(s *vmStmt) *ast.Location {
	var loc int32
	switch s.op {
	case opCall, opBuiltin, opAssignVarOnce, opCallNF, opBuiltinNF, opNotCallNF, opSetOnce:
		loc = int32(s.b)
	case opObjectInsertOnce, opObjectMerge:
		loc = s.ref
	}
	if loc == 0 {
		return nil
	}
	return st.locs[loc-1]
}

// equal is a.Equal(b) for terms that may be Lazy (objects and arrays): one
// of those never equals a value that is not a collection, which is told
// without building it (a policy's "not subject" compares the user's object
// with false); otherwise both are materialized.
func (st *vmState) equal(a, b *ast.Term) bool {
	la, lb := isLazy(a.Value), isLazy(b.Value)
	if la || lb {
		if (la && !lb && !isCollection(b.Value)) || (lb && !la && !isCollection(a.Value)) {
			return false
		}
		a, b = st.materialize(a), st.materialize(b)
	}
	return a.Equal(b)
}

func isCollection(v ast.Value) bool {
	switch v.(type) {
	case ast.Object, *ast.Array, ast.Set:
		return true
	}
	return false
}

func isLazy(v ast.Value) bool {
	_, ok := v.(Lazy)
	return ok
}

// materialize returns t, or the ast value t stands for when it is Lazy.
func (st *vmState) materialize(t *ast.Term) *ast.Term { return materialize(t) }

func materialize(t *ast.Term) *ast.Term {
	if t == nil {
		return nil
	}
	if l, ok := t.Value.(Lazy); ok {
		return l.Materialize()
	}
	return t
}

// tick counts work, and every so often checks for cancellation.
func (st *vmState) tick() error {
	st.steps++
	if st.steps == clockStart && st.timeout > 0 {
		if d := time.Now().Add(st.timeout); st.deadline.IsZero() || d.Before(st.deadline) {
			st.deadline = d
		}
	}
	if st.steps&1023 == 0 {
		if err := st.call.Context.Err(); err != nil {
			return err
		}
		if !st.deadline.IsZero() && time.Now().After(st.deadline) {
			return ErrDeadline
		}
	}
	return nil
}

// block runs the statements of b in the frame fr. Each kind of statement
// has its own method (vmexec.go), as OPA's Wasm compiler has one case per IR
// statement; a method returns ctlNext to go on with the next statement, or
// the control result that ends the block. The switch (a jump table) calls
// them directly, which costs less than an indirect call through a table.
func (st *vmState) block(fr []*ast.Term, b vmBlock) (int, error) {
	code := st.code[b.start:b.end]
	for i := range code {
		s := &code[i]
		var (
			ctl int
			err error
		)
		switch s.op {
		case opNop:
			continue
		case opReturnLocal:
			return ctlReturn, nil
		case opCall, opCallNF, opCallCopy, opNotCallNF:
			ctl, err = st.execCall(fr, s)
		case opBuiltin, opBuiltinNF:
			ctl, err = st.execBuiltin(fr, s)
		case opBlock, opElseChain:
			ctl, err = st.execBlock(fr, s)
		case opBreak:
			return int(s.ref), nil
		case opDot, opDotEq, opDotNe, opDotCopy:
			ctl = st.execDot(fr, s)
		case opDotData:
			ctl = st.execDotData(fr, s)
		case opLen:
			ctl = st.execLen(fr, s)
		case opScan:
			ctl, err = st.scan(fr, s)
		case opNot:
			ctl, err = st.execNot(fr, s)
		case opWith:
			ctl, err = st.execWith(fr, s)
		case opAssignVar:
			fr[s.target] = st.raw(fr, s.a)
			continue
		case opAssignVarOnce:
			ctl, err = st.execAssignVarOnce(fr, s)
		case opResetLocal:
			fr[s.target] = nil
			continue
		case opConst:
			fr[s.target] = st.consts[^s.a]
			continue
		case opMakeArray:
			fr[s.target] = ast.NewTerm(ast.NewArrayWithCapacity(int(s.b)))
			continue
		case opMakeObject:
			fr[s.target] = ast.NewTerm(ast.NewObject())
			continue
		case opMakeSet:
			fr[s.target] = ast.NewTerm(ast.NewSet())
			continue
		case opEqual, opNotEqual:
			ctl = st.execEqual(fr, s)
		case opRecord:
			ctl, err = st.execRecord(fr, s)
		case opIsArray, opIsObject, opIsSet:
			ctl = st.execIsType(fr, s)
		case opIsDefined:
			ctl = defined(fr[s.target] != nil)
		case opIsUndefined:
			ctl = defined(fr[s.target] == nil)
		case opArrayAppend:
			ctl, err = st.execArrayAppend(fr, s)
		case opObjectInsert, opObjectInsertOnce:
			ctl, err = st.execObjectInsert(fr, s)
		case opObjectMerge:
			ctl, err = st.execObjectMerge(fr, s)
		case opSetAdd:
			ctl, err = st.execSetAdd(fr, s)
		case opResultSetAdd:
			st.execResultSetAdd(fr, s)
			continue
		case opAssign2: // fused statements (fuse.go)
			fr[s.target] = st.raw(fr, s.a)
			fr[s.ref] = st.raw(fr, s.b)
			continue
		case opSetOnce:
			fr[s.n] = st.raw(fr, s.a)
			ctl, err = st.execAssignVarOnce(fr, s)
		default:
			return 0, vmBug("unknown operation %d", s.op)
		}
		if ctl != ctlNext || err != nil {
			if err != nil {
				return 0, err
			}
			return ctl, nil
		}
	}
	return ctlNext, nil
}

// InternalError is an error of the interpreter itself (a plan it cannot have been
// given, a panic): not the policy's. Decide then asks topdown instead.
type InternalError struct{ msg string }

func (e *InternalError) Error() string { return "IR evaluation: " + e.msg }

func vmBug(format string, args ...any) error {
	return &InternalError{msg: fmt.Sprintf(format, args...)}
}
