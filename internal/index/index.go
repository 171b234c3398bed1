// Package index is crmauthz's follower index: the users and records (owner, followers, location)
// the policy decides on, kept in one bbolt file, <data-dir>/index.db, and fed by the replication
// API. It is the only package of the module that imports bbolt.
//
// # Layout
//
//	bucket   key                                      value
//	meta     applied_seq, count:users,                8-byte big-endian uint64
//	         count:record:<type>
//	users    <user id>                                JSON of User, every field explicit
//	records  <type> 0x00 <id>                         JSON of Record, followers always an array
//	byuser   <user> 0x00 <type> 0x00 <loc> 0x00 <id>  'o' (owner) or 'f' (follower)
//	delta    batch generation, 8 bytes big-endian       the batch's changes to the buckets above
//
// byuser is the reverse index behind ReadTx.SubjectRecords and WriteTx.DeleteUser; every write
// keeps it exact. Ids never contain NUL, so the keys are unambiguous and sort by id within a prefix.
//
// An Update does not write the first four (the main buckets): it appends its changes to the delta
// log and indexes them in an in-memory overlay (pointing into the log) that every read consults
// first; the Update that brings the overlay's active layer to Config.MergeBytes freezes it and
// merges it into the main buckets in the background, while later batches go to a new active layer
// (overlay.go, merge.go, docs/design.md "Index: delta log, overlay and merge").
//
// # Concurrency
//
// Update and ReplaceAll are serialised. View runs concurrently with them and with other Views; a
// View sees one committed state: before or after an Update, the old or the new index of a
// ReplaceAll, never a mix. Do not call View, Update, ReplaceAll or Close from inside an Update or
// ReplaceAll callback (bbolt may need to re-map the file, which waits for every read transaction,
// and the writer lock is not re-entrant).
//
// # Locking and read-only opens
//
// Open takes Dir/LOCK (see LockFileName) before it opens index.db, and holds it until Close:
// exclusive for a read-write open, shared for Options.ReadOnly. bbolt also takes its own flock on
// index.db, but that one does not survive ReplaceAll's rename. The two modes conflict, also within
// one process (flock locks belong to the open file description), so a ReadOnly open beside a
// running server does NOT work: it waits Config.Timeout and fails with an error wrapping bbolt's
// ErrTimeout. A ReadOnly open works on a data directory no read-write opener holds (a stopped
// server), and any number of ReadOnly opens can share it. Tools that need the live index must ask
// the server (GET /v1/replication/snapshot, the decision API).
package index

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FileName is the name of the index file inside Config.Dir.
const FileName = "index.db"

// loadingSuffix is appended to the live file's path for the file ReplaceAll builds; spillPattern
// (after the live file's path) matches its spill files.
const (
	loadingSuffix = ".loading"
	spillPattern  = ".spill-*"
)

// Config configures Open.
type Config struct {
	// Dir is the data directory; the index is Dir/index.db. Both are created if missing (not in
	// ReadOnly mode, where a missing file is an error). Required: DefaultConfig's ./data is the
	// commands' default, not filled in by Open.
	Dir string
	// Timeout bounds the wait for the data directory's lock at Open.
	Timeout time.Duration
	// ReadOnly opens the file read-only: Update and ReplaceAll return ErrReadOnly. See the package
	// documentation: this does not work beside a running read-write opener.
	ReadOnly bool
	// MaxFollowers is the maximum number of followers of a record besides its owner.
	MaxFollowers int
	// MergeBytes bounds the overlay: the in-memory changes of the batches applied since the last
	// merge (docs/design.md, "Index: delta log, overlay and merge"). The Update whose batch brings
	// the overlay's active layer to an estimated MergeBytes or beyond freezes it and merges it into
	// the main buckets in the background; if the previous merge still runs, that Update waits for
	// it first (back-pressure), so the overlay holds at most about twice MergeBytes.
	MergeBytes int64
}

// DefaultMergeBytes is the default Config.MergeBytes: about 250,000 random events per merge at
// 1,000,000 records. 32 MiB was measured in session 7 (BENCHMARKS.md, "Random replication"):
// ~13 % less CPU and a third fewer bytes written per event, but the same sustained rate
// counting the merges (ratio 1.02), for twice the heap while replicating and twice the Open
// time with a full overlay; so it is an option (docs/operations.md), not the default.
const DefaultMergeBytes = 16 << 20

