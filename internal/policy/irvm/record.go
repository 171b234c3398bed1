package irvm

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
)

// Object literals as records. The planner builds an object literal of
// constant keys ({"action": a, "resource": r, "targets": []}, a `with input
// as {...}` value) as MakeObjectStmt, then one ObjectInsertStmt per key, at
// run time: an ast object is a hash map, so that is an allocation per key
// and a hash of each key, and every lookup in it hashes the key again. The
// gateway's decision builds a dozen of them per request (BENCHMARKS.md,
// "Session 9: the gateway's evaluation"). New compiles such a run into one
// opRecord statement that makes a record: the keys (the program's
// constants) and the values in one allocation, a Lazy object. A lookup
// (DotStmt, object.get) reads it directly; any other use builds the ast
// object (once), with its values built too, which is the object the
// statements it replaces would have made. The values are the operands as
// they are when the record is made, as the inserts would have read them
// (each read once: a value's local is not written in between, see
// recordRun).
//
// A record is never changed: it is made only for a local that no other
// statement of the function inserts into (recordRun; an insert into one
// would be an internal error, so topdown would decide). Its values are
// evaluation values (never changed in place either).

// maxRecord is the most keys a record holds.
const maxRecord = 8

// record is an object literal of constant string keys (opRecord).
type record struct {
	keys []*ast.Term // the program's (vmCode.recKeys), shared
	vals [maxRecord]*ast.Term
	obj  *ast.Term // built, once asked for
	term ast.Term  // the record's term (Value: this record)
}

// Lookup is the value at key; nil when there is none.
func (r *record) Lookup(key *ast.Term) *ast.Term {
	for i, k := range r.keys {
		if k == key {
			return r.vals[i]
		}
	}
	s, ok := key.Value.(ast.String)
	if !ok {
		return nil // every key is a string
	}
	for i, k := range r.keys {
		if k.Value.(ast.String) == s {
			return r.vals[i]
		}
	}
	return nil
}

// Materialize is the ast object the record stands for, its values built.
func (r *record) Materialize() *ast.Term {
	if r.obj == nil {
		pairs := make([][2]*ast.Term, len(r.keys))
		for i, k := range r.keys {
			pairs[i] = [2]*ast.Term{k, materialize(r.vals[i])}
		}
		r.obj = ast.NewTerm(ast.NewObject(pairs...))
	}
	return r.obj
}

// The Value methods: the interpreter never hands a record to OPA's code (it
// materializes it first); should one escape, it behaves as its object.
func (r *record) Compare(other ast.Value) int          { return r.Materialize().Value.Compare(other) }
func (r *record) Find(path ast.Ref) (ast.Value, error) { return r.Materialize().Value.Find(path) }
func (r *record) Hash() int                            { return r.Materialize().Value.Hash() }
func (r *record) IsGround() bool                       { return true }
func (r *record) String() string                       { return r.Materialize().Value.String() }
func (r *record) StringLength() int                    { return r.Materialize().Value.StringLength() }

// execRecord is opRecord: the record of the values args[a:a+n] with the
// keys recKeys[ref] into target. An undefined value is the error the
// ObjectInsertStmt of it would have been.
func (st *vmState) execRecord(fr []*ast.Term, s *vmStmt) (int, error) {
	r := st.newRecord(st.recKeys[s.ref])
	for i, o := range st.args[s.a : s.a+vmOperand(s.n)] {
		v := st.raw(fr, o)
		if v == nil {
			return 0, vmBug("ObjectInsertStmt on a non-object")
		}
		r.vals[i] = v
	}
	r.term.Value = r
	fr[s.target] = &r.term
	return ctlNext, nil
}

// insertTargets counts, per local, the statements of bs that insert into
// it (ObjectInsertStmt, ObjectInsertOnceStmt), at any depth.
func insertTargets(bs []*ir.Block) map[ir.Local]int {
	n := map[ir.Local]int{}
	eachStmt(bs, func(s ir.Stmt) {
		switch st := s.(type) {
		case *ir.ObjectInsertStmt:
			n[st.Object]++
		case *ir.ObjectInsertOnceStmt:
			n[st.Object]++
		}
	})
	return n
}

