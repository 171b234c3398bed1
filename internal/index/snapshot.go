package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// How ReplaceAll builds a snapshot, keeping memory flat whatever the size:
//
//  1. During the load callback, each row is validated and normalised (as WriteTx.PutUser and
//     WriteTx.PutRecord do), encoded and appended to an in-memory buffer. When the buffer holds
//     runBufferBytes it is sorted by (bucket, key), stable, and written as one sorted run to a
//     spill file in the data directory (unlinked at once, so a crash leaves nothing behind).
//  2. The runs are merged; of the rows sharing a key the last one loaded wins. Users and records
//     go into the new bbolt file in key order, so bbolt only ever appends to the right edge of its
//     B+trees (pages filled to bulkFillPercent, committed every bulkCommitPuts puts). Each record's
//     reverse index entries go into a second set of sorted runs in the spill file.
//  3. Those runs are merged into the byuser bucket, in key order as well.
//
// Measured on 2 cores: 1,000,000 records (1–10 followers each, 10,000 users) load in ~10 s with a
// peak RSS under 50 MB; the spill file peaks at a few hundred MB of disk. The merge reads all runs
// of a phase at once (runReadBuffer each): ~75 runs for 1,000,000 records, so memory grows by
// ~2 MB per million records; beyond tens of millions a multi-pass merge would be needed.
// Inserting rows into bbolt in arrival order instead costs O(pages) per commit once the byuser
// keys (user first) scatter over the whole tree: ~55 µs per record and 1 GB RSS at 400,000 records.
const (
	runBufferBytes  = 4 << 20
	runReadBuffer   = 32 << 10
	bulkCommitPuts  = 20_000
	bulkFillPercent = 0.9

	runUser   = 'u'
	runRecord = 'r'
	runByUser = 'b'
)

var errLoaderDone = errors.New("index: Loader used outside its ReplaceAll callback")

// Loader receives the rows of a snapshot in ReplaceAll. It is not safe for concurrent use.
type Loader struct {
	maxFollowers int
	runs         *runWriter
	done         bool
	err          error // sticky: a failed spill ends the load
	scratch      []byte
}

// PutUser adds user u to the new index, with the validation of WriteTx.PutUser (ErrInvalidID); of
// several rows for the same id the last one wins. A validation error writes nothing and does not
// end the load: whether it should is the callback's decision.
func (l *Loader) PutUser(u User) error {
	if err := l.ready(); err != nil {
		return err
	}
	v, err := encodeUser(u)
	if err != nil {
		return err
	}
	return l.add(runUser, []byte(u.ID), v)
}

// PutRecord adds record r to the new index, with the normalisation and validation of
// WriteTx.PutRecord (ErrInvalidID, ErrTooManyFollowers); of several rows for the same (type, id)
// the last one wins.
func (l *Loader) PutRecord(r Record) error {
	if err := l.ready(); err != nil {
		return err
	}
	r, err := normaliseRecord(r, l.maxFollowers)
	if err != nil {
		return err
	}
	l.scratch = recordKey(l.scratch[:0], r.Type, r.ID)
	return l.add(runRecord, l.scratch, appendRecordBinary(nil, &r))
}

func (l *Loader) ready() error {
	if l.err != nil {
		return l.err
	}
	if l.done {
		return errLoaderDone
	}
	return nil
}

func (l *Loader) add(kind byte, key, val []byte) error {
	if err := l.runs.add(kind, key, val); err != nil {
		l.err = err
		return err
	}
	return nil
}