// DefaultConfig returns the defaults, which Open fills in for zero fields (Dir excepted): a
// 5 s wait for the lock, 10 followers, a 16 MiB overlay.
func DefaultConfig() Config {
	return Config{Dir: "./data", Timeout: 5 * time.Second, MaxFollowers: 10, MergeBytes: DefaultMergeBytes}
}

// User is a user of the CRM, as stored. Defaults (contacts_enabled, opportunities_enabled true)
// are the caller's business: the index stores the struct as given, every field explicit.
type User struct {
	ID                   string   `json:"id"`
	Role                 string   `json:"role"`
	LocationIDs          []string `json:"location_ids"`
	AssignedDataOnly     bool     `json:"assigned_data_only"`
	ContactsEnabled      bool     `json:"contacts_enabled"`
	OpportunitiesEnabled bool     `json:"opportunities_enabled"`
}

// Record is a CRM record (contact, opportunity, …), as stored.
type Record struct {
	Type       string `json:"type"`
	ID         string `json:"id"`
	LocationID string `json:"location_id"`
	Owner      string `json:"owner"`
	// Followers is a set: no duplicates, never the owner, at most Config.MaxFollowers. Always
	// non-nil when stored or returned.
	Followers []string `json:"followers"`
	ContactID string   `json:"contact_id,omitempty"`
}

// Counts are the number of users and of records per type.
type Counts struct {
	Users uint64 `json:"users"`
	// Records always has the keys "contact" and "opportunity", and one per other type stored.
	Records map[string]uint64 `json:"records"`
}

func newCounts() Counts {
	return Counts{Records: map[string]uint64{TypeContact: 0, TypeOpportunity: 0}}
}

func (c Counts) clone() Counts {
	out := Counts{Users: c.Users, Records: make(map[string]uint64, len(c.Records))}
	for k, v := range c.Records {
		out.Records[k] = v
	}
	return out
}

// Index is an open follower index. Its methods are safe for concurrent use.
type Index struct {
	path         string
	dir          string
	timeout      time.Duration
	readOnly     bool
	maxFollowers int
	mergeBytes   int64

	// lock is Dir/LOCK, held from Open to Close (lock.go).
	lock dirLock

	// wmu serialises Update, ReplaceAll and Close.
	wmu sync.Mutex
	// rw guards cur: View holds the read lock only while it takes a reference to cur;
	// ReplaceAll and Close hold the write lock while they swap or clear the pointer.
	rw  sync.RWMutex
	cur *handle
	// handles counts the handles not yet closed; Close waits for it. lateErr is the first error
	// of closing a replaced file after its last View (there is nobody else to return it to).
	handles sync.WaitGroup
	lateMu  sync.Mutex
	lateErr error

	closed atomic.Bool
	seq    atomic.Uint64
	counts atomic.Pointer[Counts]
	// notify is closed and replaced after every commit (and closed at Close); WaitForSeq waits on it.
	notify atomic.Pointer[chan struct{}]

	readTxs sync.Pool // *ReadTx, reused by View

	// Snapshot build sizes (runBufferBytes, bulkCommitPuts); tests make them small.
	runBuffer, bulkCommit int
	tune                  tuning
	// merges counts the merges done and mergeTime sums their durations (for the benchmarks).
	merges    atomic.Int64
	mergeTime atomic.Int64
	// mergeChunk is the number of keys a merge writes per commit (merge.go); tests make it small.
	mergeChunk int
	// bg is the merge running in the background, if any (merge.go); set and cleared under wmu.
	bg *bgMerge
	// batch is closed when the running Update's commit ends (nil when none is between its read
	// and its commit): a background merge waits for it, at most yieldMax, before its next
	// commit (merge.go).
	batch    atomic.Pointer[chan struct{}]
	yieldMax time.Duration
	// hooks are nil outside tests.
	hooks struct {
		// viewLoaded runs in View and Update between loading the overlay state and beginning
		// the read transaction.
		viewLoaded func()
		// sharedBegun runs in View after it began a read transaction it may share (no cached
		// one went with its state), before it decides whether to cache it (sharedread.go).
		sharedBegun func()
		// mergeCommitted runs after each commit of a merge (chunk counts from 0, last tells the
		// final one); an error aborts the merge there, as a crash would.
		mergeCommitted func(chunk int, last bool) error
		// mergeWaiting runs when a caller (under wmu) starts waiting for a background merge
		// that has not ended.
		mergeWaiting func()
		// mergeYielding runs when a merge starts waiting for a running Update's commit.
		mergeYielding func()
	}
}

