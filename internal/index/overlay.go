package index

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// The overlay: the changes of the batches committed since the last merge, indexed in memory, in
// front of the main buckets (docs/design.md, "Index: delta log, overlay and merge").
//
// An Update does not write the users, records, byuser and meta buckets. It writes one entry to
// the delta bucket, key = the batch's generation (8 bytes big-endian, so each batch appends to the
// bucket's last pages), value = the final value of every key the batch changed (delta.go), and
// commits (fsynced). Then it indexes those changes in the overlay as versions tagged with the
// generation and publishes the generation. A version holds no key and no value: it points at its
// change inside the delta entry (generation, offset), which a reader finds in the delta bucket of
// its own read transaction (memory-mapped, not heap). Readers look a key up in the overlay first
// (the newest version not newer than their generation), then in the main buckets. When the
// overlay reaches Config.MergeBytes, the Update that crossed it merges it (merge.go).

const nShards = 16

// ref is one change of a key: in the delta entry of generation base+gen, at offset off.
type ref struct {
	gen, off uint32
}

// version is an older change of a key; prev is the index+1 of the key's version before it in
// its shard's old versions (0: none).
type version struct {
	ref
	prev uint32
}

// blocks is an append-only array in blocks of 1<<blockBits entries: it grows without copying and
// holds at most one block of unused capacity (what Config.MergeBytes counts is what it takes).
type blocks[T any] struct {
	b [][]T
	n uint32
}

const blockBits = 6

func (a *blocks[T]) at(i uint32) *T { return &a.b[i>>blockBits][i&(1<<blockBits-1)] }

// push appends x and returns the bytes of heap that took (elem bytes an entry).
func (a *blocks[T]) push(x T, elem int64) (grown int64) {
	if a.n&(1<<blockBits-1) == 0 {
		c := cap(a.b)
		a.b = append(a.b, make([]T, 1<<blockBits))
		grown = elem<<blockBits + int64(cap(a.b)-c)*24
	}
	*a.at(a.n) = x
	a.n++
	return grown
}

// shard is an open-addressing hash table of keys (linear probing): per key 32 bits of its hash
// and its newest change; the older ones, of the few keys changed more than once in a layer, in
// old, chained from older. A key whose hash bits match is compared with the key's bytes, read
// from the delta log.
type shard struct {
	mu    sync.RWMutex
	slots []uint32       // len a power of two (or 0); 0 empty, else key index+1
	hash  blocks[uint32] // by key index: bits 4..35 of its hash (the slot's start; the bits below pick the shard)
	head  blocks[ref]
	old   blocks[version]
	older map[uint32]uint32 // key index → index+1 in old of its version before head
}

// layer is the overlay of one merge period: every version of every key changed by the batches of
// that period, by bucket. Versions are only appended (under wmu, by Update) to the active layer;
// freeze makes it the frozen layer (never changed again, merged in the background) and starts a
// new active one, so a reader still holding a layer reads it as it was.
type layer struct {
	seed maphash.Seed
	base uint64 // generations in the layer are > base; versions hold gen-base
	b    [4][nShards]shard
	n    atomic.Int64 // versions held
	size atomic.Int64 // bytes of heap held (the arrays' blocks, the per-user lists' maps)
	umu  sync.RWMutex
	// byUser lists, per user, its byuser keys in the layer (shard<<28 | key index), for prefix
	// scans.
	byUser map[string][]uint32
	// top is the newest generation of a frozen layer (set by freeze, under wmu): the merge drops
	// the delta entries up to it.
	top uint64
}

const (
	layerOverhead = int64(4*nShards*176 + 256) // the shards' structs, the map header
	userOverhead  = 128                        // a byUser map slot (at its load factor), the string
	olderOverhead = 24                         // a slot of a shard's older map, at its load factor
	keyIndexBits  = 28                         // of a byUser reference; the shard above it
)

func newLayer(base uint64) *layer {
	l := &layer{seed: maphash.MakeSeed(), base: base, byUser: map[string][]uint32{}}
	l.size.Store(layerOverhead)
	return l
}