// ReplaceAll replaces the whole index by the users and records load puts into the Loader, with
// applied_seq = seq. It builds a new bbolt file beside the live one (Dir/index.db.loading) with
// memory that stays flat whatever the size (see the comment at the top of snapshot.go), fsyncs
// it, renames it over Dir/index.db, fsyncs the directory and swaps it in. Views see the old index
// or the new one, never a mix, and are not blocked during the load; Updates wait for it. The
// swap does not wait for Views still reading the old file: they go on reading it whole, and it
// is closed when the last of them ends.
//
// If load returns an error (returned as is) or the build fails, the temporary files are removed
// and the live index is untouched.
func (ix *Index) ReplaceAll(seq uint64, load func(*Loader) error) error {
	if ix.readOnly {
		return ErrReadOnly
	}
	ix.wmu.Lock()
	defer ix.wmu.Unlock()
	if ix.closed.Load() {
		return ErrClosed
	}
	// A background merge of the live file is stopped after its current commit: the snapshot
	// replaces that file; if the snapshot fails, the next merge takes the frozen layer up again.
	_ = ix.waitMerge(true)
	tmp := ix.path + loadingSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("index: snapshot: remove old temporary file: %w", err)
	}

	// The spill file for the sorted runs: unlinked at once, so nothing is left behind.
	spillFile, err := os.CreateTemp(ix.dir, FileName+spillPattern)
	if err != nil {
		return fmt.Errorf("index: snapshot: create spill file: %w", err)
	}
	_ = os.Remove(spillFile.Name())
	defer spillFile.Close()
	sp := &spill{f: spillFile}

	l := &Loader{maxFollowers: ix.maxFollowers, runs: newRunWriter(sp, ix.runBuffer)}
	defer func() { l.done = true }()
	if load != nil {
		err := load(l)
		l.done = true
		if err != nil {
			return err
		}
	}
	if l.err != nil {
		return l.err
	}
	if err := l.runs.flush(); err != nil {
		return err
	}
	l.runs.arena, l.runs.ents = nil, nil

	// NoSync while building (one fsync at the end makes the file durable before it goes live);
	// the handle stays open across the rename, so the file lock is never let go.
	db, err := bolt.Open(tmp, 0o600, ix.tune.apply(&bolt.Options{
		Timeout:      ix.timeout,
		NoSync:       true,
		NoGrowSync:   true,
		FreelistType: bolt.FreelistArrayType,
		NoStatistics: true, // as the live file (see liveOptions)
	}))
	if err != nil {
		return fmt.Errorf("index: snapshot: create %s: %w", tmp, err)
	}
	live := false
	bw := &bulkWriter{db: db, commitEvery: ix.bulkCommit}
	defer func() {
		if live {
			return
		}
		bw.rollback() // also on a panic: bbolt's Close waits for the write transaction
		_ = db.Close()
		_ = os.Remove(tmp)
	}()

	counts, err := buildSnapshot(bw, sp, l.runs.runs, ix.runBuffer)
	if err != nil {
		return err
	}
	if err := bw.finish(seq, counts); err != nil {
		return err
	}
	db.NoSync, db.NoGrowSync = false, false // from now on it is the live file
	if err := db.Sync(); err != nil {
		return fmt.Errorf("index: snapshot: fsync %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, ix.path); err != nil {
		return fmt.Errorf("index: snapshot: rename %s: %w", tmp, err)
	}
	live = true

	ix.rw.Lock()
	old := ix.cur
	ix.cur = ix.newHandle(db)
	ix.rw.Unlock()
	ix.publish(seq, counts)

	// The old file is unlinked. It is closed now if no View reads it, else when the last one
	// ends: the swap never waits for a reader (a stalled backup download must not hold up
	// snapshots and batches).
	errClose := ix.release(old)
	if err := syncDir(ix.dir); err != nil {
		return fmt.Errorf("index: snapshot is live, but fsync of directory %s failed: %w", ix.dir, err)
	}
	if errClose != nil {
		return fmt.Errorf("index: snapshot is live, but closing the old file failed: %w", errClose)
	}
	return nil
}

// buildSnapshot runs phases 2 and 3: users and records from the load runs, then the reverse index.
func buildSnapshot(bw *bulkWriter, sp *spill, loadRuns []section, runBuffer int) (Counts, error) {
	counts := newCounts()
	if err := bw.begin(); err != nil {
		return counts, err
	}
	if err := createBuckets(bw.tx); err != nil {
		return counts, fmt.Errorf("index: snapshot: create buckets: %w", err)
	}
	refs := newRunWriter(sp, runBuffer)
	var (
		rec    Record
		curKey []byte
		curVal []byte
		curK   byte
		have   bool
		refKey []byte
	)
	emit := func() error {
		switch curK {
		case runUser:
			counts.Users++
			return bw.put(bUsers, curKey, bytes.Clone(curVal))
		case runRecord:
			if err := decodeRecordBinary(curVal, &rec); err != nil {
				return err
			}
			counts.Records[rec.Type]++
			v, err := appendRecordJSON(nil, &rec) // fresh: bbolt keeps it until the commit
			if err != nil {
				return err
			}
			if err := bw.put(bRecords, curKey, v); err != nil {
				return err
			}
			if rec.Owner != "" {
				refKey = byUserKey(refKey[:0], rec.Owner, rec.Type, rec.LocationID, rec.ID)
				if err := refs.add(runByUser, refKey, valueOwner); err != nil {
					return err
				}
			}
			for _, f := range rec.Followers {
				refKey = byUserKey(refKey[:0], f, rec.Type, rec.LocationID, rec.ID)
				if err := refs.add(runByUser, refKey, valueFollower); err != nil {
					return err
				}
			}
			return nil
		}
		return fmt.Errorf("index: snapshot: corrupt spill entry kind %q", curK)
	}
	m, err := newMerger(sp, loadRuns)
	if err != nil {
		return counts, err
	}
	for {
		kind, k, v, ok, err := m.next()
		if err != nil {
			return counts, err
		}
		if !ok {
			break
		}
		if have && kind == curK && bytes.Equal(k, curKey) {
			curVal = append(curVal[:0], v...) // a later row for the same key wins
			continue
		}
		if have {
			if err := emit(); err != nil {
				return counts, err
			}
		}
		curK, curKey, curVal, have = kind, append(curKey[:0], k...), append(curVal[:0], v...), true
	}
	if have {
		if err := emit(); err != nil {
			return counts, err
		}
	}
	if err := refs.flush(); err != nil {
		return counts, err
	}
	refs.arena, refs.ents = nil, nil

	m, err = newMerger(sp, refs.runs)
	if err != nil {
		return counts, err
	}
	for {
		_, k, v, ok, err := m.next()
		if err != nil {
			return counts, err
		}
		if !ok {
			break
		}
		val := valueFollower
		if len(v) == 1 && v[0] == roleOwner {
			val = valueOwner
		}
		if err := bw.put(bByUser, k, val); err != nil {
			return counts, err
		}
	}
	return counts, nil
}

