package policy

import (
	"hash/maphash"
	"strings"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The decision cache remembers, per policy revision, what one evaluation of
// data.crmauthz.decision answered for one input and which facts it read
// through crm.user and crm.record, with a keyed hash of each fact's bytes (or
// its absence). A later decision with the same input re-reads exactly those
// facts from its own read transaction and reuses the answer only when every
// one is unchanged. So the cache is invalidated exactly: by a change of any
// fact the decision depends on, and by nothing else — the policy still
// decides, once per distinct (input, facts) pair.
//
// It is used only when the policy is deterministic: a policy that calls a
// non-deterministic built-in (time.now_ns, rand.intn, http.send, …) is never
// cached, since its answer may change while its facts do not.
//
// The cache is a fixed array of slots addressed by a hash of the input; a slot
// holds one immutable entry, replaced whole, so lookups take no lock and
// memory is bounded by the slot count.

// defaultCacheSlots is the decision cache's size when Config.DecisionCacheSlots is 0.
const defaultCacheSlots = 1 << 16

// factDep is one fact a decision read.
type factDep struct {
	record  bool   // crm.record (else crm.user)
	typ, id string // typ only for records
	present bool
	n       int    // length of the bytes
	sum     uint64 // keyed hash of the bytes
}

type cacheEntry struct {
	in   Input
	deps []factDep
	d    Decision
}

type decisionCache struct {
	seed  maphash.Seed
	mask  uint64
	slots []atomic.Pointer[cacheEntry]
}

func newDecisionCache(slots int) *decisionCache {
	n := 1
	for n < slots {
		n <<= 1
	}
	return &decisionCache{seed: maphash.MakeSeed(), mask: uint64(n - 1), slots: make([]atomic.Pointer[cacheEntry], n)}
}

func (c *decisionCache) slot(in *Input) *atomic.Pointer[cacheEntry] {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(in.Subject)
	h.WriteByte(0)
	h.WriteString(in.Action)
	h.WriteByte(0)
	h.WriteString(in.ResourceType)
	h.WriteByte(0)
	h.WriteString(in.ResourceID)
	h.WriteByte(0)
	if in.HasTarget {
		h.WriteByte(1)
		h.WriteString(in.Target)
	}
	return &c.slots[h.Sum64()&c.mask]
}

// lookup returns the cached decision for in when every fact it read is
// unchanged in facts. A read error is not a hit (the evaluation will meet it
// again and fail closed).
func (c *decisionCache) lookup(facts Facts, in *Input) (Decision, bool) {
	e := c.slot(in).Load()
	if e == nil || e.in != *in {
		return Decision{}, false
	}
	for i := range e.deps {
		dep := &e.deps[i]
		var js []byte
		var err error
		if dep.record {
			js, err = facts.RecordJSON(dep.typ, dep.id)
		} else {
			js, err = facts.UserJSON(dep.id)
		}
		if err != nil || (js != nil) != dep.present || len(js) != dep.n || (js != nil && maphash.Bytes(c.seed, js) != dep.sum) {
			return Decision{}, false
		}
	}
	return e.d, true
}

func (c *decisionCache) store(in *Input, deps []factDep, d Decision) {
	c.slot(in).Store(newCacheEntry(in, deps, d))
}

// newCacheEntry makes a compact entry: the strings of the input and of the
// facts read are copied into one string, so that the entry does not keep the
// request body or the facts' documents they were cut from alive, and deps is
// copied to its exact length. (The reason is the policy's constant, or a
// string of its own.) With 65,536 slots full, this is the bulk of
// the engine's live heap.
func newCacheEntry(in *Input, deps []factDep, d Decision) *cacheEntry {
	n := len(in.Subject) + len(in.Action) + len(in.ResourceType) + len(in.ResourceID) + len(in.Target)
	for i := range deps {
		n += len(deps[i].typ) + len(deps[i].id)
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range []string{in.Subject, in.Action, in.ResourceType, in.ResourceID, in.Target} {
		b.WriteString(s)
	}
	for i := range deps {
		b.WriteString(deps[i].typ)
		b.WriteString(deps[i].id)
	}
	all := b.String()
	cut := func(s string) string {
		r := all[:len(s)]
		all = all[len(s):]
		return r
	}
	e := &cacheEntry{deps: make([]factDep, len(deps)), d: d}
	e.in = Input{Subject: cut(in.Subject), Action: cut(in.Action), ResourceType: cut(in.ResourceType),
		ResourceID: cut(in.ResourceID), Target: cut(in.Target), HasTarget: in.HasTarget}
	for i, dep := range deps {
		dep.typ, dep.id = cut(dep.typ), cut(dep.id)
		e.deps[i] = dep
	}
	return e
}

// depRecorder passes reads through to Facts and notes what was read.
type depRecorder struct {
	Facts
	seed maphash.Seed
	deps []factDep
	err  bool // a read failed: the evaluation must not be cached
}

func (r *depRecorder) note(dep factDep, js []byte, err error) {
	if err != nil {
		r.err = true
		return
	}
	dep.present, dep.n = js != nil, len(js)
	if js != nil {
		dep.sum = maphash.Bytes(r.seed, js)
	}
	r.deps = append(r.deps, dep)
}

func (r *depRecorder) UserJSON(id string) ([]byte, error) {
	js, err := r.Facts.UserJSON(id)
	r.note(factDep{id: id}, js, err)
	return js, err
}

func (r *depRecorder) RecordJSON(typ, id string) ([]byte, error) {
	js, err := r.Facts.RecordJSON(typ, id)
	r.note(factDep{record: true, typ: typ, id: id}, js, err)
	return js, err
}

// deterministic tells whether the compiled policy calls no non-deterministic
// built-in, so that its decisions are a function of input and facts alone.
func deterministic(c *ast.Compiler) bool {
	nondet := func(op string) bool {
		b, ok := ast.BuiltinMap[op]
		return ok && b.Nondeterministic
	}
	ok := true
	for _, m := range c.Modules {
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if e.IsCall() && nondet(e.Operator().String()) {
				ok = false
			}
			return !ok
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, isCall := t.Value.(ast.Call); isCall && len(call) > 0 && nondet(call[0].String()) {
				ok = false
			}
			return !ok
		})
	}
	return ok
}
