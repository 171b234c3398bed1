package index

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// The users' cache: the JSON of the users the Views of one committed state have read, kept for the
// later Views of exactly that state (docs/design.md, "Index: the users' cache"). A decision reads
// its subject, and sometimes a target, and the users are few: a cache hit spares the users
// bucket's open and a Get descending its B+tree, whose pages the rest of a request's work evicts
// from the CPU caches between two decisions (BENCHMARKS.md, "Session 6: the index's cold read").
//
// A cache belongs to one handle (one bbolt file: a ReplaceAll's new file starts with none) and is
// keyed by the two things a ReadTx's reads depend on besides its own writes: the bbolt
// transaction's id (each commit of that file, a batch's or a merge's, has its own) and the overlay
// state the View paired with it (the pointer, which the cache holds, so it cannot be reused). A
// View whose key differs from the cache's neither reads nor fills it; a View of a newer state
// replaces it with an empty one. So no read ever returns a user from a state other than its own
// transaction's. The read side of a WriteTx never uses it.
//
// The cache holds no pointers the collector must follow: an entry is its header, id and JSON in
// one arena of bytes, and a slot holds the high half of the id's hash beside the entry's offset, so
// that a hit reads two places (the slot, then the entry, whose header, id and JSON are next to
// each other), each a cache miss when the request's other work evicted them (BENCHMARKS.md,
// "Session 10: the evaluation's CPU"; entries in an array of their own and the bytes in chunks
// beside made it four).
//
// It also keeps the state's applied seq, which every decision reads (the server answers it): the
// first View of the state reads it from the meta bucket (through the overlay), the later ones from
// here, sparing the meta bucket's open and its Get.

const (
	ucMaxBytes   = 8 << 20 // bytes of JSON cached per state; beyond, misses are not cached
	ucMaxEntries = 1 << 16
	ucMaxAbsent  = 1 << 12  // of them absent users (unknown subjects: a request may name any)
	ucArena      = 64 << 10 // the arena's first size; it doubles as it fills
	ucMinSlots   = 256
	ucHeader     = 8 // an entry's header: the id's length and the JSON's (-1: absent), uint32 each
)

type userCache struct {
	txid uint64
	st   *ovState
	seed maphash.Seed

	mu     sync.RWMutex
	slots  []uint64 // a power of two; 0 empty, else the hash's high 32 bits and the entry's offset+1
	arena  []byte   // the entries: header (ucHeader bytes), id, JSON
	n      int      // entries
	bytes  int
	absent int

	// seq is the state's applied seq, valid once seqOK is set (ReadTx.AppliedSeq).
	seq   atomic.Uint64
	seqOK atomic.Bool
}

// ucSlot is the slot of the entry at off of an id whose hash is h.
func ucSlot(h uint64, off int) uint64 { return h&^0xffffffff | uint64(off+1) }

// appliedSeq returns the state's applied seq and whether it is cached.
func (c *userCache) appliedSeq() (uint64, bool) {
	if !c.seqOK.Load() {
		return 0, false
	}
	return c.seq.Load(), true
}

// setAppliedSeq caches the state's applied seq (every View of the state reads the same value, so
// two Views racing to set it write the same).
func (c *userCache) setAppliedSeq(seq uint64) {
	c.seq.Store(seq)
	c.seqOK.Store(true)
}

func newUserCache(txid uint64, st *ovState) *userCache {
	return &userCache{txid: txid, st: st, seed: maphash.MakeSeed(), slots: make([]uint64, ucMinSlots)}
}

// newer tells whether the state (txid, st) is newer than the cache's: the later commit, then the
// later generation, then the later epoch.
func (c *userCache) newer(txid uint64, st *ovState) bool {
	switch {
	case txid != c.txid:
		return txid > c.txid
	case st.gen != c.st.gen:
		return st.gen > c.st.gen
	}
	return st.epoch > c.st.epoch
}