func (ix *Index) liveOptions() *bolt.Options {
	return ix.tune.apply(&bolt.Options{
		Timeout:  ix.timeout,
		ReadOnly: ix.readOnly,
		// The array freelist allocates first fit, the lowest free pages: the hashmap one takes
		// a run of any size at random and splits it, so the runs of many pages a commit needs
		// (a delta entry's overflow pages, the freelist itself) go to the end of the file more
		// and more often, and the file grows without bound under steady replication
		// (docs/design.md, "Index: delta log, overlay and merge"; TestFileSizeBoundedUnderReplication).
		FreelistType: bolt.FreelistArrayType,
		// bbolt's statistics take a DB-wide lock at every Begin and Rollback: contention between
		// concurrent decisions, for numbers nobody reads.
		NoStatistics: true,
	})
}

func createBuckets(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketMeta, bucketUsers, bucketRecords, bucketByUser, bucketDelta} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// Path is the index file's path (Dir/index.db).
func (ix *Index) Path() string { return ix.path }

// ReadOnly tells whether the index was opened read-only (writes return ErrReadOnly).
func (ix *Index) ReadOnly() bool { return ix.readOnly }

// Close closes the index. It waits for a running Update or ReplaceAll and for open Views (also
// those still reading a file a ReplaceAll replaced), stops a background merge after its current
// commit (what it did not merge stays in the delta log), then lets the lock file go. It is
// idempotent: later calls return nil.
func (ix *Index) Close() error {
	ix.wmu.Lock()
	defer ix.wmu.Unlock()
	if ix.closed.Load() {
		return nil
	}
	// Stop a background merge after its current commit. Its error is not Close's: whatever it
	// did not merge stays in the delta log, which Open rebuilds and the next merge takes up.
	_ = ix.waitMerge(true)
	ix.rw.Lock()
	h := ix.cur
	ix.cur = nil
	ix.closed.Store(true)
	ix.rw.Unlock()
	close(*ix.notify.Load()) // wake WaitForSeq callers; they see closed
	err := ix.release(h)     // closes the file now, or when its last View ends
	ix.handles.Wait()
	ix.lateMu.Lock()
	err = errors.Join(err, ix.lateErr)
	ix.lateMu.Unlock()
	return errors.Join(err, ix.lock.release())
}

// handle is one open bbolt file. refs counts the Views using it, plus one while it is the live
// file (ix.cur); whoever drops the last reference closes it. So ReplaceAll swaps in the new file
// and never waits for a View still reading the old one (a stalled backup download, say): the old
// file, already unlinked, is closed when that View ends, and writes go to the new file at once.
type handle struct {
	db   *bolt.DB
	refs atomic.Int64
	// ov is the overlay in front of db's main buckets (overlay.go); replaced, never changed,
	// under pub (Update and the background merge both publish states).
	ov  atomic.Pointer[ovState]
	pub sync.Mutex
	// users is the users' cache of the newest state a View read (usercache.go).
	users atomic.Pointer[userCache]
	// shared is the read transaction the Views of the latest state share, nil when none is
	// (sharedread.go). smu guards replacing it, writing (the write transactions running), wgen
	// (bumped when one begins) and dead (h's last reference is gone).
	shared  atomic.Pointer[sharedRead]
	smu     sync.Mutex
	writing int
	wgen    uint64
	dead    bool
}

// newHandle wraps db as the live file (one reference), with an empty overlay.
func (ix *Index) newHandle(db *bolt.DB) *handle {
	h := &handle{db: db}
	h.ov.Store(&ovState{lay: newLayer(0)})
	h.refs.Store(1)
	ix.handles.Add(1)
	return h
}

// release drops one reference to h and closes its file if that was the last one.
func (ix *Index) release(h *handle) error {
	if h.refs.Add(-1) != 0 {
		return nil
	}
	defer ix.handles.Done()
	h.dropShared()
	return h.db.Close()
}

// releaseLate is release for a View: a close error is kept for Close to return.
func (ix *Index) releaseLate(h *handle) {
	if err := ix.release(h); err != nil {
		ix.lateMu.Lock()
		if ix.lateErr == nil {
			ix.lateErr = fmt.Errorf("index: closing a replaced index file: %w", err)
		}
		ix.lateMu.Unlock()
	}
}

// View runs fn in one bbolt read transaction and the overlay state that goes with it: the
// transaction the Views of that state share (sharedread.go). The *ReadTx, and the byte slices
// UserJSON and RecordJSON return, are valid only until fn returns: the ReadTx is reused by later
// Views. fn's error is returned as is.
func (ix *Index) View(fn func(*ReadTx) error) error { return ix.view(fn, true) }

