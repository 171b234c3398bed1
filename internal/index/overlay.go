package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// The overlay: the changes of the batches committed since the last merge, held in memory, in
// front of the main buckets (docs/design.md, "Index: delta log, overlay and merge").
//
// An Update does not write the users, records, byuser and meta buckets. It writes one entry to
// the delta bucket, key = the batch's generation (8 bytes big-endian, so each batch appends to the
// bucket's last pages), value = the final value of every key the batch changed (encodeDelta),
// and commits (fsynced). Then it inserts those values into the overlay as versions tagged with the
// generation and publishes the generation. Readers look a key up in the overlay first (the
// newest version not newer than their generation), then in the main buckets. When the overlay
// reaches Config.MergeBytes, the Update that crossed it merges it (merge.go).

const (
	nShards = 16
	// Estimated bytes of a version and of a key in the overlay beyond their own bytes (a version
	// struct and its share of the slice; a map slot, string and slice headers), so that
	// layer.size follows the heap the overlay takes (BENCHMARKS.md, "Random replication").
	versionOverhead = 48
	keyOverhead     = 96
)

// version is one value of a key in the overlay; val nil means deleted.
type version struct {
	gen uint64
	val []byte
}

type shard struct {
	mu sync.RWMutex
	m  map[string][]version
}

// layer is the overlay of one merge period: every version of every key changed by the batches of
// that period, by bucket. Versions are only appended (under wmu, by Update) to the active layer;
// freeze makes it the frozen layer (never changed again, merged in the background) and starts a
// new active one, so a reader still holding a layer reads it as it was.
type layer struct {
	seed   maphash.Seed
	b      [4][nShards]shard
	n      atomic.Int64 // versions held
	size   atomic.Int64 // estimated bytes held
	umu    sync.RWMutex
	byUser map[string][]string // user → its byuser keys in the layer, for prefix scans
	// top is the newest generation of a frozen layer (set by freeze, under wmu): the merge drops
	// the delta entries up to it.
	top uint64
}

func newLayer() *layer {
	l := &layer{seed: maphash.MakeSeed(), byUser: map[string][]string{}}
	for i := range l.b {
		for j := range l.b[i] {
			l.b[i][j].m = map[string][]version{}
		}
	}
	return l
}

func (l *layer) shard(bi int, key []byte) *shard {
	return &l.b[bi][maphash.Bytes(l.seed, key)&(nShards-1)]
}

// lookup returns the newest value of key not newer than gen; found is false when the layer has
// no such version (then the main bucket has the value).
func (l *layer) lookup(bi int, key []byte, gen uint64) (val []byte, found bool) {
	sh := l.shard(bi, key)
	sh.mu.RLock()
	vs := sh.m[string(key)]
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].gen <= gen {
			val, found = vs[i].val, true
			break
		}
	}
	sh.mu.RUnlock()
	return val, found
}

// insert appends a version of key. Callers hold wmu (one inserter at a time).
func (l *layer) insert(bi int, key string, gen uint64, val []byte) {
	sh := l.shard(bi, []byte(key))
	sh.mu.Lock()
	vs, had := sh.m[key]
	sh.m[key] = append(vs, version{gen: gen, val: val})
	sh.mu.Unlock()
	add := int64(versionOverhead + len(val))
	if !had {
		add += int64(keyOverhead + len(key))
		if bi == bByUser {
			user, _, _ := strings.Cut(key, "\x00")
			l.umu.Lock()
			l.byUser[user] = append(l.byUser[user], key)
			l.umu.Unlock()
			add += int64(keyOverhead/2 + len(key))
		}
	}
	l.n.Add(1)
	l.size.Add(add)
}

// keys returns the keys of bucket bi in the layer that start with prefix and are >= start,
// unsorted (any version, whatever its generation).
func (l *layer) keys(bi int, prefix, start []byte, dst []string) []string {
	match := func(k string) bool {
		return strings.HasPrefix(k, string(prefix)) && k >= string(start)
	}
	if bi == bByUser {
		if user, _, ok := bytes.Cut(prefix, []byte{0}); ok {
			l.umu.RLock()
			for _, k := range l.byUser[string(user)] {
				if match(k) {
					dst = append(dst, k)
				}
			}
			l.umu.RUnlock()
			return dst
		}
	}
	for i := range l.b[bi] {
		sh := &l.b[bi][i]
		sh.mu.RLock()
		for k := range sh.m {
			if match(k) {
				dst = append(dst, k)
			}
		}
		sh.mu.RUnlock()
	}
	return dst
}

// ovKV is a key of the overlay with its value as a reader sees it (val nil: deleted).
type ovKV struct {
	bi  int
	key string
	val []byte
}

// latest returns the newest version of every key, sorted by bucket and key: what a merge writes.
func (l *layer) latest() []ovKV {
	out := make([]ovKV, 0, l.n.Load())
	for bi := range l.b {
		start := len(out)
		for i := range l.b[bi] {
			sh := &l.b[bi][i]
			sh.mu.RLock()
			for k, vs := range sh.m {
				out = append(out, ovKV{bi: bi, key: k, val: vs[len(vs)-1].val})
			}
			sh.mu.RUnlock()
		}
		slices.SortFunc(out[start:], func(a, b ovKV) int { return strings.Compare(a.key, b.key) })
	}
	return out
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

// pending is one write transaction's changes by bucket (val nil: deleted), inserted into the
// overlay at commit.
type pending [4]map[string][]byte

func newPending() *pending {
	var p pending
	for i := range p {
		p[i] = map[string][]byte{}
	}
	return &p
}

func (p *pending) empty() bool {
	for i := range p {
		if len(p[i]) > 0 {
			return false
		}
	}
	return true
}

// encodeDelta encodes p as a delta entry: per key, the bucket number, uvarint key length, key,
// uvarint (value length + 1, or 0 for a deletion), value.
func (p *pending) encodeDelta() []byte {
	n := 0
	for bi := range p {
		for k, v := range p[bi] {
			n += 1 + 2*binary.MaxVarintLen32 + len(k) + len(v)
		}
	}
	out := make([]byte, 0, n) // fresh: bbolt keeps a reference to values until commit
	for bi := range p {
		for k, v := range p[bi] {
			out = append(out, byte(bi))
			out = binary.AppendUvarint(out, uint64(len(k)))
			out = append(out, k...)
			if v == nil {
				out = binary.AppendUvarint(out, 0)
				continue
			}
			out = binary.AppendUvarint(out, uint64(len(v))+1)
			out = append(out, v...)
		}
	}
	return out
}

var errCorruptDelta = errors.New("corrupt delta entry")

// decodeDelta calls fn with each change of a delta entry. The key and value alias b.
func decodeDelta(b []byte, fn func(bi int, key, val []byte)) error {
	for len(b) > 0 {
		bi := int(b[0])
		if bi >= len(bucketNames) {
			return errCorruptDelta
		}
		b = b[1:]
		kl, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < kl {
			return errCorruptDelta
		}
		key := b[w : w+int(kl)]
		b = b[w+int(kl):]
		vl, w := binary.Uvarint(b)
		if w <= 0 || (vl > 0 && uint64(len(b)-w) < vl-1) {
			return errCorruptDelta
		}
		b = b[w:]
		var val []byte
		if vl > 0 {
			val = b[: vl-1 : vl-1]
			b = b[vl-1:]
		}
		fn(bi, key, val)
	}
	return nil
}
