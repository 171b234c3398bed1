package index

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// mergeChunkKeys is the number of overlay keys a merge writes per commit. The keys go in sorted
// order, so a chunk dirties the leaf pages of one key range; the chunk bounds the dirty pages
// (and so the memory) one commit holds. Measured at 1,000,000 records (BENCHMARKS.md, "Random
// replication"): 2,048 keys per commit merge 53,000 events in ~2.1 s against ~1.8 s for 8,192,
// with a quarter of the heap growth.
const mergeChunkKeys = 2048

// errMergeStopped is the error of a background merge that Close or ReplaceAll stopped between two
// of its commits (what is merged stays merged; the delta log still holds the whole layer).
var errMergeStopped = errors.New("index: merge stopped")

// bgMerge is a merge running in the background (startMerge). ix.bg is set and cleared under wmu;
// the merge's goroutine writes err before it closes done.
type bgMerge struct {
	done chan struct{}
	stop atomic.Bool
	err  error
}

// mergeRun is what one merge of a frozen layer needs, captured when it starts (tests change the
// Index's fields between merges while one runs).
type mergeRun struct {
	chunk int
	hook  func(chunk int, last bool) error
	stop  *atomic.Bool
}

func (ix *Index) newMergeRun(stop *atomic.Bool) mergeRun {
	chunk := ix.mergeChunk
	if chunk <= 0 {
		chunk = mergeChunkKeys
	}
	return mergeRun{chunk: chunk, hook: ix.hooks.mergeCommitted, stop: stop}
}

// freeze makes h's active layer the frozen one (which must be empty) and starts a new active
// layer, under a new epoch. Callers hold wmu.
func (h *handle) freeze() *layer {
	h.pub.Lock()
	defer h.pub.Unlock()
	cur := h.ov.Load()
	cur.lay.top = cur.gen
	h.ov.Store(&ovState{lay: newLayer(cur.gen), frz: cur.lay, gen: cur.gen, epoch: cur.epoch + 1})
	return cur.lay
}

// publishGen publishes generation gen (a batch just inserted into the active layer).
func (h *handle) publishGen(gen uint64) {
	h.pub.Lock()
	defer h.pub.Unlock()
	cur := h.ov.Load()
	h.ov.Store(&ovState{lay: cur.lay, frz: cur.frz, gen: gen, epoch: cur.epoch})
}

// dropFrozen drops the frozen layer once merged, under a new epoch.
func (h *handle) dropFrozen() {
	h.pub.Lock()
	defer h.pub.Unlock()
	cur := h.ov.Load()
	h.ov.Store(&ovState{lay: cur.lay, gen: cur.gen, epoch: cur.epoch + 1})
}

// startMerge freezes h's active layer and merges it in the background, while later batches go to
// a new active layer (docs/design.md, "Index: delta log, overlay and merge"). Callers hold wmu.
// Back-pressure: a merge still running is waited for first, so at most two layers exist. A
// frozen layer left by a merge that failed or was stopped is merged first, here, synchronously;
// its error is returned.
func (ix *Index) startMerge(h *handle) error {
	_ = ix.waitMerge(false) // its failure leaves the frozen layer in place: merged just below
	if fr := h.ov.Load().frz; fr != nil {
		if err := ix.mergeTimed(h, fr, ix.newMergeRun(nil)); err != nil {
			return err
		}
	}
	if h.ov.Load().lay.n.Load() == 0 {
		return nil
	}
	fr := h.freeze()
	bg := &bgMerge{done: make(chan struct{})}
	run := ix.newMergeRun(&bg.stop)
	ix.bg = bg
	go func() {
		defer close(bg.done)
		bg.err = ix.mergeTimed(h, fr, run)
	}()
	return nil
}

// waitMerge waits for the background merge, if any (asking it to stop after its current commit
// when stop is set), and returns its error. Callers hold wmu.
func (ix *Index) waitMerge(stop bool) error {
	bg := ix.bg
	if bg == nil {
		return nil
	}
	if stop {
		bg.stop.Store(true)
	}
	if ix.hooks.mergeWaiting != nil {
		select {
		case <-bg.done:
		default:
			ix.hooks.mergeWaiting()
		}
	}
	<-bg.done
	ix.bg = nil
	return bg.err
}

// merge merges h's whole overlay now (a frozen layer left over, then the active one), waiting
// for a background merge first: Open in tuning.direct mode and the tests use it. Callers hold wmu.
func (ix *Index) merge(h *handle) error {
	_ = ix.waitMerge(false)
	if fr := h.ov.Load().frz; fr != nil {
		if err := ix.mergeTimed(h, fr, ix.newMergeRun(nil)); err != nil {
			return err
		}
	}
	if h.ov.Load().lay.n.Load() == 0 {
		return nil
	}
	return ix.mergeTimed(h, h.freeze(), ix.newMergeRun(nil))
}