// deltaSource gives the delta entry of a generation in one bbolt transaction (nil when absent).
type deltaSource interface {
	entry(gen uint64) []byte
	// missing records that a version of the overlay points at an entry that is absent or
	// unreadable: the overlay and the delta log disagree, so nothing read from the transaction
	// can be trusted (the reader fails closed instead of falling back to the main buckets).
	missing(gen uint64)
}

// keyAt returns the key and value of version v (ok false when its delta entry is absent from src
// or unreadable).
func (l *layer) keyAt(src deltaSource, v ref) (key, val []byte, ok bool) {
	gen := l.base + uint64(v.gen)
	e := src.entry(gen)
	if e == nil || uint64(v.off) >= uint64(len(e)) {
		src.missing(gen)
		return nil, nil, false
	}
	_, key, val, _, err := nextChange(e[v.off:])
	if err != nil {
		src.missing(gen)
		return nil, nil, false
	}
	return key, val, true
}

// visible returns the newest version of key k of sh not newer than gen (ok false: none).
// Callers hold sh.mu.
func (l *layer) visible(sh *shard, k uint32, gen uint64) (ref, bool) {
	if gen < l.base {
		return ref{}, false
	}
	g := gen - l.base
	if v := *sh.head.at(k); uint64(v.gen) <= g {
		return v, true
	}
	for p := sh.older[k]; p != 0; {
		v := *sh.old.at(p - 1)
		if uint64(v.gen) <= g {
			return v.ref, true
		}
		p = v.prev
	}
	return ref{}, false
}

// tagShift is where a byuser key's tag sits in its hash (keyHash): the top 8 of the 32 bits a
// shard stores per key (bits 4..35 of the hash).
const tagShift = 28

// keyHash is the hash of key in bucket bi. For a byuser key (user, type, location, id), bits
// tagShift..tagShift+7 are a hash of its (type, location), its tag: a prefix scan of one user,
// type and location (SubjectRecords) skips the keys whose stored tag differs without reading them
// from the delta log. The tag costs no memory; the other 24 stored bits and the key's bytes still
// tell keys apart.
func (l *layer) keyHash(bi int, key []byte) uint64 {
	h := maphash.Bytes(l.seed, key)
	if bi == bByUser {
		if tl, ok := byUserTypeLoc(key); ok {
			h = h&^(0xff<<tagShift) | uint64(l.tag(tl))<<tagShift
		}
	}
	return h
}

// tag is the tag of the (type, location) part of a byuser key.
func (l *layer) tag(typeLoc []byte) uint8 { return uint8(maphash.Bytes(l.seed, typeLoc)) }

// storedTag is the tag of a stored hash (32 bits of keyHash, from bit 4).
func storedTag(stored uint32) uint8 { return uint8(stored >> (tagShift - 4)) }

// byUserTypeLoc returns the `<type> 0x00 <loc>` part of a byuser key or prefix (`<user> 0x00
// <type> 0x00 <loc> 0x00 …`); ok is false when k has fewer than three NUL bytes.
func byUserTypeLoc(k []byte) (typeLoc []byte, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return nil, false
	}
	j := bytes.IndexByte(k[i+1:], 0)
	if j < 0 {
		return nil, false
	}
	n := bytes.IndexByte(k[i+1+j+1:], 0)
	if n < 0 {
		return nil, false
	}
	return k[i+1 : i+1+j+1+n], true
}

