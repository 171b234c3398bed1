package index

import (
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
// The cache holds no pointers the collector must follow: entries are offsets into chunks of bytes.
//
// It also keeps the state's applied seq, which every decision reads (the server answers it): the
// first View of the state reads it from the meta bucket (through the overlay), the later ones from
// here, sparing the meta bucket's open and its Get.

const (
	ucMaxBytes   = 8 << 20 // bytes of JSON cached per state; beyond, misses are not cached
	ucMaxEntries = 1 << 16
	ucMaxAbsent  = 1 << 12  // of them absent users (unknown subjects: a request may name any)
	ucChunk      = 64 << 10 // arena chunk; a larger value gets a chunk of its own
	ucMinSlots   = 256
)

// ucEntry is one cached user: its id and JSON at [off, off+klen+vlen) of chunk ci (vlen -1: the
// user is absent).
type ucEntry struct {
	hash uint64
	ci   uint32
	off  uint32
	klen uint32
	vlen int32
}

type userCache struct {
	txid uint64
	st   *ovState
	seed maphash.Seed

	mu     sync.RWMutex
	slots  []uint32 // a power of two; 0 empty, else entry index+1
	ents   []ucEntry
	chunks [][]byte
	bytes  int
	absent int

	// seq is the state's applied seq, valid once seqOK is set (ReadTx.AppliedSeq).
	seq   atomic.Uint64
	seqOK atomic.Bool
}

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
	return &userCache{txid: txid, st: st, seed: maphash.MakeSeed(), slots: make([]uint32, ucMinSlots)}
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
		e := &c.ents[s-1]
		if e.hash != h || int(e.klen) != len(id) {
			continue
		}
		b := c.chunks[e.ci][e.off:]
		if string(b[:e.klen]) != id {
			continue
		}
		if e.vlen < 0 {
			return nil, true
		}
		end := e.klen + uint32(e.vlen)
		return b[e.klen:end:end], true
	}
}

// put caches the JSON of user id (nil: absent), unless the cache is full or already has it.
func (c *userCache) put(id string, val []byte) {
	n := len(id) + len(val)
	h := maphash.String(c.seed, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ents) >= ucMaxEntries || c.bytes+n > ucMaxBytes || (val == nil && c.absent >= ucMaxAbsent) {
		return
	}
	mask := uint64(len(c.slots) - 1)
	i := h & mask
	for ; c.slots[i] != 0; i = (i + 1) & mask {
		e := &c.ents[c.slots[i]-1]
		if e.hash == h && int(e.klen) == len(id) && string(c.chunks[e.ci][e.off:e.off+e.klen]) == id {
			return // another View of the state cached it meanwhile (the same bytes)
		}
	}
	ci := len(c.chunks) - 1
	if ci < 0 || len(c.chunks[ci])+n > cap(c.chunks[ci]) {
		c.chunks = append(c.chunks, make([]byte, 0, max(ucChunk, n)))
		ci++
	}
	e := ucEntry{hash: h, ci: uint32(ci), off: uint32(len(c.chunks[ci])), klen: uint32(len(id)), vlen: int32(len(val))}
	if val == nil {
		e.vlen = -1
		c.absent++
	}
	c.chunks[ci] = append(append(c.chunks[ci], id...), val...)
	c.bytes += n
	c.ents = append(c.ents, e)
	c.slots[i] = uint32(len(c.ents))
	if len(c.ents)*4 > len(c.slots)*3 {
		c.rehash(2 * len(c.slots))
	}
}

// rehash rebuilds the slots with n of them. Callers hold mu for writing.
func (c *userCache) rehash(n int) {
	c.slots = make([]uint32, n)
	mask := uint64(n - 1)
	for k := range c.ents {
		i := c.ents[k].hash & mask
		for c.slots[i] != 0 {
			i = (i + 1) & mask
		}
		c.slots[i] = uint32(k + 1)
	}
}

// len is the number of users cached (present or absent).
func (c *userCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.ents)
}