// MergeStats returns the number of merges of the overlay into the index file that ended (done,
// failed or stopped) since Open, and the time they took (docs/design.md, "Index: delta log,
// overlay and merge").
func (ix *Index) MergeStats() (merges uint64, seconds float64) {
	return uint64(ix.merges.Load()), time.Duration(ix.mergeTime.Load()).Seconds()
}

func (ix *Index) mergeTimed(h *handle, fr *layer, run mergeRun) error {
	start := time.Now()
	err := ix.mergeLayer(h, fr, run)
	ix.merges.Add(1)
	ix.mergeTime.Add(int64(time.Since(start)))
	return err
}

// mergeLayer writes the frozen layer fr of h into the main buckets, run.chunk keys per commit,
// drops fr, then drops fr's entries from the delta log in one more commit. It runs without wmu:
// batches commit their delta entries between its commits (bbolt has one writer; a batch waits for
// at most one chunk), into the active layer.
//
// Why a reader never sees a mix (View, docs/design.md): a reader pairs its read transaction with
// the state it loaded just before beginning it, and retries when the epoch changed in between.
//  1. freeze published a new epoch. A reader of an older state could hold a generation older
//     than fr's newest versions; it retries if a chunk commit could be in its transaction. A
//     reader of the new epoch (or a later state of it, a batch's) holds a generation >= fr.top:
//     every key the chunks write, it finds in the active layer (a newer batch's value, which
//     hides the main bucket's) or in fr, with the value the chunk writes.
//  2. The chunks commit, each fsynced. A crash anywhere leaves the delta log whole: Open
//     rebuilds the same overlay, which hides whatever the main buckets got (the next merge
//     writes the same values again).
//  3. Only then is fr dropped from the state, under another new epoch. A reader still holding
//     fr finds every merged key in it (a layer is never changed once frozen), and the delta
//     entries fr's versions point into in its transaction: they are deleted only by the commit
//     after the drop, and a transaction that contains that commit began after the new epoch,
//     so its reader (whose state was loaded before) starts over. An Update's callback is
//     such a reader (Index.beginRead); its commit writes only its own delta entry.
//  4. The commit deleting fr's delta entries (generations up to fr.top; the active layer's
//     entries stay). A crash before it leaves merged entries in the log: Open indexes them
//     again and the next merge writes the same values again.
func (ix *Index) mergeLayer(h *handle, fr *layer, run mergeRun) error {
	var all []mref
	if err := h.db.View(func(tx *bolt.Tx) (err error) {
		all, err = fr.latest(newGenTable(tx, fr))
		return err
	}); err != nil {
		return err
	}
	for i, n := 0, 0; i < len(all); i, n = i+run.chunk, n+1 {
		if run.stop != nil && run.stop.Load() {
			return errMergeStopped
		}
		if !ix.mergeBehind(h, i, len(all)) {
			ix.yieldToBatch()
		}
		part := all[i:min(i+run.chunk, len(all))]
		last := i+run.chunk >= len(all)
		err := h.update(func(tx *bolt.Tx) error {
			return ix.writeChunk(tx, newGenTable(tx, fr), part)
		})
		if err != nil {
			return err
		}
		if run.hook != nil {
			if err := run.hook(n, last); err != nil {
				return err
			}
		}
	}
	h.dropFrozen()
	return h.update(func(tx *bolt.Tx) error { return dropDelta(tx, fr.top) })
}

// maxYield bounds how long a merge waits for a running Update before its next commit (a test
// sets Index.yieldMax instead).
const maxYield = 20 * time.Millisecond

// mergeBehind reports whether a merge that has written done of its all keys lags the active
// layer's filling (the active layer's share of Config.MergeBytes is larger than the merge's share
// of its keys): then it commits its next chunk at once instead of yielding to a running batch
// (yieldToBatch), which waits for at most that one chunk. A merge that yields before every chunk
// writes at most one chunk per batch, fewer keys than a batch of random events brings into the
// active layer, so it ended only after the active layer was full, and the batch that filled it
// waited for the rest of the merge (back-pressure; BENCHMARKS.md, "Random replication").
func (ix *Index) mergeBehind(h *handle, done, all int) bool {
	if ix.tune.alwaysYield || all == 0 {
		return false
	}
	active := h.ov.Load().lay.size.Load()
	return float64(done)/float64(all) < float64(active)/float64(ix.mergeBytes)
}