// lookup returns the newest value of key not newer than gen; found is false when the layer has
// no such version (then the main bucket has the value). src must hold every delta entry of the
// layer up to gen.
func (l *layer) lookup(bi int, key []byte, gen uint64, src deltaSource) (val []byte, found bool) {
	h := l.keyHash(bi, key)
	sh := &l.b[bi][h&(nShards-1)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if len(sh.slots) == 0 {
		return nil, false
	}
	mask := uint64(len(sh.slots) - 1)
	for i := uint64(uint32(h>>4)) & mask; ; i = (i + 1) & mask {
		s := sh.slots[i]
		if s == 0 {
			return nil, false
		}
		k := s - 1
		if *sh.hash.at(k) != uint32(h>>4) {
			continue
		}
		v, ok := l.visible(sh, k, gen)
		if !ok {
			continue // this key has no version for gen (or it is another key)
		}
		kk, vv, ok := l.keyAt(src, v)
		if ok && bytes.Equal(kk, key) {
			return vv, true
		}
	}
}

// insert adds the version (gen, off) of key. Callers hold wmu (one inserter at a time); src must
// hold every delta entry of the layer.
func (l *layer) insert(bi int, key []byte, gen uint64, off uint32, src deltaSource) {
	h := l.keyHash(bi, key)
	sh := &l.b[bi][h&(nShards-1)]
	v := ref{gen: uint32(gen - l.base), off: off}
	var grown int64
	sh.mu.Lock()
	k, found := l.find(sh, h, key, src)
	if found {
		prev, had := sh.older[k]
		grown += sh.old.push(version{ref: *sh.head.at(k), prev: prev}, 12)
		if sh.older == nil {
			sh.older = map[uint32]uint32{}
		}
		if !had {
			grown += olderOverhead
		}
		sh.older[k] = sh.old.n
		*sh.head.at(k) = v
	} else {
		k = sh.hash.n
		grown += sh.hash.push(uint32(h>>4), 4) + sh.head.push(v, 8)
		if int(sh.hash.n)*4 > len(sh.slots)*3 {
			grown += sh.rehash(max(16, 2*len(sh.slots)))
		} else {
			sh.place(k)
		}
	}
	sh.mu.Unlock()
	if !found && bi == bByUser {
		user, _, _ := bytes.Cut(key, []byte{0})
		ref := uint32(h&(nShards-1))<<keyIndexBits | k
		l.umu.Lock()
		list, had := l.byUser[string(user)]
		if !had {
			grown += userOverhead + int64(len(user))
		}
		c := cap(list)
		list = append(list, ref)
		grown += int64(cap(list)-c) * 4
		l.byUser[string(user)] = list
		l.umu.Unlock()
	}
	l.n.Add(1)
	l.size.Add(grown)
}

// find returns the index of key (hash h) in sh. Callers hold sh.mu.
func (l *layer) find(sh *shard, h uint64, key []byte, src deltaSource) (uint32, bool) {
	if len(sh.slots) == 0 {
		return 0, false
	}
	mask := uint64(len(sh.slots) - 1)
	for i := uint64(uint32(h>>4)) & mask; ; i = (i + 1) & mask {
		s := sh.slots[i]
		if s == 0 {
			return 0, false
		}
		if k := s - 1; *sh.hash.at(k) == uint32(h>>4) {
			if kk, _, ok := l.keyAt(src, *sh.head.at(k)); ok && bytes.Equal(kk, key) {
				return k, true
			}
		}
	}
}

// place puts key index k into its free slot. Callers hold sh.mu for writing.
func (sh *shard) place(k uint32) {
	mask := uint64(len(sh.slots) - 1)
	i := uint64(*sh.hash.at(k)) & mask
	for sh.slots[i] != 0 {
		i = (i + 1) & mask
	}
	sh.slots[i] = k + 1
}

// rehash rebuilds the slots with n of them and returns the bytes that added.
func (sh *shard) rehash(n int) int64 {
	old := len(sh.slots)
	sh.slots = make([]uint32, n)
	for k := range sh.hash.n {
		sh.place(k)
	}
	return int64(n-old) * 4
}

// keys returns the keys of bucket bi in the layer that start with prefix and are >= start and
// have a version not newer than gen, unsorted. A byuser prefix of one user, type and location
// reads only the keys of that user whose tag is the prefix's (keyHash).
func (l *layer) keys(bi int, prefix, start []byte, gen uint64, src deltaSource, dst []string) []string {
	var (
		tagged bool
		tag    uint8
	)
	add := func(sh *shard, k uint32) {
		if tagged && storedTag(*sh.hash.at(k)) != tag {
			return // another type or location: not under prefix
		}
		v, ok := l.visible(sh, k, gen)
		if !ok {
			return
		}
		kk, _, ok := l.keyAt(src, v)
		if ok && bytes.HasPrefix(kk, prefix) && bytes.Compare(kk, start) >= 0 {
			dst = append(dst, string(kk))
		}
	}
	if bi == bByUser {
		if user, _, ok := bytes.Cut(prefix, []byte{0}); ok {
			if tl, ok := byUserTypeLoc(prefix); ok {
				tagged, tag = true, l.tag(tl)
			}
			l.umu.RLock()
			for _, ref := range l.byUser[string(user)] {
				sh := &l.b[bi][ref>>keyIndexBits]
				sh.mu.RLock()
				add(sh, ref&(1<<keyIndexBits-1))
				sh.mu.RUnlock()
			}
			l.umu.RUnlock()
			return dst
		}
	}
	for i := range l.b[bi] {
		sh := &l.b[bi][i]
		sh.mu.RLock()
		for k := range sh.hash.n {
			add(sh, k)
		}
		sh.mu.RUnlock()
	}
	return dst
}

// mref is the newest version of a key of a frozen layer, as a merge writes it: its key is at
// [koff, koff+klen) of the delta entry of generation base+gen, its value encoded right after it.
type mref struct {
	gen  uint32
	koff uint32
	klen uint16
	bi   uint8
}

// latest returns the newest version of every key, sorted by bucket and key (read from src, which
// must hold every delta entry of the layer): what a merge writes.
func (l *layer) latest(src *genTable) ([]mref, error) {
	out := make([]mref, 0, l.n.Load())
	// One bucket's references with the first 8 bytes of their keys, and the radix sort's scratch
	// space: both reused from bucket to bucket.
	var keyed, buf []keyedRef
	for bi := range l.b {
		keyed = keyed[:0]
		for i := range l.b[bi] {
			sh := &l.b[bi][i]
			sh.mu.RLock()
			for k := range sh.hash.n {
				v := *sh.head.at(k)
				e := src.rel(v.gen)
				if e == nil || uint64(v.off) >= uint64(len(e)) {
					sh.mu.RUnlock()
					return nil, fmt.Errorf("index: merge: delta log entry %d: %w", l.base+uint64(v.gen), errCorruptDelta)
				}
				_, key, _, _, err := nextChange(e[v.off:])
				if err != nil {
					sh.mu.RUnlock()
					return nil, fmt.Errorf("index: merge: delta log entry %d: %w", l.base+uint64(v.gen), err)
				}
				koff := uint32(cap(e) - cap(key)) // key aliases e
				r := mref{gen: v.gen, koff: koff, klen: uint16(len(key)), bi: uint8(bi)}
				keyed = append(keyed, keyedRef{word: keyWord(key, 0), r: r})
			}
			sh.mu.RUnlock()
		}
		if cap(buf) < len(keyed) {
			buf = make([]keyedRef, cap(keyed))
		}
		sortKeyedBuf(keyed, buf[:len(keyed)], 0, src.key)
		for _, k := range keyed {
			out = append(out, k.r)
		}
	}
	return out, nil
}

// ovKV is a key of the overlay with its value as a reader sees it (val nil: deleted).
type ovKV struct {
	key string
	val []byte
}

// ovState is what a reader pairs with its bbolt read transaction: the active layer, the frozen
// layer being merged (nil when none), the generation of the last published batch, and the epoch,
// which changes when the main buckets are about to change or changed (freeze, before a merge's
// first commit; the drop of the frozen layer, after its last). View retries when the epoch changed
// between loading the state and beginning its transaction (see View and merge.go). States are
// replaced, never changed, under handle.pub.
type ovState struct {
	lay   *layer
	frz   *layer
	gen   uint64
	epoch uint64
}
