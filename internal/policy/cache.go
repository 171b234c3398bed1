package policy

import (
	"hash/maphash"
	"math"
	"math/bits"
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
// memory is bounded by the slot count. The slots are kept in 16 pages, one per
// residue of the sampling below (slot i in page i mod 16), each allocated at
// its first store and dropped when its slots are emptied: while the cache
// samples, only the sampled page is alive, so the collector scans 4,096
// slots instead of 65,536 on each cycle (BENCHMARKS.md, "Session 7: the mark
// phase").
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

// cacheEntry is one cached decision. It holds no pointer, so that the garbage
// collector only marks it and never scans it (up to 65,536 of them stay
// alive; docs/design.md, "The decision cache"): the input's strings are
// copied into data, each fact read refers to them (the subject, the
// resource, the target: what a policy reads) or to bytes of its own in data,
// the reason and the records' types are indexes into per-cache tables of
// strings. A decision whose strings do not fit in data, or that read more
// than maxDeps facts, is simply not cached.
type cacheEntry struct {
	deps      [maxDeps]entryDep
	lens      [numFields]uint8 // lengths of subject, action, type, id and target in data
	hasTarget bool
	allow     bool
	ndeps     uint8
	reason    uint16 // in decisionCache.reasons
	data      [entryData]byte
}

// The entry's bounds: a cacheEntry is 256 bytes (a size class of the
// allocator; cache_test.go checks it).
const (
	maxDeps   = 6
	entryData = 150
	numFields = 5 // subject, action, resource type, resource id, target
)

// An entryDep's typ: a field of the input (0 to numFields-1), noType (a
// user), or typeBase+i: types[i]. Its id: a field of the input, or inData:
// data[idOff:idOff+idLen].
const (
	noType   = numFields
	typeBase = numFields + 1
	maxTypes = math.MaxUint8 + 1 - typeBase
	inData   = math.MaxUint8
)

// maxReasons bounds the distinct reasons a cache holds (a policy whose
// reasons name the input, say, has its decisions cached until then).
const maxReasons = 4096

// entryDep is a factDep whose type and id are the input's strings, a table's
// or the entry's data.
type entryDep struct {
	sum          uint64
	n            uint32 // length of the bytes, with depPresent and depRecord
	typ, id      uint8
	idOff, idLen uint8
}

// entryDep.n's flags (a fact of a GiB or more is not cached).
const (
	depPresent = 1 << 31
	depRecord  = 1 << 30
	depLenMask = depRecord - 1
)

type decisionCache struct {
	seed maphash.Seed
	mask uint64
	// pages hold the slots: slot i is pages[i&sampleMask].slots[i>>pageShift]
	// (a nil page: its slots are empty).
	pages     []atomic.Pointer[slotPage]
	pageShift uint
	// reasons and types are the strings the entries refer to by index:
	// decisions' reasons and the types of the records read.
	reasons, types stringTable
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

// slotPage is the slots of one residue of the sampling.
type slotPage struct {
	slots []atomic.Pointer[cacheEntry]
}

func newDecisionCache(slots int) *decisionCache {
	n := 1
	for n < slots {
		n <<= 1
	}
	pages := min(n, 1<<sampleSlotsShift)
	return &decisionCache{seed: maphash.MakeSeed(), mask: uint64(n - 1),
		pages: make([]atomic.Pointer[slotPage], pages), pageShift: uint(bits.TrailingZeros(uint(pages))),
		reasons: stringTable{max: maxReasons}, types: stringTable{max: maxTypes},
		sampleMask: uint64(pages - 1), fullWindow: fullWindow, sampledWindow: sampledWindow}
}

// entry is slot i's entry (nil: empty).
func (c *decisionCache) entry(i uint64) *cacheEntry {
	pg := c.pages[i&c.sampleMask].Load()
	if pg == nil {
		return nil
	}
	return pg.slots[i>>c.pageShift].Load()
}

// slotAt is slot i, its page allocated if it has none.
func (c *decisionCache) slotAt(i uint64) *atomic.Pointer[cacheEntry] {
	p := &c.pages[i&c.sampleMask]
	pg := p.Load()
	if pg == nil {
		pg = &slotPage{slots: make([]atomic.Pointer[cacheEntry], (c.mask+1)>>c.pageShift)}
		if !p.CompareAndSwap(nil, pg) {
			pg = p.Load() // another store made it (or it was dropped: then this store is lost, as an emptied slot's)
			if pg == nil {
				return new(atomic.Pointer[cacheEntry])
			}
		}
	}
	return &pg.slots[i>>c.pageShift]
}

// slot is in's slot.
func (c *decisionCache) slot(in *Input) *atomic.Pointer[cacheEntry] {
	return c.slotAt(c.index(in))
}

// len is the number of slots.
func (c *decisionCache) len() uint64 { return c.mask + 1 }

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
	d, hit = c.match(c.entry(i), facts, in)
	if sampled || !sampling {
		sampling = c.count(hit, sampling)
	}
	if hit || (sampling && !sampled) {
		return d, hit, nil
	}
	return Decision{}, false, c.slotAt(i)
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
	for r := range c.pages {
		if (uint64(r)+off)&c.sampleMask != 0 {
			c.pages[r].Store(nil)
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
	c.pages[(c.sampleMask+1-off&c.sampleMask)&c.sampleMask].Store(nil)
}

// match tells whether e answers in with facts.
func (c *decisionCache) match(e *cacheEntry, facts Facts, in *Input) (Decision, bool) {
	if e == nil || e.hasTarget != in.HasTarget {
		return Decision{}, false
	}
	fields := inputFields(in)
	off := 0
	for i, s := range fields {
		l := int(e.lens[i])
		if len(s) != l || string(e.data[off:off+l]) != s {
			return Decision{}, false
		}
		off += l
	}
	for i := range e.ndeps {
		dep := &e.deps[i]
		var typ, id string
		switch {
		case dep.typ < numFields:
			typ = fields[dep.typ]
		case dep.typ >= typeBase:
			typ = c.types.get(int(dep.typ - typeBase))
		}
		if dep.id < numFields {
			id = fields[dep.id]
		} else {
			id = string(e.data[dep.idOff : dep.idOff+dep.idLen])
		}
		var js []byte
		var err error
		if dep.n&depRecord != 0 {
			js, err = facts.RecordJSON(typ, id)
		} else {
			js, err = facts.UserJSON(id)
		}
		if err != nil || (js != nil) != (dep.n&depPresent != 0) || len(js) != int(dep.n&depLenMask) ||
			(js != nil && maphash.Bytes(c.seed, js) != dep.sum) {
			return Decision{}, false
		}
	}
	return Decision{Allow: e.allow, Reason: c.reasons.get(int(e.reason))}, true
}

// inputFields are in's strings in an entry's order.
func inputFields(in *Input) [numFields]string {
	return [numFields]string{in.Subject, in.Action, in.ResourceType, in.ResourceID, in.Target}
}

// store puts the decision of in, which read deps, into slot (lookup's).
func (c *decisionCache) store(slot *atomic.Pointer[cacheEntry], in *Input, deps []factDep, d Decision) {
	if e := c.newEntry(in, deps, d); e != nil {
		slot.Store(e)
	}
}

// newEntry makes the entry of a decision; nil when it does not fit in one
// (such a decision is simply not cached). The strings are copied, so the
// entry keeps neither the request body nor the facts' documents they were
// cut from alive.
func (c *decisionCache) newEntry(in *Input, deps []factDep, d Decision) *cacheEntry {
	if len(deps) > maxDeps {
		return nil
	}
	reason, ok := c.reasons.index(d.Reason)
	if !ok {
		return nil
	}
	e := &cacheEntry{hasTarget: in.HasTarget, allow: d.Allow, reason: uint16(reason), ndeps: uint8(len(deps))}
	fields := inputFields(in)
	n := 0
	for i, s := range fields {
		if len(s) > entryData-n {
			return nil
		}
		e.lens[i] = uint8(len(s))
		n += copy(e.data[n:], s)
	}
	for i := range deps {
		dep := &deps[i]
		if dep.n < 0 || dep.n > depLenMask {
			return nil
		}
		ed := entryDep{sum: dep.sum, n: uint32(dep.n), typ: noType, id: fieldOf(&fields, dep.id)}
		if dep.present {
			ed.n |= depPresent
		}
		if dep.record {
			ed.n |= depRecord
			if ed.typ = fieldOf(&fields, dep.typ); ed.typ == inData {
				t, ok := c.types.index(dep.typ)
				if !ok {
					return nil
				}
				ed.typ = uint8(typeBase + t)
			}
		}
		if ed.id == inData {
			if len(dep.id) > entryData-n {
				return nil
			}
			ed.idOff, ed.idLen = uint8(n), uint8(len(dep.id))
			n += copy(e.data[n:], dep.id)
		}
		e.deps[i] = ed
	}
	return e
}

// fieldOf is the input field equal to s, or inData.
func fieldOf(fields *[numFields]string, s string) uint8 {
	for i, f := range fields {
		if f == s {
			return uint8(i)
		}
	}
	return inData
}

// stringTable interns strings for entries, which refer to them by index. It
// only grows (up to max strings) for the life of its cache, one revision.
type stringTable struct {
	max  int
	mu   sync.Mutex
	ids  map[string]int // guarded by mu
	list atomic.Pointer[[]string]
}

// index is s's index, added when new; false when the table is full.
func (t *stringTable) index(s string) (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.ids[s]; ok {
		return i, true
	}
	var list []string
	if p := t.list.Load(); p != nil {
		list = *p
	}
	if len(list) >= t.max {
		return 0, false
	}
	if t.ids == nil {
		t.ids = map[string]int{}
	}
	s = strings.Clone(s)
	t.ids[s] = len(list)
	// Readers hold a shorter slice of the same array at most: the elements
	// they read are never written again.
	list = append(list, s)
	t.list.Store(&list)
	return len(list) - 1, true
}

// get is the string of index i, which index returned (an entry that refers
// to i was stored after the table held it).
func (t *stringTable) get(i int) string {
	return (*t.list.Load())[i]
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
