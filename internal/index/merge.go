package index

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// mergeChunkKeys is the number of overlay keys a merge writes per commit. The keys go in sorted
// order, so a chunk dirties the leaf pages of one key range; the chunk bounds the dirty pages
// (and so the memory) one commit holds. Measured at 1,000,000 records (BENCHMARKS.md, "Random
// replication"): 2,048 keys per commit merge 53,000 events in ~2.1 s against ~1.8 s for 8,192,
// with a quarter of the heap growth.
const mergeChunkKeys = 2048

// merge writes the overlay of h into its main buckets and empties the delta log. The caller holds
// wmu (no batch commits meanwhile) and h is the live handle.
//
// Why a reader never sees a mix (View, docs/design.md): a reader pairs its read transaction with
// the state it loaded just before beginning it, and retries when the epoch changed in between.
//  1. The merge first publishes a new epoch. A reader of an older state could hold a generation
//     older than the layer's newest versions; it retries if a chunk commit could be in its
//     transaction. A reader of the new epoch has the layer's newest generation: every key the
//     chunks write, it finds in the layer, with the value the chunk writes.
//  2. The chunks commit, each fsynced; the last one also empties the delta log. A crash anywhere
//     leaves the delta log whole until that last commit: Open rebuilds the same overlay, which
//     hides whatever the main buckets got (the merge writes the same values again).
//  3. Only then is an empty layer published, under another new epoch. A reader still holding the
//     old layer (its transaction began before the last commit, or after it) finds every merged key
//     in it: the layer is never changed once replaced.
func (ix *Index) merge(h *handle) error {
	st := h.ov.Load()
	if st.lay.n.Load() == 0 {
		return nil
	}
	h.ov.Store(&ovState{lay: st.lay, gen: st.gen, epoch: st.epoch + 1})
	all := st.lay.latest()
	chunk := ix.mergeChunk
	if chunk <= 0 {
		chunk = mergeChunkKeys
	}
	for i, n := 0, 0; i < len(all); i, n = i+chunk, n+1 {
		part := all[i:min(i+chunk, len(all))]
		last := i+chunk >= len(all)
		err := h.db.Update(func(tx *bolt.Tx) error {
			var buckets [4]*bolt.Bucket
			for _, kv := range part {
				b := buckets[kv.bi]
				if b == nil {
					b = tx.Bucket(bucketNames[kv.bi])
					if ix.tune.fillPercent > 0 && (kv.bi == bRecords || kv.bi == bByUser) {
						b.FillPercent = ix.tune.fillPercent
					}
					buckets[kv.bi] = b
				}
				var err error
				if kv.val == nil {
					err = b.Delete([]byte(kv.key))
				} else {
					err = b.Put([]byte(kv.key), kv.val)
				}
				if err != nil {
					return fmt.Errorf("index: merge %q: %w", kv.key, err)
				}
			}
			if !last {
				return nil
			}
			if err := tx.DeleteBucket(bucketDelta); err != nil {
				return fmt.Errorf("index: merge: empty the delta log: %w", err)
			}
			_, err := tx.CreateBucket(bucketDelta)
			return err
		})
		if err != nil {
			return err
		}
		if ix.hooks.mergeCommitted != nil {
			if err := ix.hooks.mergeCommitted(n, last); err != nil {
				return err
			}
		}
	}
	h.ov.Store(&ovState{lay: newLayer(), gen: st.gen, epoch: st.epoch + 2})
	return nil
}

// loadOverlay rebuilds the overlay of a file just opened from its delta log (in tx), and loads
// the cached applied_seq and counts of the state it gives.
func (ix *Index) loadOverlay(tx *bolt.Tx) (*ovState, error) {
	lay := newLayer()
	var gen uint64
	if b := tx.Bucket(bucketDelta); b != nil {
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return nil, fmt.Errorf("delta log key %q: %w", k, errCorruptDelta)
			}
			gen = decodeUint64(k)
			v = bytes.Clone(v) // out of the memory map; the layer's values alias it
			err := decodeDelta(v, func(bi int, key, val []byte) {
				lay.insert(bi, string(key), gen, val)
			})
			if err != nil {
				return nil, fmt.Errorf("delta log entry %d: %w", gen, err)
			}
		}
	}
	t := &ReadTx{tx: tx, lay: lay, gen: gen}
	c := t.Counts()
	ix.seq.Store(t.AppliedSeq())
	ix.counts.Store(&c)
	return &ovState{lay: lay, gen: gen}, nil
}

// fileSeq is the applied_seq of tx's file as Open will see it: the last delta log entry that
// sets it, else the meta bucket's.
func fileSeq(tx *bolt.Tx) (uint64, error) {
	if b := tx.Bucket(bucketDelta); b != nil {
		c := b.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var (
				seq   []byte
				found bool
			)
			err := decodeDelta(v, func(bi int, key, val []byte) {
				if bi == bMeta && bytes.Equal(key, keyAppliedSeq) {
					seq, found = val, true
				}
			})
			if err != nil {
				return 0, fmt.Errorf("index: delta log entry %q: %w", k, err)
			}
			if found {
				return decodeUint64(seq), nil
			}
		}
	}
	if b := tx.Bucket(bucketMeta); b != nil {
		return decodeUint64(b.Get(keyAppliedSeq)), nil
	}
	return 0, nil
}
