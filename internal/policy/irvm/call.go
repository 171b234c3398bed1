package irvm

import (
	"crypto/rand"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

func valueOf(t *ast.Term) ast.Value {
	if t == nil {
		return nil
	}
	return t.Value
}

func conflictError(loc *ast.Location, msg string) error {
	return &topdown.Error{Code: topdown.ConflictErr, Location: loc, Message: msg}
}

// dot is src[key]: an object's value, an array's element at an integer
// index, a set's element; nil (undefined) otherwise.
func dot(src, key *ast.Term) *ast.Term {
	switch v := src.Value.(type) {
	case ast.Object:
		return v.Get(key)
	case *ast.Array:
		n, ok := key.Value.(ast.Number)
		if !ok {
			return nil
		}
		i, ok := n.Int()
		if !ok || i < 0 || i >= v.Len() {
			return nil
		}
		return v.Elem(i)
	case ast.Set:
		if v.Contains(key) {
			return key
		}
	}
	return nil
}

// length is the number of elements of a collection (characters of a string).
func length(v ast.Value) int {
	switch v := v.(type) {
	case *ast.Array:
		return v.Len()
	case ast.Object:
		return v.Len()
	case ast.Set:
		return v.Len()
	case ast.String:
		return len([]rune(v))
	}
	return 0
}

// scan runs the body of a ScanStmt for every element of its source.
func (st *vmState) scan(fr []*ast.Term, s *vmStmt) (int, error) {
	src := st.materialize(fr[s.a])
	if src == nil {
		return ctlNext, nil
	}
	body := st.blocks[s.ref]
	// one element: 0 or next: go on; 1: leave the scan; more: leave blocks around it
	run := func(k, v *ast.Term) (int, error) {
		if err := st.tick(); err != nil {
			return 0, err
		}
		fr[s.target], fr[s.b] = k, v
		ctl, err := st.block(fr, body)
		switch {
		case err != nil:
			return 0, err
		case ctl == ctlNext, ctl == 0:
			return ctlNext, nil
		case ctl == ctlReturn:
			return ctlReturn, nil
		case ctl == 1:
			return 1, nil
		}
		return ctl, nil
	}
	done := func(ctl int) (int, bool) {
		switch {
		case ctl == ctlNext:
			return 0, false
		case ctl == 1:
			return ctlNext, true // left the scan: go on after it
		case ctl == ctlReturn:
			return ctlReturn, true
		}
		return ctl - 2, true
	}
	switch v := src.Value.(type) {
	case *ast.Array:
		for i := 0; i < v.Len(); i++ {
			ctl, err := run(ast.InternedTerm(i), v.Elem(i))
			if err != nil {
				return 0, err
			}
			if r, stop := done(ctl); stop {
				return r, nil
			}
		}
	case ast.Object:
		for _, k := range v.Keys() {
			ctl, err := run(k, v.Get(k))
			if err != nil {
				return 0, err
			}
			if r, stop := done(ctl); stop {
				return r, nil
			}
		}
	case ast.Set:
		for _, e := range v.Slice() {
			ctl, err := run(e, e)
			if err != nil {
				return 0, err
			}
			if r, stop := done(ctl); stop {
				return r, nil
			}
		}
	}
	return ctlNext, nil
}

// callFunc runs the planned function fi (vmCode.funcs) with args (operands
// in fr).
func (st *vmState) callFunc(fi int32, fr []*ast.Term, args []vmOperand) (*ast.Term, error) {
	fn := &st.funcs[fi]
	if fn.memo >= 0 && st.memoSet[fn.memo] == st.gen {
		return st.memo[fn.memo], nil
	}
	if err := st.tick(); err != nil {
		return nil, err
	}
	nlocals := int(fn.nlocals)
	callee := st.push(nlocals)
	for i, p := range st.params[fn.params : fn.params+int32(fn.nparams)] {
		// An undefined argument is passed on, as OPA's Wasm target does:
		// a rule that never reads input is defined without an input, and a
		// function reading an undefined parameter is undefined there.
		callee[p] = st.raw(fr, args[i])
	}
	var result *ast.Term
	var err error
	returned := false
	blocks := st.fblocks[fn.blocks : fn.blocks+int32(fn.nblocks)]
	for i, b := range blocks {
		var ctl int
		ctl, err = st.block(callee, b)
		if err != nil {
			break
		}
		if ctl == ctlReturn {
			result, returned = callee[fn.ret], true
			break
		}
		if ctl > 0 {
			err = vmBug("illegal control flow out of function %s", st.finfo[fi].name)
			break
		}
		if ctl == 0 && i == len(blocks)-1 && !fn.epilogue {
			break // the last block is the function body itself: leaving it returns undefined
		}
	}
	if fn.epilogue && err == nil && !returned {
		result, err = st.epilogue(fi, callee)
	}
	st.pop(nlocals)
	if err != nil {
		return nil, err
	}
	if fn.memo >= 0 {
		st.memo[fn.memo], st.memoSet[fn.memo] = result, st.gen
	}
	return result, nil
}

// builtin calls a built-in function; nil is undefined.
func (st *vmState) builtin(fr []*ast.Term, s *vmStmt) (*ast.Term, error) {
	bi := st.builtins[s.ref]
	base := len(st.bargs)
	for _, a := range st.args[s.a : s.a+vmOperand(s.n)] {
		var t *ast.Term
		if bi.lazyArgs {
			t = st.raw(fr, a)
		} else {
			t = st.get(fr, a)
		}
		if t == nil {
			st.bargs = st.bargs[:base]
			return nil, nil
		}
		st.bargs = append(st.bargs, t)
	}
	args := st.bargs[base:]
	defer func() { st.bargs = st.bargs[:base] }()
	if bi.native != nil {
		t, err := bi.native(&st.call, args)
		if err != nil {
			return nil, st.builtinFailed(builtinError(bi, st.location(s), err))
		}
		return t, nil
	}
	if st.cache == nil {
		st.cache = builtins.Cache{}
	}
	st.out, st.nout = nil, 0
	bctx := topdown.BuiltinContext{
		Context:  st.call.Context,
		Seed:     rand.Reader,
		Cancel:   st.call.Cancel,
		Cache:    st.cache,
		Location: st.location(s),
	}
	if err := bi.fn(bctx, args, st.iter); err != nil {
		return nil, st.builtinFailed(err) // topdown's wrapper has made it a *topdown.Error
	}
	if st.nout > 1 {
		return nil, vmBug("built-in %s returned %d values", bi.name, st.nout)
	}
	return st.out, nil
}

// builtinFailed is the outcome of a built-in's error: the error (strict, as
// for every decision), or undefined when the program is lenient, as topdown
// without StrictBuiltinErrors (a Halt still aborts).
func (st *vmState) builtinFailed(err error) error {
	if !st.prog.lenient {
		return err
	}
	if h, ok := err.(topdown.Halt); ok {
		return h.Err
	}
	return nil
}

// builtinError is topdown's error for a failed built-in (handleBuiltinErr).
func builtinError(bi *vmBuiltin, loc *ast.Location, err error) error {
	code := topdown.BuiltinErr
	switch err.(type) {
	case *topdown.Error:
		return err
	case builtins.ErrOperand:
		code = topdown.TypeErr
	}
	return (&topdown.Error{Code: code, Location: loc, Message: bi.name + ": " + err.Error()}).Wrap(err)
}
