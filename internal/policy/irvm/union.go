package irvm

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// object.union on records. routes.rego answers a request with targets as
// object.union(decision, about), the decision of a target and what the
// request is (a record, record.go): topdown's implementation takes both
// built, then merges them into a new ast object, a hash and an allocation
// per key. When both are objects of string keys, together at most
// maxRecord of them, and no key of both holds an object on both sides
// (those topdown merges recursively), the union is a record of the pairs of
// the left operand, each overridden by the right's value for the same key,
// then those of the right operand alone: the object topdown makes, unbuilt.
// Anything else goes to topdown's implementation (copied, as native.go's).

// objectUnion is object.union(a, b) (lazyArgs: a and b as they are).
func objectUnion(c *Call, a []*ast.Term) (*ast.Term, error) {
	if t := unionRecord(c.arena, a[0], a[1]); t != nil {
		return t, nil
	}
	opA, opB := materialize(a[0]), materialize(a[1])
	objA, err := builtins.ObjectOperand(opA.Value, 1)
	if err != nil {
		return nil, err
	}
	objB, err := builtins.ObjectOperand(opB.Value, 2)
	if err != nil {
		return nil, err
	}
	if objA.Len() == 0 {
		return opB, nil
	}
	if objB.Len() == 0 || objA.Compare(objB) == 0 {
		return opA, nil
	}
	return ast.NewTerm(mergeWithOverwrite(objA, objB)), nil
}

// mergeWithOverwrite and mergeOverwriteResolve are topdown's (object.go).
func mergeWithOverwrite(objA, objB ast.Object) ast.Object {
	merged, _ := objA.MergeWith(objB, mergeOverwriteResolve)
	return merged
}

func mergeOverwriteResolve(v1, v2 *ast.Term) (*ast.Term, bool) {
	originalValueObj, ok2 := v1.Value.(ast.Object)
	updateValueObj, ok1 := v2.Value.(ast.Object)
	if !ok1 || !ok2 {
		return v2, false
	}
	return ast.NewTerm(mergeWithOverwrite(originalValueObj, updateValueObj)), false
}

// unionRecord is the record of object.union(a, b) (see above); nil when
// the union is left to topdown's implementation. The record and its keys
// are one allocation (unionRec); the pairs of a record operand are read
// without a closure (an ast object's through Until, with the record's own
// closure: pairFn). The record is ar's (Arena.take).
func unionRecord(ar *Arena, a, b *ast.Term) *ast.Term {
	if !smallObject(a.Value) || !smallObject(b.Value) {
		return nil
	}
	u := ar.take()
	u.keys = u.keyBuf[:0]
	if !u.addAll(a.Value, b.Value, true) || !u.addAll(b.Value, a.Value, false) {
		return nil
	}
	u.term.Value = &u.record
	return &u.term
}

// unionRec is the record of a union, with the storage of its keys; an
// Arena's records are unionRecs too (any record of an evaluation).
type unionRec struct {
	record
	keyBuf [maxRecord]*ast.Term
	// other and left are addAll's, for fn (pairFn)
	other ast.Value
	left  bool
	fn    func(k, v *ast.Term) bool
}

// pairFn is the function addAll hands to an ast object's Until: made once
// per unionRec (an Arena's are reused), where a closure of addAll's own
// would be an allocation per union.
func (u *unionRec) pairFn(other ast.Value, left bool) func(k, v *ast.Term) bool {
	u.other, u.left = other, left
	if u.fn == nil {
		u.fn = func(k, v *ast.Term) bool { return !u.addPair(k, v, u.other, u.left) }
	}
	return u.fn
}

// addAll adds the pairs of v (a record or an ast object), other the other
// operand: left, v is the left operand, whose values the right's override
// (false when a key holds objects on both sides: merged recursively);
// else v is the right operand, whose keys the left lacks are added. False
// when the union is not a record.
func (u *unionRec) addAll(v, other ast.Value, left bool) bool {
	if r, ok := v.(*record); ok {
		for i, k := range r.keys {
			if !u.addPair(k, r.vals[i], other, left) {
				return false
			}
		}
		return true
	}
	return !v.(ast.Object).Until(u.pairFn(other, left))
}

// addPair adds the pair k, v of an operand (addAll).
func (u *unionRec) addPair(k, v *ast.Term, other ast.Value, left bool) bool {
	w := lookup(other, k)
	switch {
	case left && w != nil:
		if objectValue(v.Value) && objectValue(w.Value) {
			return false // merged recursively
		}
		v = w
	case !left && w != nil:
		return true // added with the left's
	}
	if _, ok := k.Value.(ast.String); !ok || len(u.keys) == maxRecord {
		return false
	}
	u.vals[len(u.keys)] = v
	u.keys = append(u.keys, k)
	return true
}

// smallObject tells whether v is a record or an ast object.
func smallObject(v ast.Value) bool {
	switch v.(type) {
	case *record, ast.Object:
		return true
	}
	return false
}

// objectValue tells whether v is an object, built or not (a Lazy that is
// not an array).
func objectValue(v ast.Value) bool {
	switch v.(type) {
	case ast.Object:
		return true
	case Members:
		return false
	case Lazy:
		return true
	}
	return false
}

// lookup is v[k] for a record or an object v.
func lookup(v ast.Value, k *ast.Term) *ast.Term {
	if r, ok := v.(*record); ok {
		return r.Lookup(k)
	}
	return v.(ast.Object).Get(k)
}
