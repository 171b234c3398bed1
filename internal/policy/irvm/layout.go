package irvm

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// The program's layout in memory (docs/design.md, "internal/policy/irvm"):
// statements, blocks, functions and built-ins as vm.go runs them. A cold
// decision's cost is mostly loads of these (BENCHMARKS.md, "Session 6: the
// cold decision"), hence their sizes.

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
	opDotData // DotStmt on the data document (see execDotData)
	opWith    // WithStmt of a whole document (see execWith)
	// fused statements (fuse.go)
	opDotEq
	opDotNe
	opDotCopy
	opCallNF
	opCallCopy
	opBuiltinNF
	opNotCallNF
	opAssign2
	opSetOnce
	opElseChain
	opRecord // an object literal (record.go)
)

// vmOperand is a local (>= 0) or a constant: ^i is vmCode.consts[i].
type vmOperand int32

// vmStmt is one statement of the plan: 16 bytes, four to a cache line. A
// decision runs about a hundred of them, mostly with its caches cold (the
// HTTP server and the kernel ran in between), so their size is loads from
// memory; what only a few kinds of statements use sits in the vmCode tables
// they index (docs/design.md, "internal/policy/irvm (the IR interpreter)"). The fields mean what
// the kind of statement makes of them:
//
//	kind                  target   a        b         ref          n
//	CallStmt (function)   result   1st arg  location  vmCode.funcs  args
//	CallStmt (built-in)   result   1st arg  location  .builtins     args
//	BlockStmt                                #blocks   1st block
//	NotStmt                                           block
//	WithStmt              local    value              block
//	ScanStmt              key      source   value     block
//	BreakStmt                                         index
//	AssignVarOnceStmt     target   source   location  function (-1: a plan's)
//	ObjectInsertOnceStmt  object   key      value     location
//	ObjectMergeStmt       target   a        b         location
//	opRecord              object   1st val            recKeys      values
//	MakeArrayStmt         target            capacity
//
// and for the others target is the target local (the array, object or set
// of an insert; the source of Is(Un)DefinedStmt and ResultSetAddStmt), a
// and b the operands. A CallStmt's arguments are vmCode.args[a:a+n]. A
// location is vmCode.locs[loc-1]; 0: none.
type vmStmt struct {
	op     vmOp
	n      uint8
	target uint16
	a, b   vmOperand
	ref    int32
}

// maxLocals and maxArgs bound what a vmStmt holds: a plan with more locals
// in a function, or a call with more arguments, is not supported (topdown
// evaluates it).
const (
	maxLocals = 1<<16 - 1
	maxArgs   = 1<<8 - 1
)

// vmBlock is a block: the statements vmCode.code[start:end].
type vmBlock struct{ start, end int32 }

// vmCode is the compiled program: every statement in one array (a block is
// a range of it), and the tables the statements index.
type vmCode struct {
	code     []vmStmt
	blocks   []vmBlock // the blocks of BlockStmt, NotStmt and ScanStmt
	consts   []*ast.Term
	args     []vmOperand // the arguments of CallStmts
	funcs    []vmFunc
	finfo    []vmFuncInfo // beside funcs: what only an error needs
	params   []int32      // the functions' parameters (vmFunc.params)
	fblocks  []vmBlock    // the functions' blocks (vmFunc.blocks)
	builtins []*vmBuiltin
	locs     []*ast.Location
	recKeys  [][]*ast.Term // the keys of each opRecord
}

// vmFunc is a planned function: 24 bytes, what a call reads (a decision
// calls a dozen functions with its caches cold); its name and messages are
// in vmFuncInfo.
type vmFunc struct {
	memo   int32 // index in the memo table; -1: not memoized
	params int32 // its parameters: vmCode.params[params:params+nparams]
	blocks int32 // its blocks: vmCode.fblocks[blocks:blocks+nblocks]
	// the number of its locals, its return local, and (epilogue) the local
	// its epilogue returns
	nlocals, ret, defined uint16
	nparams, nblocks      uint16
	// epilogue: the function's two last blocks are run by
	// vmState.epilogue, returning the local defined (epilogue.go)
	epilogue bool
}

// vmFuncInfo is what an error of a function needs.
type vmFuncInfo struct {
	name string
	// conflict is topdown's message for two values of this rule or function
	conflict    string
	epilogueLoc *ast.Location
}

// vmBuiltin is a built-in function a plan calls.
type vmBuiltin struct {
	name   string
	native Native // nil: fn
	fn     topdown.BuiltinFunc
	// lazyArgs: native gets its arguments as they are, a Lazy unbuilt (it
	// uses Members, or materializes them itself)
	lazyArgs bool
}