// view is View; with share false, fn runs in a read transaction of its own (Backup and Populate
// use the bbolt transaction itself).
func (ix *Index) view(fn func(*ReadTx) error, share bool) (err error) {
	ix.rw.RLock()
	h := ix.cur
	if h == nil {
		ix.rw.RUnlock()
		return ErrClosed
	}
	h.refs.Add(1)
	ix.rw.RUnlock()
	var (
		st *ovState
		tx *bolt.Tx
		s  *sharedRead
	)
	if share {
		s, st, tx, err = ix.sharedRead(h)
	} else {
		st, tx, err = ix.beginRead(h)
	}
	if err != nil {
		ix.releaseLate(h)
		return err
	}
	t := ix.readTxs.Get().(*ReadTx)
	t.tx = tx
	t.setOverlay(st)
	t.sh = s // nil: its own transaction
	t.uc = h.usersFor(uint64(tx.ID()), st)
	defer func() {
		t.reset()
		ix.readTxs.Put(t)
		if s != nil {
			s.release()
		} else {
			_ = tx.Rollback()
		}
		ix.releaseLate(h)
	}()
	err = fn(t)
	if t.dc.err != nil {
		return t.dc.err // fail closed: a read met an overlay version without its delta entry
	}
	return err
}

// Update runs fn once, on the state of the last commit, and commits what it wrote: if fn returns
// an error or panics, nothing is written and the error is returned as is; otherwise the changes
// are committed (and fsynced) before Update returns. The commit writes fn's changes to the delta
// log; when they bring the overlay's active layer to Config.MergeBytes, Update freezes it and
// starts merging it into the main buckets in the background (merge.go), after waiting for a
// merge still running. An error of that merging says the batch is committed.
//
// fn runs in a bbolt read transaction, not the write one (docs/design.md, "Index: delta log,
// overlay and merge"): its reads see the overlay in front of the main buckets, which a running
// merge changes only under the overlay's keys, and its writes are collected in memory. Only the
// delta entry's commit takes bbolt's writer lock, so a batch's work and the merge's commits run
// beside each other. Updates are serialised (wmu), so the state fn reads is the last commit's.
func (ix *Index) Update(fn func(*WriteTx) error) error {
	if ix.readOnly {
		return ErrReadOnly
	}
	ix.wmu.Lock()
	defer ix.wmu.Unlock()
	if ix.closed.Load() {
		return ErrClosed
	}
	h := ix.cur                // cur changes only under wmu
	gen := h.ov.Load().gen + 1 // gen changes only under wmu
	if ix.tune.direct {
		return ix.updateDirect(h, fn)
	}
	st, tx, err := ix.beginRead(h)
	if err != nil {
		return err
	}
	committed := make(chan struct{})
	ix.batch.Store(&committed)
	defer ix.endBatch(&committed) // also on an error or a panic
	var (
		seq    uint64
		counts Counts
		enc    []byte
		chs    []change
	)
	err = func() error {
		defer func() { _ = tx.Rollback() }()
		w := newWriteTx(tx, ix.maxFollowers, 0, st)
		defer w.reset()
		err := fn(w)
		if w.dc.err != nil {
			return w.dc.err // fail closed: fn read past a missing delta entry
		}
		if err != nil {
			return err
		}
		if err := w.flushCounts(); err != nil {
			return err
		}
		seq = w.AppliedSeq()
		counts = w.Counts()
		if !w.pend.empty() {
			enc, chs = w.pend.encodeDelta() // a fresh buffer: nothing of it points into tx
		}
		return w.dc.err
	}()
	if err != nil {
		return ix.liveName(err)
	}
	if len(chs) > 0 {
		err := h.update(func(tx *bolt.Tx) error {
			return putDelta(tx.Bucket(bucketDelta), gen, enc, ix.tune.flatDelta)
		})
		ix.endBatch(&committed)
		if err != nil {
			return ix.liveName(err) // a commit's disk error names the live file (livepath.go)
		}
		// Index the batch's changes in the active layer (only freeze, under wmu, replaces it),
		// from a read transaction that holds the delta entries they point into.
		err = h.db.View(func(tx *bolt.Tx) error {
			src := &deltaCache{tx: tx}
			for _, c := range chs {
				st.lay.insert(c.bi, enc[c.koff:c.koff+c.klen], gen, c.off, src)
			}
			return src.err
		})
		h.publishGen(gen) // even so: the next batch must not reuse gen (Open indexes the entry)
		if err != nil {
			return fmt.Errorf("index: the batch is committed, but indexing it failed: %w", ix.liveName(err))
		}
	}
	ix.endBatch(&committed) // when nothing was committed; before startMerge, which may wait for the merge
	ix.publish(seq, counts)
	if st.lay.size.Load() >= ix.mergeBytes {
		if err := ix.startMerge(h); err != nil {
			return fmt.Errorf("index: the batch is committed, but merging the overlay failed "+
				"(the next batch tries again): %w", ix.liveName(err))
		}
	}
	return nil
}