// yieldToBatch waits until the running Update, if any, has committed (at most maxYield): the
// Update runs its callback outside bbolt's writer lock, then needs the lock for its commit, and a
// merge commit begun meanwhile would make it wait for the whole chunk (BENCHMARKS.md, "Random
// replication"). The merge's next commit then runs while the Update indexes its batch and the
// next batch is prepared.
func (ix *Index) yieldToBatch() {
	p := ix.batch.Load()
	if p == nil {
		return
	}
	if ix.hooks.mergeYielding != nil {
		ix.hooks.mergeYielding()
	}
	t := time.NewTimer(cmp.Or(ix.yieldMax, maxYield))
	defer t.Stop()
	select {
	case <-*p:
	case <-t.C:
	}
}

// endBatch marks the Update whose channel is p committed (or ended); idempotent.
func (ix *Index) endBatch(p *chan struct{}) {
	if ix.batch.CompareAndSwap(p, nil) {
		close(*p)
	}
}

// writeChunk writes part (sorted; the values read from src) into the main buckets of tx.
func (ix *Index) writeChunk(tx *bolt.Tx, src *genTable, part []mref) error {
	var (
		buckets [4]*bolt.Bucket
		arena   []byte // the values, out of the memory map (bbolt keeps them until the commit)
	)
	for _, r := range part {
		key, val, err := refValue(src.rel(r.gen), r)
		if err != nil {
			return fmt.Errorf("index: merge: delta log entry %d: %w", src.base+uint64(r.gen), err)
		}
		bi := r.bi
		b := buckets[bi]
		if b == nil {
			b = tx.Bucket(bucketNames[bi])
			if ix.tune.fillPercent > 0 && (bi == bRecords || bi == bByUser) {
				b.FillPercent = ix.tune.fillPercent
			}
			buckets[bi] = b
		}
		if val == nil {
			err = b.Delete(key)
		} else {
			if cap(arena)-len(arena) < len(val) {
				arena = make([]byte, 0, max(64<<10, len(val)))
			}
			arena = append(arena, val...)
			err = b.Put(key, arena[len(arena)-len(val):len(arena):len(arena)])
		}
		if err != nil {
			return fmt.Errorf("index: merge %q: %w", key, err)
		}
	}
	return nil
}

// dropDelta deletes the delta log's entries of generations up to top: the whole bucket when it
// holds nothing newer, else entry by entry (the keys collected first: a bbolt cursor must not run
// over keys being deleted).
func dropDelta(tx *bolt.Tx, top uint64) error {
	b := tx.Bucket(bucketDelta)
	if k, _ := b.Cursor().Last(); k == nil || deltaKeyGen(k) <= top {
		if err := tx.DeleteBucket(bucketDelta); err != nil {
			return fmt.Errorf("index: merge: empty the delta log: %w", err)
		}
		_, err := tx.CreateBucket(bucketDelta)
		return err
	}
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && deltaKeyGen(k) <= top; k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		_, nested, _ := parseDeltaKey(k)
		if err := deleteDelta(b, k, nested); err != nil {
			return fmt.Errorf("index: merge: delete delta entry %x: %w", k, err)
		}
	}
	return nil
}

// deltaKeyGen is the generation of delta bucket key k (0 for a key of neither layout, which
// Open refuses).
func deltaKeyGen(k []byte) uint64 {
	gen, _, _ := parseDeltaKey(k)
	return gen
}

// loadOverlay rebuilds the overlay of a file just opened from its delta log (in tx), and loads
// the cached applied_seq and counts of the state it gives.
func (ix *Index) loadOverlay(tx *bolt.Tx) (*ovState, error) {
	var gen uint64
	b := tx.Bucket(bucketDelta)
	if b != nil {
		if k, _ := b.Cursor().First(); k != nil {
			if g, _, ok := parseDeltaKey(k); ok {
				gen = g - 1
			}
		}
	}
	lay := newLayer(gen)
	if b != nil {
		src := &deltaCache{tx: tx}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			g, nested, ok := parseDeltaKey(k)
			if !ok || g <= lay.base || g-lay.base >= 1<<32 {
				return nil, fmt.Errorf("delta log key %q: %w", k, errCorruptDelta)
			}
			gen = g
			e := deltaAt(b, k, v, nested)
			if e == nil {
				return nil, fmt.Errorf("delta log entry %d: %w", gen, errCorruptDelta)
			}
			err := decodeDelta(e, func(bi int, key, _ []byte, off uint32) {
				lay.insert(bi, key, gen, off, src)
			})
			if err != nil {
				return nil, fmt.Errorf("delta log entry %d: %w", gen, err)
			}
		}
		if src.err != nil {
			return nil, src.err
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
			_, nested, _ := parseDeltaKey(k)
			err := decodeDelta(deltaAt(b, k, v, nested), func(bi int, key, val []byte, _ uint32) {
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
