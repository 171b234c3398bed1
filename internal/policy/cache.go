package policy

import (
	"hash/maphash"
	"math"
	"strings"
	"sync"
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
//
// Recording is adaptive (docs/design.md, "The decision cache on a mix that
// does not repeat"): a miss costs the noting of the facts read, a keyed hash
// of their bytes and a stored entry, which a mix that never repeats pays for
// nothing (and 65,536 live entries are heap the collector marks). So the
// cache counts its lookups and hits per window; when the hit rate of a window
// is under 1/32 it samples: only the inputs whose slot is a sampled one (one
// slot in 16) are still recorded, the other slots are emptied, and their
// misses are decided without a recorder. The sampled slots are a cache of
// their own for 1/16 of the inputs, with the same load per slot, so their hit
// rate estimates the whole cache's; when it reaches 1/16 over a window (or
// the hits alone reach 1/16 of a window's length: repeats came back) the
// cache records every miss again. Each window that ends still sampling moves
// the sample to the next sixteenth of the slots (the former one is emptied),
// so a few inputs that repeat are noticed within 16 windows wherever their
// slots are. Answers do not depend on the mode: an entry
// is used only after its facts are re-read and compared, in either mode.

// defaultCacheSlots is the decision cache's size when Config.DecisionCacheSlots is 0.
const defaultCacheSlots = 1 << 16

// The adaptive recording's constants (see above).
const (
	sampleSlotsShift = 4    // one slot in 1<<sampleSlotsShift is sampled
	fullWindow       = 4096 // lookups per window while recording every miss
	sampledWindow    = 512  // lookups of sampled slots per window while sampling
	samplingBelow    = 32   // sample when hits*samplingBelow < lookups (hit rate under ~3 %)
	recordingFrom    = 16   // record again when hits*recordingFrom >= lookups (~6 %)
)

// factDep is one fact a decision read.
type factDep struct {
	record  bool   // crm.record (else crm.user)
	typ, id string // typ only for records
	present bool
	n       int    // length of the bytes
	sum     uint64 // keyed hash of the bytes
}

// cacheEntry is one cached decision. It is built to cost the garbage
// collector little, since 65,536 of them stay alive: every string of the input
// and of the facts read is in key (one allocation, no pointers inside), the
// facts read are pointer-free entryDeps, inline when there are at most four.
type cacheEntry struct {
	key       string    // subject, action, type, id, target, then each dep's typ and id
	lens      [5]uint16 // lengths of subject, action, type, id and target in key
	hasTarget bool
	ndeps     uint8
	d         Decision
	deps      [inlineDeps]entryDep
	more      []entryDep // the deps past inlineDeps
}

const inlineDeps = 4

// entryDep is a factDep whose type and id are in the entry's key.
type entryDep struct {
	sum           uint64
	n             uint32
	typLen, idLen uint16
	record        bool
	present       bool
}

type decisionCache struct {
	seed  maphash.Seed
	mask  uint64
	slots []atomic.Pointer[cacheEntry]
	// recorders pools the *depRecorder of a miss: the entry a decision
	// stores copies what it read, so the recorder is free once stored
	recorders sync.Pool

	// sampleMask and offset select the sampled slots:
	// (index+offset)&sampleMask == 0 (all of them in a cache of one slot).
	sampleMask uint64
	offset     atomic.Uint64
	// sampling is set while only the sampled slots record.
	sampling atomic.Bool
	// window counts the current window's lookups (low 32 bits) and hits
	// (high 32 bits): every lookup while recording, the sampled slots'
	// while sampling.
	window atomic.Uint64
	// fullWindow and sampledWindow are the window lengths (the constants;
	// tests shorten them).
	fullWindow, sampledWindow uint64
	// switches counts the changes of mode.
	switches atomic.Uint64
}

func newDecisionCache(slots int) *decisionCache {
	n := 1
	for n < slots {
		n <<= 1
	}
	return &decisionCache{seed: maphash.MakeSeed(), mask: uint64(n - 1), slots: make([]atomic.Pointer[cacheEntry], n),
		sampleMask: uint64(min(n, 1<<sampleSlotsShift) - 1), fullWindow: fullWindow, sampledWindow: sampledWindow}
}

func (c *decisionCache) slot(in *Input) *atomic.Pointer[cacheEntry] {
	return &c.slots[c.index(in)]
}

// index is in's slot.
func (c *decisionCache) index(in *Input) uint64 {
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
	return h.Sum64() & c.mask
}

// lookup returns the cached decision for in when every fact it read is
// unchanged in facts. A read error is not a hit (the evaluation will meet it
// again and fail closed). On a miss, slot is where the decision is to be
// stored once recorded (store), nil when the cache is sampling and in's slot
// is not a sampled one: decide without a recorder then.
func (c *decisionCache) lookup(facts Facts, in *Input) (d Decision, hit bool, slot *atomic.Pointer[cacheEntry]) {
	i := c.index(in)
	sampled := (i+c.offset.Load())&c.sampleMask == 0
	sampling := c.sampling.Load()
	d, hit = c.match(c.slots[i].Load(), facts, in)
	if sampled || !sampling {
		sampling = c.count(hit, sampling)
	}
	if hit || (sampling && !sampled) {
		return d, hit, nil
	}
	return Decision{}, false, &c.slots[i]
}

// count adds a lookup to the window; the lookup that ends a window resets it
// and changes the mode when the window's hit rate says so. It returns the
// mode: sampling or not.
func (c *decisionCache) count(hit, sampling bool) bool {
	inc := uint64(1)
	if hit {
		inc |= 1 << 32
	}
	w := c.window.Add(inc)
	n := c.fullWindow
	if sampling {
		n = c.sampledWindow
	}
	// A window ends after n lookups, or, while sampling, as soon as its hits
	// reach a 1/recordingFrom of n: repeats are back, record them at once.
	end := uint64(uint32(w)) >= n || (sampling && (w>>32)*recordingFrom >= n)
	if !end || !c.window.CompareAndSwap(w, 0) {
		// Not the window's end, or another lookup counted since: that one
		// ends it (one window is judged once).
		return sampling
	}
	lookups, hits := uint64(uint32(w)), w>>32
	switch sampling = c.sampling.Load(); {
	case !sampling && hits*samplingBelow < lookups:
		c.startSampling()
	case sampling && hits*recordingFrom >= lookups:
		c.sampling.Store(false)
		c.switches.Add(1)
	case sampling:
		c.moveSample()
	}
	return c.sampling.Load()
}

// startSampling stops recording outside the sampled slots and empties them,
// so that their entries' memory is freed.
func (c *decisionCache) startSampling() {
	c.sampling.Store(true)
	c.switches.Add(1)
	off := c.offset.Load()
	for i := range c.slots {
		if (uint64(i)+off)&c.sampleMask != 0 {
			c.slots[i].Store(nil)
		}
	}
}

// moveSample samples the next sixteenth of the slots and empties the former
// one.
func (c *decisionCache) moveSample() {
	if c.sampleMask == 0 {
		return // one slot: always sampled
	}
	off := c.offset.Add(1) - 1
	for i := (c.sampleMask + 1 - off&c.sampleMask) & c.sampleMask; i < uint64(len(c.slots)); i += c.sampleMask + 1 {
		c.slots[i].Store(nil)
	}
}

// match tells whether e answers in with facts.
func (c *decisionCache) match(e *cacheEntry, facts Facts, in *Input) (Decision, bool) {
	if e == nil || e.hasTarget != in.HasTarget {
		return Decision{}, false
	}
	off := 0
	for i, s := range [5]string{in.Subject, in.Action, in.ResourceType, in.ResourceID, in.Target} {
		l := int(e.lens[i])
		if len(s) != l || e.key[off:off+l] != s {
			return Decision{}, false
		}
		off += l
	}
	for i := range int(e.ndeps) {
		var dep *entryDep
		if i < inlineDeps {
			dep = &e.deps[i]
		} else {
			dep = &e.more[i-inlineDeps]
		}
		typ := e.key[off : off+int(dep.typLen)]
		off += int(dep.typLen)
		id := e.key[off : off+int(dep.idLen)]
		off += int(dep.idLen)
		var js []byte
		var err error
		if dep.record {
			js, err = facts.RecordJSON(typ, id)
		} else {
			js, err = facts.UserJSON(id)
		}
		if err != nil || (js != nil) != dep.present || len(js) != int(dep.n) || (js != nil && maphash.Bytes(c.seed, js) != dep.sum) {
			return Decision{}, false
		}
	}
	return e.d, true
}

// store puts the decision of in, which read deps, into slot (lookup's).
func (c *decisionCache) store(slot *atomic.Pointer[cacheEntry], in *Input, deps []factDep, d Decision) {
	if e := newCacheEntry(in, deps, d); e != nil {
		slot.Store(e)
	}
}

// newCacheEntry makes the entry of a decision; nil when a string or a fact is
// too long for it (such a decision is simply not cached). The strings are
// copied, so the entry keeps neither the request body nor the facts'
// documents they were cut from alive. (The reason is the policy's constant,
// or a string of its own.)
func newCacheEntry(in *Input, deps []factDep, d Decision) *cacheEntry {
	e := &cacheEntry{hasTarget: in.HasTarget, d: d}
	strs := [5]string{in.Subject, in.Action, in.ResourceType, in.ResourceID, in.Target}
	n := 0
	for i, s := range strs {
		if len(s) > math.MaxUint16 {
			return nil
		}
		e.lens[i] = uint16(len(s))
		n += len(s)
	}
	if len(deps) > math.MaxUint8 {
		return nil
	}
	e.ndeps = uint8(len(deps))
	if len(deps) > inlineDeps {
		e.more = make([]entryDep, len(deps)-inlineDeps)
	}
	for i := range deps {
		dep := &deps[i]
		if len(dep.typ) > math.MaxUint16 || len(dep.id) > math.MaxUint16 || dep.n < 0 || dep.n > math.MaxUint32 {
			return nil
		}
		ed := entryDep{sum: dep.sum, n: uint32(dep.n), typLen: uint16(len(dep.typ)), idLen: uint16(len(dep.id)),
			record: dep.record, present: dep.present}
		if i < inlineDeps {
			e.deps[i] = ed
		} else {
			e.more[i-inlineDeps] = ed
		}
		n += len(dep.typ) + len(dep.id)
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range strs {
		b.WriteString(s)
	}
	for i := range deps {
		b.WriteString(deps[i].typ)
		b.WriteString(deps[i].id)
	}
	e.key = b.String()
	return e
}

// recorder is a pooled depRecorder of facts for one decision's evaluation
// (release it once its deps are stored).
func (c *decisionCache) recorder(facts Facts) *depRecorder {
	r, _ := c.recorders.Get().(*depRecorder)
	if r == nil {
		r = &depRecorder{seed: c.seed, deps: make([]factDep, 0, 4)}
	}
	r.Facts = facts
	return r
}

// release clears r (it keeps neither the facts nor the ids read) and pools it.
func (c *decisionCache) release(r *depRecorder) {
	clear(r.deps)
	r.Facts, r.deps, r.err = nil, r.deps[:0], false
	c.recorders.Put(r)
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