// bulkWriter puts keys in ascending order into the snapshot file, committing every bulkCommitPuts.
type bulkWriter struct {
	db          *bolt.DB
	tx          *bolt.Tx
	buckets     [4]*bolt.Bucket
	puts        int
	commitEvery int
}

func (bw *bulkWriter) begin() error {
	tx, err := bw.db.Begin(true)
	if err != nil {
		return fmt.Errorf("index: snapshot: begin transaction: %w", err)
	}
	bw.tx = tx
	bw.buckets = [4]*bolt.Bucket{}
	return nil
}

func (bw *bulkWriter) bucket(i int) *bolt.Bucket {
	if bw.buckets[i] == nil {
		b := bw.tx.Bucket(bucketNames[i])
		b.FillPercent = bulkFillPercent // keys arrive in order: pack the pages
		bw.buckets[i] = b
	}
	return bw.buckets[i]
}

// put stores key (copied by bbolt) and val (which must stay untouched until the commit).
func (bw *bulkWriter) put(i int, key, val []byte) error {
	if err := bw.bucket(i).Put(key, val); err != nil {
		return fmt.Errorf("index: snapshot: put %q: %w", key, err)
	}
	bw.puts++
	if bw.puts%bw.commitEvery != 0 {
		return nil
	}
	if err := bw.commit(); err != nil {
		return err
	}
	return bw.begin()
}

func (bw *bulkWriter) commit() error {
	tx := bw.tx
	bw.tx = nil
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("index: snapshot: commit: %w", err)
	}
	return nil
}

func (bw *bulkWriter) rollback() {
	if bw.tx != nil {
		_ = bw.tx.Rollback()
		bw.tx = nil
	}
}

// finish writes applied_seq and the counts and commits.
func (bw *bulkWriter) finish(seq uint64, c Counts) error {
	meta := bw.bucket(bMeta)
	if err := meta.Put(keyAppliedSeq, encodeUint64(seq)); err != nil {
		return err
	}
	if err := meta.Put([]byte(countUsersKey), encodeUint64(c.Users)); err != nil {
		return err
	}
	for typ, n := range c.Records {
		if n == 0 {
			continue
		}
		if err := meta.Put([]byte(countRecordKeyPrefix+typ), encodeUint64(n)); err != nil {
			return err
		}
	}
	return bw.commit()
}

// appendRecordBinary encodes a normalised record compactly for the spill file.
func appendRecordBinary(dst []byte, r *Record) []byte {
	for _, s := range [...]string{r.Type, r.ID, r.LocationID, r.Owner, r.ContactID} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Followers)))
	for _, f := range r.Followers {
		dst = binary.AppendUvarint(dst, uint64(len(f)))
		dst = append(dst, f...)
	}
	return dst
}

func decodeRecordBinary(b []byte, r *Record) error {
	bad := errors.New("index: snapshot: corrupt record in spill file")
	str := func() (string, bool) {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return "", false
		}
		s := string(b[w : w+int(n)])
		b = b[w+int(n):]
		return s, true
	}
	var ok bool
	for _, p := range [...]*string{&r.Type, &r.ID, &r.LocationID, &r.Owner, &r.ContactID} {
		if *p, ok = str(); !ok {
			return bad
		}
	}
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)) {
		return bad
	}
	b = b[w:]
	r.Followers = make([]string, n)
	for i := range r.Followers {
		if r.Followers[i], ok = str(); !ok {
			return bad
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
