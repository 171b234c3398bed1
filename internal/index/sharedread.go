package index

import (
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// The Views' shared read transaction (docs/design.md, "Index: the Views' shared read
// transaction"): the Views of one committed state read through one bbolt read transaction and its
// opened buckets, begun by the first View of that state, instead of each beginning its own. A
// bbolt read transaction allocates its Tx, a copy of the meta page and the root bucket at Begin,
// takes the file's meta lock at Begin and at Rollback, and allocates a Bucket (and a copy of its
// header when unaligned) at each bucket's open (BENCHMARKS.md, "Session 10: the evaluation's
// CPU"); a shared one does that once per state. A read-only transaction's reads (Bucket.Get,
// cursors, Tx.Bucket, Tx.ID) write nothing in it but an atomic statistics counter, so any number
// of goroutines read one at once.
//
// The deadlock it must not cause: a read transaction holds bbolt's mmap lock for reading, and a
// commit that grows the file past its mapping re-maps it under the write lock, so it waits for
// every open read transaction; a transaction kept open for later Views across a commit would
// stall that commit for ever. So every write transaction on a live file goes through
// handle.update, which first takes the cached transaction away (it is rolled back when the last
// View using it ends, as a View's own transaction would be) and forbids caching another until
// the commit ended: a commit waits only for the Views running when it began, as before. A View
// caches the transaction it began only if no commit began since it looked (wgen) and none runs
// (writing), so the cached transaction is always of the latest commit (what a View beginning
// now would see).
//
// A View uses the cached transaction only when it was begun with the overlay state the View
// loaded (the same pointer): that pair passed beginRead's check, and a state's pair stays valid
// (bbolt's snapshot never changes, a state's overlay layers are only appended to above its
// generation or frozen). A View of a state whose transaction is not cached begins one (beginRead)
// and, if no commit intervened, caches it in place of the older one. Views that need the bbolt
// transaction itself (Backup, Populate) and the read side of an Update begin their own.

// sharedRead is one bbolt read transaction with its main buckets open, shared by the Views of
// state st. refs counts the handle's reference (while it is cached) and one per View using it;
// whoever drops the last one rolls it back.
type sharedRead struct {
	tx      *bolt.Tx
	st      *ovState
	buckets [4]*bolt.Bucket // bMeta … bByUser; nil when absent (a read-only open of a new file)
	delta   *bolt.Bucket
	refs    atomic.Int64
	// cursors are the sets of cursors on the buckets that Views not running hold for the next
	// Views: a cursor keeps the stack of its last search, which bbolt's Get allocates anew, a
	// level at a time, at every lookup. A View takes a set (or makes one) and gives it back.
	cursors [4]atomic.Pointer[cursorSet]
}

// cursorSet is one View's cursors on the main buckets of a shared transaction and on its root
// bucket, made when first needed.
type cursorSet struct {
	b    [4]*bolt.Cursor
	root *bolt.Cursor
}

// newSharedRead opens the buckets of tx, read with st, for one View (one reference).
func newSharedRead(tx *bolt.Tx, st *ovState) *sharedRead {
	s := &sharedRead{tx: tx, st: st, delta: tx.Bucket(bucketDelta)}
	for i := range s.buckets {
		s.buckets[i] = tx.Bucket(bucketNames[i])
	}
	s.refs.Store(1)
	return s
}

// acquire takes a reference to s for a View; false when s was already rolled back.
func (s *sharedRead) acquire() bool {
	for {
		n := s.refs.Load()
		if n == 0 {
			return false
		}
		if s.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops one reference to s and rolls its transaction back if that was the last one.
// The buckets and cursors, which point into bbolt's memory map, are dropped first: the map may
// go away with the next re-map.
func (s *sharedRead) release() {
	if s.refs.Add(-1) != 0 {
		return
	}
	s.buckets, s.delta = [4]*bolt.Bucket{}, nil
	for i := range s.cursors {
		s.cursors[i].Store(nil)
	}
	_ = s.tx.Rollback() // only ErrTxClosed, which cannot happen: the last reference rolls back once
}

// takeCursors returns a set of cursors for a View of s: one a View gave back, else a new one.
func (s *sharedRead) takeCursors() *cursorSet {
	for i := range s.cursors {
		if s.cursors[i].Load() != nil {
			if c := s.cursors[i].Swap(nil); c != nil {
				return c
			}
		}
	}
	return new(cursorSet)
}

// putCursors gives a View's cursors back to s (dropped when s holds enough).
func (s *sharedRead) putCursors(c *cursorSet) {
	for i := range s.cursors {
		if s.cursors[i].Load() == nil && s.cursors[i].CompareAndSwap(nil, c) {
			return
		}
	}
}

// sharedRead returns the read transaction a View of h's current state reads: the cached one when
// it goes with the state the View loads (s, with a reference taken for the View), else one begun
// now, cached for the later Views of its state unless a commit runs or began meanwhile. When a
// commit runs, s is nil and tx is the View's alone, to roll back: its buckets are opened as it
// needs them, as before the shared transaction (Views beside a replication's commits).
func (ix *Index) sharedRead(h *handle) (s *sharedRead, st *ovState, tx *bolt.Tx, err error) {
	if s := h.shared.Load(); s != nil && s.st == h.ov.Load() {
		if ix.hooks.viewLoaded != nil {
			ix.hooks.viewLoaded()
		}
		if s.acquire() {
			return s, s.st, s.tx, nil
		}
	}
	h.smu.Lock()
	wgen, idle := h.wgen, h.writing == 0
	h.smu.Unlock()
	st, tx, err = ix.beginRead(h)
	if err != nil {
		return nil, nil, nil, err
	}
	if ix.hooks.sharedBegun != nil {
		ix.hooks.sharedBegun()
	}
	if !idle {
		return nil, st, tx, nil
	}
	s = newSharedRead(tx, st)
	h.smu.Lock()
	if h.wgen != wgen || h.writing != 0 || h.dead || h.ov.Load() != st {
		h.smu.Unlock()
		return s, st, tx, nil // a commit began since: tx may not be the latest; this View's alone
	}
	s.refs.Add(1) // the handle's
	old := h.shared.Swap(s)
	h.smu.Unlock()
	if old != nil {
		old.release()
	}
	return s, st, tx, nil
}

// update runs fn in a bbolt write transaction of h's file and commits it (bbolt's db.Update).
// Every write transaction of a live file goes through here: see the comment at the top of this
// file. The cached read transaction is released first, and none is cached until fn's commit ended,
// so the commit's re-map of a grown file waits only for the Views that run already.
func (h *handle) update(fn func(*bolt.Tx) error) error {
	h.smu.Lock()
	h.writing++
	h.wgen++
	s := h.shared.Swap(nil)
	h.smu.Unlock()
	if s != nil {
		s.release()
	}
	defer func() {
		h.smu.Lock()
		h.writing--
		h.smu.Unlock()
	}()
	return h.db.Update(fn)
}

// dropShared releases h's cached read transaction for good (h's last reference is gone: its file
// is about to close, and bbolt's Close waits for every read transaction).
func (h *handle) dropShared() {
	h.smu.Lock()
	h.dead = true
	s := h.shared.Swap(nil)
	h.smu.Unlock()
	if s != nil {
		s.release()
	}
}