// beginRead loads h's overlay state and begins a read transaction that goes with it, for View and
// Update: a merge changes the main buckets only under a new epoch (merge.go), so when the epoch is
// the same after Begin, no commit of the transaction's snapshot wrote a key of the overlay the
// reader would not find in st's layers at st's generation, and the transaction holds every delta
// entry they point into.
func (ix *Index) beginRead(h *handle) (*ovState, *bolt.Tx, error) {
	for {
		st := h.ov.Load()
		if ix.hooks.viewLoaded != nil {
			ix.hooks.viewLoaded()
		}
		tx, err := h.db.Begin(false)
		if err != nil {
			return nil, nil, ix.liveName(fmt.Errorf("index: begin read transaction: %w", err))
		}
		if h.ov.Load().epoch == st.epoch {
			return st, tx, nil
		}
		_ = tx.Rollback()
	}
}

// updateDirect is Update in tuning.direct mode: fn writes the main buckets in the write
// transaction itself (the layout before issue 17, for BenchmarkRandomReplication1M).
func (ix *Index) updateDirect(h *handle, fn func(*WriteTx) error) error {
	var (
		seq    uint64
		counts Counts
	)
	err := h.update(func(tx *bolt.Tx) error {
		w := newWriteTx(tx, ix.maxFollowers, ix.tune.fillPercent, nil)
		defer w.reset()
		if err := fn(w); err != nil {
			return err
		}
		if err := w.flushCounts(); err != nil {
			return err
		}
		seq = w.AppliedSeq()
		counts = w.Counts()
		return nil
	})
	if err != nil {
		return ix.liveName(err)
	}
	ix.publish(seq, counts)
	return nil
}

// publish updates the cached applied_seq and counts after a commit and wakes WaitForSeq callers.
// Callers hold wmu.
func (ix *Index) publish(seq uint64, counts Counts) {
	ix.counts.Store(&counts)
	ix.seq.Store(seq)
	ch := make(chan struct{})
	old := ix.notify.Swap(&ch)
	close(*old)
}

// AppliedSeq is the applied_seq of the last commit (cached; no transaction).
func (ix *Index) AppliedSeq() uint64 { return ix.seq.Load() }

// Counts are the counts of the last commit (cached; no transaction). The map is the caller's.
func (ix *Index) Counts() Counts { return ix.counts.Load().clone() }

// WaitForSeq returns nil as soon as AppliedSeq() >= seq, ctx.Err() if ctx ends first, or
// ErrClosed if the index is closed first. It does not poll: it waits for the next commit.
func (ix *Index) WaitForSeq(ctx context.Context, seq uint64) error {
	for {
		ch := *ix.notify.Load() // load before checking, so a commit in between closes it
		if ix.seq.Load() >= seq {
			return nil
		}
		if ix.closed.Load() {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Backup writes a consistent copy of the whole bbolt file to w from one read
// transaction (bbolt's hot backup: the server keeps deciding and applying
// meanwhile, though a writer that must grow the file waits for it; a ReplaceAll
// does not wait, and the copy goes on from the replaced file). The caller
// bounds how long w may block (the server cuts a stalled client). The copy
// is a complete index file: put it at <data-dir>/index.db of a stopped server
// to restore. before, if not nil, is called first with the copy's applied_seq
// and size in bytes (to set response headers); its error aborts the backup.
func (ix *Index) Backup(w io.Writer, before func(seq uint64, size int64) error) (int64, error) {
	var n int64
	err := ix.view(func(t *ReadTx) error {
		if before != nil {
			seq, err := fileSeq(t.tx)
			if err != nil {
				return err
			}
			if err := before(seq, t.tx.Size()); err != nil {
				return err
			}
		}
		var err error
		n, err = t.tx.WriteTo(w)
		return err
	}, false)
	return n, ix.liveName(err)
}
