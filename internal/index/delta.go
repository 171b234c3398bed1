package index

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The delta log's entries (overlay.go): one per batch, holding its changes, under its
// generation. Two layouts (docs/design.md, "Index: delta log, overlay and merge"):
//   - nested (written since session 9 of issue 17): the entry is the one value, key
//     deltaEntryKey, of a bucket of its own named the generation (8 bytes big-endian) followed by
//     deltaNestedTag (8 bytes: a 16-byte name keeps the 16-byte bucket header after it aligned
//     in the leaf, which bbolt otherwise copies at every lookup);
//   - flat (written before; still read, and written by the tests through tuning.flatDelta): the
//     entry is the value of the delta bucket's key = the generation (8 bytes).
//
// bbolt rewrites a leaf whole at every commit that changes it, and splits a leaf only when it
// holds more than four keys. Flat entries of a batch of 1,000 random events (~210 KB each)
// therefore sat three or four to a leaf, and each batch's commit wrote the two to four entries
// before its own again: ~4.5 entries, ~960 KiB, per batch. A nested entry is written once, by
// the commit that creates it (~225 KiB); the delta bucket's own leaf holds only the 16-byte
// headers of the generations' buckets. Keys of either layout sort by generation (gen < gen+tag <
// gen+1), so a file upgraded with flat entries in its log reads both in order, and merges
// delete both; code from before the nested layout refuses a file whose log holds nested entries
// (a key that is not 8 bytes is a corrupt log to it) instead of reading it without them.

// deltaNestedTag ends the name of a nested entry's bucket; deltaEntryKey is the entry's key in it.
const deltaNestedTag = "\x01nested\x00"

var deltaEntryKey = []byte{0}

// parseDeltaKey reads a delta bucket key: the generation, and whether the entry is nested (a
// bucket) or flat (a value). ok is false for any other key.
func parseDeltaKey(k []byte) (gen uint64, nested, ok bool) {
	switch {
	case len(k) == 8:
		return binary.BigEndian.Uint64(k), false, true
	case len(k) == 8+len(deltaNestedTag) && string(k[8:]) == deltaNestedTag:
		return binary.BigEndian.Uint64(k[:8]), true, true
	}
	return 0, false, false
}

// deltaAt returns the entry under key k of the delta bucket b, whose value the cursor gave as v
// (nil for a nested entry's bucket). nil when absent.
func deltaAt(b *bolt.Bucket, k, v []byte, nested bool) []byte {
	if !nested {
		return v
	}
	if sb := b.Bucket(k); sb != nil {
		return sb.Get(deltaEntryKey)
	}
	return nil
}

// getDelta returns the entry of generation gen in the delta bucket b, in either layout (nil when
// absent).
func getDelta(b *bolt.Bucket, gen uint64) []byte {
	var k [8 + len(deltaNestedTag)]byte
	binary.BigEndian.PutUint64(k[:8], gen)
	copy(k[8:], deltaNestedTag)
	if sb := b.Bucket(k[:]); sb != nil {
		return sb.Get(deltaEntryKey)
	}
	return b.Get(k[:8])
}

// putDelta writes e as the entry of generation gen into the delta bucket b, nested (flat: the
// layout before, for the tests of files written by older code). bbolt keeps e until the commit.
func putDelta(b *bolt.Bucket, gen uint64, e []byte, flat bool) error {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(deltaNestedTag)), gen)
	if flat {
		return b.Put(k, e)
	}
	sb, err := b.CreateBucket(append(k, deltaNestedTag...))
	if err != nil {
		return err
	}
	return sb.Put(deltaEntryKey, e)
}