// recordRun recognises an object literal at the start of stmts:
// MakeObjectStmt t, then the inserts into t, each key a constant string
// given once, with in between only statements making an empty collection
// (MakeArrayStmt of no capacity, MakeObjectStmt, MakeSetStmt) into a local
// that is neither t nor a value inserted before it (so that they may run
// first). Every insert into t of the function must be in the run
// (inserts: insertTargets), and there are 1 to maxRecord of them. n is the
// number of statements of the run, keys and vals the inserts' operands,
// pre the statements in between.
func (c *vmCompiler) recordRun(stmts []ir.Stmt, inserts map[ir.Local]int) (n int, keys, vals []ir.Operand, pre []ir.Stmt, ok bool) {
	mk, isMake := stmts[0].(*ir.MakeObjectStmt)
	if !isMake || inserts[mk.Target] == 0 || inserts[mk.Target] > maxRecord {
		return 0, nil, nil, nil, false
	}
	t := mk.Target
	seen := map[string]bool{}
	written := func(l ir.Local) bool { // by a statement moved before the run
		for _, v := range vals {
			if vl, ok := localOf(v); ok && vl == l {
				return true
			}
		}
		return l == t
	}
	for n = 1; n < len(stmts) && len(keys) < inserts[t]; n++ {
		var key, value ir.Operand
		switch s := stmts[n].(type) {
		case *ir.ObjectInsertStmt:
			if s.Object != t {
				return 0, nil, nil, nil, false
			}
			key, value = s.Key, s.Value
		case *ir.ObjectInsertOnceStmt:
			if s.Object != t {
				return 0, nil, nil, nil, false
			}
			key, value = s.Key, s.Value
		case *ir.MakeArrayStmt:
			if s.Capacity != 0 || written(s.Target) {
				return 0, nil, nil, nil, false
			}
			pre = append(pre, s)
			continue
		case *ir.MakeObjectStmt:
			if written(s.Target) {
				return 0, nil, nil, nil, false
			}
			pre = append(pre, s)
			continue
		case *ir.MakeSetStmt:
			if written(s.Target) {
				return 0, nil, nil, nil, false
			}
			pre = append(pre, s)
			continue
		default:
			return 0, nil, nil, nil, false
		}
		o, err := c.operand(key)
		if err != nil {
			return 0, nil, nil, nil, false
		}
		k, isString := valueOf(c.constTerm(o)).(ast.String)
		if !isString || seen[string(k)] {
			return 0, nil, nil, nil, false
		}
		seen[string(k)] = true
		keys, vals = append(keys, key), append(vals, value)
	}
	if len(keys) != inserts[t] {
		return 0, nil, nil, nil, false
	}
	return n, keys, vals, pre, true
}

// record compiles the object literal at the start of stmts (recordRun)
// into its statements: those it moved first, then opRecord. n is the number
// of statements of the plan it replaces.
func (c *vmCompiler) record(stmts []ir.Stmt) (out []vmStmt, n int, ok bool, err error) {
	n, keys, vals, pre, ok := c.recordRun(stmts, c.inserts)
	if !ok {
		return nil, 0, false, nil
	}
	for _, p := range pre {
		s, err := c.stmt(p)
		if err != nil {
			return nil, 0, false, err
		}
		out = append(out, s)
	}
	target := stmts[0].(*ir.MakeObjectStmt).Target
	s := vmStmt{op: opRecord, target: c.local(target), a: vmOperand(len(c.code.args)), n: uint8(len(vals)),
		ref: int32(len(c.code.recKeys))}
	kt := make([]*ast.Term, len(keys))
	for i := range keys {
		k, _ := c.operand(keys[i]) // constants: checked by recordRun
		kt[i] = c.constTerm(k)
		v, err := c.operand(vals[i])
		if err != nil {
			return nil, 0, false, err
		}
		c.code.args = append(c.code.args, v)
	}
	c.code.recKeys = append(c.code.recKeys, kt)
	return append(out, s), n, true, nil
}
