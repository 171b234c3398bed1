package irvm

import "github.com/open-policy-agent/opa/v1/ast"

// Records in an arena. A gateway decision makes four to seven records (the
// route's resource, the route, the plain decision's `with input as` value,
// what the request is, the union with the target's decision, the result:
// record.go, union.go), each an allocation of its own. An Arena is storage
// for them that the caller owns and reuses from one evaluation to the next
// (internal/policy keeps one in each pooled decision input): an evaluation
// given one (EvalOpts.Arena) takes its records from it, and the caller
// frees them all at once (Reset) when it has read the result.
//
// A record never outlives its evaluation but as its result: any other use
// of one outside a lookup (a comparison, a built-in's argument, an insert
// into a collection, a result that is built) builds its ast object, which
// refers to the record's values, never to the record; the interpreter's
// state keeps none past the evaluation but in memo entries of an older
// generation, which are never read again (vmState.memoSet).

// maxArena is the most records an Arena keeps for reuse; an evaluation
// making more takes the others from the heap.
const maxArena = 32

// Arena is storage for the records of evaluations, reused (see above). The
// zero value is ready; an Arena serves one evaluation at a time.
type Arena struct {
	recs []*unionRec
	n    int
}

// take is a cleared record of a's (of the heap when a is nil or full).
func (a *Arena) take() *unionRec {
	if a == nil || a.n == maxArena {
		return &unionRec{}
	}
	if a.n == len(a.recs) {
		a.recs = append(a.recs, &unionRec{})
	}
	u := a.recs[a.n]
	a.n++
	return u
}

// Reset frees the records of the evaluations since the last Reset: call it
// once their results are read (nothing of them may be used after).
func (a *Arena) Reset() {
	for _, u := range a.recs[:a.n] {
		u.reset()
	}
	a.n = 0
}

// reset clears u's values for its next use (keeping its closure, pairFn).
func (u *unionRec) reset() {
	fn := u.fn
	*u = unionRec{fn: fn}
}

// Len is how many records a holds in use (for tests).
func (a *Arena) Len() int { return a.n }

// newRecord is a record of the keys keys, its values to be set, from the
// evaluation's arena.
func (st *vmState) newRecord(keys []*ast.Term) *record {
	u := st.call.arena.take()
	u.keys = keys
	return &u.record
}