// deleteDelta deletes the entry under key k of the delta bucket b.
func deleteDelta(b *bolt.Bucket, k []byte, nested bool) error {
	if nested {
		return b.DeleteBucket(k)
	}
	return b.Delete(k)
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

// change is where encodeDelta put one change: the overlay indexes it by (bucket, key) → offset.
type change struct {
	bi         int
	off        uint32 // of the change
	koff, klen uint32 // of its key
}

// encodeDelta encodes p as a delta entry: per key, the bucket number, uvarint key length, key,
// uvarint (value length + 1, or 0 for a deletion), value. It returns the entry and each change's
// offset in it.
func (p *pending) encodeDelta() ([]byte, []change) {
	n, keys := 0, 0
	for bi := range p {
		keys += len(p[bi])
		for k, v := range p[bi] {
			n += 1 + 2*binary.MaxVarintLen32 + len(k) + len(v)
		}
	}
	out := make([]byte, 0, n) // fresh: bbolt keeps a reference to values until commit
	chs := make([]change, 0, keys)
	for bi := range p {
		for k, v := range p[bi] {
			c := change{bi: bi, off: uint32(len(out))}
			out = append(out, byte(bi))
			out = binary.AppendUvarint(out, uint64(len(k)))
			c.koff, c.klen = uint32(len(out)), uint32(len(k))
			chs = append(chs, c)
			out = append(out, k...)
			if v == nil {
				out = binary.AppendUvarint(out, 0)
				continue
			}
			out = binary.AppendUvarint(out, uint64(len(v))+1)
			out = append(out, v...)
		}
	}
	return out, chs
}

var errCorruptDelta = errors.New("corrupt delta entry")

// nextChange decodes the change at the start of b; rest is what follows it. key and val alias b.
func nextChange(b []byte) (bi int, key, val, rest []byte, err error) {
	if len(b) == 0 {
		return 0, nil, nil, nil, errCorruptDelta
	}
	bi = int(b[0])
	if bi >= len(bucketNames) {
		return 0, nil, nil, nil, errCorruptDelta
	}
	b = b[1:]
	kl, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < kl {
		return 0, nil, nil, nil, errCorruptDelta
	}
	key = b[w : w+int(kl)]
	b = b[w+int(kl):]
	vl, w := binary.Uvarint(b)
	if w <= 0 || (vl > 0 && uint64(len(b)-w) < vl-1) {
		return 0, nil, nil, nil, errCorruptDelta
	}
	b = b[w:]
	if vl > 0 {
		val = b[: vl-1 : vl-1]
		b = b[vl-1:]
	}
	return bi, key, val, b, nil
}

// refValue returns the key and value of r in e (val nil: deleted).
func refValue(e []byte, r mref) (key, val []byte, err error) {
	end := uint64(r.koff) + uint64(r.klen)
	if end > uint64(len(e)) {
		return nil, nil, errCorruptDelta
	}
	key, b := e[r.koff:end], e[end:]
	vl, w := binary.Uvarint(b)
	if w <= 0 || (vl > 0 && uint64(len(b)-w) < vl-1) {
		return nil, nil, errCorruptDelta
	}
	if vl > 0 {
		val = b[w : w+int(vl-1) : w+int(vl-1)]
	}
	return key, val, nil
}

// decodeDelta calls fn with each change of a delta entry and its offset. The key and value alias
// b.
func decodeDelta(b []byte, fn func(bi int, key, val []byte, off uint32)) error {
	all := len(b)
	for len(b) > 0 {
		off := uint32(all - len(b))
		bi, key, val, rest, err := nextChange(b)
		if err != nil {
			return err
		}
		b = rest
		fn(bi, key, val, off)
	}
	return nil
}

// deltaCache is a deltaSource over one bbolt transaction, remembering the last entries it found
// (a reader's lookups and a merge's chunk often go back to the same batch).
type deltaCache struct {
	tx     *bolt.Tx
	b      *bolt.Bucket
	looked bool
	gens   [4]uint64
	vals   [4][]byte
	next   int
	// err is set by missing: what the transaction read is not the index's state.
	err error
}

func (c *deltaCache) missing(gen uint64) {
	if c.err == nil {
		c.err = fmt.Errorf("index: %w: the delta log's entry %d, which the overlay points into, is absent or unreadable", ErrDamaged, gen)
	}
}

func (c *deltaCache) entry(gen uint64) []byte {
	for i, g := range c.gens {
		if g == gen && c.vals[i] != nil {
			return c.vals[i]
		}
	}
	if !c.looked {
		c.b, c.looked = c.tx.Bucket(bucketDelta), true
	}
	if c.b == nil {
		return nil
	}
	v := getDelta(c.b, gen)
	if v != nil {
		c.gens[c.next], c.vals[c.next] = gen, v
		c.next = (c.next + 1) % len(c.gens)
	}
	return v
}

// genTable gives the delta entries of the generations of one layer in one bbolt transaction,
// each looked up once (a merge reads them all, in random order), by generation relative to the
// layer's base.
type genTable struct {
	vals [][]byte
	b    *bolt.Bucket
	base uint64
}

func newGenTable(tx *bolt.Tx, l *layer) *genTable {
	return &genTable{base: l.base, b: tx.Bucket(bucketDelta)}
}

// rel returns the entry of generation base+g (nil when absent).
func (t *genTable) rel(g uint32) []byte {
	if g == 0 || t.b == nil {
		return nil
	}
	i := int(g - 1)
	if i >= len(t.vals) {
		t.vals = append(t.vals, make([][]byte, i+1-len(t.vals))...)
	}
	if t.vals[i] == nil {
		t.vals[i] = getDelta(t.b, t.base+uint64(g))
	}
	return t.vals[i]
}

// key returns r's key (nil when its entry is absent or too short).
func (t *genTable) key(r mref) []byte {
	e := t.rel(r.gen)
	if end := uint64(r.koff) + uint64(r.klen); end <= uint64(len(e)) {
		return e[r.koff:end]
	}
	return nil
}