// usersFor returns h's users' cache for the state (txid, st), replacing a cache of an older state
// with an empty one; nil when the cache is of a newer state (this View reads without it).
func (h *handle) usersFor(txid uint64, st *ovState) *userCache {
	for {
		c := h.users.Load()
		if c != nil && c.txid == txid && c.st == st {
			return c
		}
		if c != nil && !c.newer(txid, st) {
			return nil
		}
		n := newUserCache(txid, st)
		if h.users.CompareAndSwap(c, n) {
			return n
		}
	}
}

// get returns the cached JSON of user id (nil: absent) and whether it is cached.
func (c *userCache) get(id string) (val []byte, ok bool) {
	h := maphash.String(c.seed, id)
	c.mu.RLock()
	defer c.mu.RUnlock()
	mask := uint64(len(c.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := c.slots[i]
		if s == 0 {
			return nil, false
		}
		if (s^h)>>32 != 0 {
			continue
		}
		if v, found := c.entry(int(uint32(s))-1, id); found {
			return v, true
		}
	}
}

// entry reads the entry at off: found tells whether it is id's, val is its JSON (nil: the user
// is absent).
func (c *userCache) entry(off int, id string) (val []byte, found bool) {
	e := c.arena[off:]
	klen, vlen := int(binary.LittleEndian.Uint32(e)), int32(binary.LittleEndian.Uint32(e[4:]))
	if klen != len(id) || string(e[ucHeader:ucHeader+klen]) != id {
		return nil, false
	}
	if vlen < 0 {
		return nil, true
	}
	end := ucHeader + klen + int(vlen)
	return e[ucHeader+klen : end : end], true
}

// put caches the JSON of user id (nil: absent), unless the cache is full or already has it.
func (c *userCache) put(id string, val []byte) {
	n := len(id) + len(val)
	h := maphash.String(c.seed, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= ucMaxEntries || c.bytes+n > ucMaxBytes || (val == nil && c.absent >= ucMaxAbsent) {
		return
	}
	mask := uint64(len(c.slots) - 1)
	i := h & mask
	for ; c.slots[i] != 0; i = (i + 1) & mask {
		if s := c.slots[i]; (s^h)>>32 == 0 {
			if _, found := c.entry(int(uint32(s))-1, id); found {
				return // another View of the state cached it meanwhile (the same bytes)
			}
		}
	}
	off := len(c.arena)
	if off+ucHeader+n > cap(c.arena) {
		// The JSON get returned stays in the old arena, which is never written again.
		grown := make([]byte, off, max(ucArena, 2*cap(c.arena), off+ucHeader+n))
		copy(grown, c.arena)
		c.arena = grown
	}
	vlen := uint32(len(val))
	if val == nil {
		vlen = ^uint32(0) // -1
		c.absent++
	}
	c.arena = binary.LittleEndian.AppendUint32(c.arena, uint32(len(id)))
	c.arena = binary.LittleEndian.AppendUint32(c.arena, vlen)
	c.arena = append(append(c.arena, id...), val...)
	c.bytes += n
	c.n++
	c.slots[i] = ucSlot(h, off)
	if c.n*4 > len(c.slots)*3 {
		c.rehash(2 * len(c.slots))
	}
}

// rehash rebuilds the slots with n of them. Callers hold mu for writing.
func (c *userCache) rehash(n int) {
	c.slots = make([]uint64, n)
	mask := uint64(n - 1)
	for off := 0; off < len(c.arena); {
		e := c.arena[off:]
		klen, vlen := int(binary.LittleEndian.Uint32(e)), int32(binary.LittleEndian.Uint32(e[4:]))
		h := maphash.String(c.seed, string(e[ucHeader:ucHeader+klen]))
		i := h & mask
		for c.slots[i] != 0 {
			i = (i + 1) & mask
		}
		c.slots[i] = ucSlot(h, off)
		off += ucHeader + klen + max(0, int(vlen))
	}
}

// len is the number of users cached (present or absent).
func (c *userCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.n
}
