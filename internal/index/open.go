package index

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrDamaged is wrapped by Open's error when index.db exists but is not a whole bbolt file: empty,
// shorter than its own meta page says, or so broken that bbolt panics reading it.
var ErrDamaged = errors.New("the index file is damaged")

// Open opens (creating if needed, unless cfg.ReadOnly) the index in cfg.Dir. It first takes the
// lock file Dir/LOCK (exclusive; shared when ReadOnly), waiting up to cfg.Timeout, and holds it
// until Close. In read-write mode it removes the leftovers of an interrupted ReplaceAll and
// creates the buckets; a new index.db is built beside and renamed into place, so an index.db that
// exists is never legitimately empty. A damaged index.db (empty, truncated, or one bbolt panics
// on) is an error wrapping ErrDamaged that names the file, never a panic or an empty index.
func Open(cfg Config) (*Index, error) {
	return openTuned(cfg, defaultTuning())
}

// openTuned is Open with the bbolt settings t (tuning.go).
func openTuned(cfg Config, t tuning) (*Index, error) {
	if cfg.Dir == "" {
		return nil, errors.New("index: Config.Dir is empty")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("index: Config.Timeout is negative (%s)", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultConfig().Timeout
	}
	if cfg.MaxFollowers < 0 {
		return nil, fmt.Errorf("index: Config.MaxFollowers is negative (%d)", cfg.MaxFollowers)
	}
	if cfg.MaxFollowers == 0 {
		cfg.MaxFollowers = DefaultConfig().MaxFollowers
	}
	if cfg.MergeBytes < 0 {
		return nil, fmt.Errorf("index: Config.MergeBytes is negative (%d)", cfg.MergeBytes)
	}
	if cfg.MergeBytes == 0 {
		cfg.MergeBytes = DefaultConfig().MergeBytes
	}
	ix := &Index{
		path:         filepath.Join(cfg.Dir, FileName),
		dir:          cfg.Dir,
		timeout:      cfg.Timeout,
		readOnly:     cfg.ReadOnly,
		maxFollowers: cfg.MaxFollowers,
		runBuffer:    runBufferBytes,
		bulkCommit:   bulkCommitPuts,
		tune:         t,
		mergeBytes:   cfg.MergeBytes,
	}
	ix.readTxs.New = func() any { return new(ReadTx) }
	ch := make(chan struct{})
	ix.notify.Store(&ch)

	if !cfg.ReadOnly {
		if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
			return nil, fmt.Errorf("index: create data directory: %w", err)
		}
	}
	lock, err := lockDir(cfg.Dir, cfg.ReadOnly, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	db, st, err := ix.open()
	if err != nil {
		_ = lock.release()
		return nil, err
	}
	ix.lock = lock
	ix.cur = ix.newHandle(db)
	ix.cur.ov.Store(st)
	if ix.tune.direct && !ix.readOnly {
		// Writes go straight to the main buckets (tuning.direct): nothing may hide them.
		if err := ix.merge(ix.cur); err != nil {
			_ = ix.Close()
			return nil, fmt.Errorf("index: merge the delta log of %s: %w", ix.path, err)
		}
	}
	return ix, nil
}

// open opens index.db (creating it in read-write mode), checks it, creates the buckets, rebuilds
// the overlay from the delta log and loads the cached applied_seq and counts. The caller holds
// the lock file.
func (ix *Index) open() (*bolt.DB, *ovState, error) {
	if !ix.readOnly {
		// We hold the exclusive lock: a leftover temporary file is from a crashed ReplaceAll (or
		// creation), never from a live process building one.
		if err := removeLeftovers(ix.path); err != nil {
			return nil, nil, err
		}
	}
	st, err := os.Stat(ix.path)
	switch {
	case err == nil && st.Size() == 0:
		return nil, nil, ix.damaged("it is empty (0 bytes)")
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) && !ix.readOnly:
		if err := ix.create(); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("index: open %s: %w", ix.path, err)
	}
	return ix.openChecked()
}

// damaged is Open's error for a damaged index.db.
func (ix *Index) damaged(why string) error {
	return fmt.Errorf("index: %s: %w: %s; restore it from a backup (GET /v1/replication/backup) "+
		"or move it away and load a snapshot (--load-snapshot, PUT /v1/replication/snapshot), "+
		"then replay the replication log (docs/operations.md)", ix.path, ErrDamaged, why)
}

// create makes a new empty index.db with its buckets: built as Dir/index.db.loading, fsynced and
// renamed into place, so a crash leaves either no index.db or a whole one.
func (ix *Index) create() error {
	tmp := ix.path + loadingSuffix
	db, err := bolt.Open(tmp, 0o600, ix.tune.apply(&bolt.Options{Timeout: ix.timeout, NoStatistics: true}))
	if err != nil {
		return fmt.Errorf("index: create %s: %w", tmp, err)
	}
	err = db.Update(createBuckets)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, ix.path)
	}
	if err == nil {
		err = syncDir(ix.dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("index: create %s: %w", ix.path, err)
	}
	return nil
}

// openChecked opens index.db with bbolt and checks it before anything writes to it: it is still
// the file at the path (not replaced while we waited), and it is not shorter than the size its
// meta page records (a truncated copy). bbolt panics, or faults on the memory map, on some broken
// files; that is turned into an error wrapping ErrDamaged here (the memory map of such a file is
// not unmapped, but the process is about to exit with the error anyway).
func (ix *Index) openChecked() (db *bolt.DB, st *ovState, err error) {
	var file *os.File // of the last bolt.Open, closed if it panics
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		switch {
		case db != nil:
			_ = db.Close()
		case file != nil:
			_ = file.Close() // bbolt's own handle: this also lets its lock go
		}
		db, st, err = nil, nil, ix.damaged(fmt.Sprintf("reading it failed: %v", v))
	}()

	open := func(readOnly bool) (*bolt.DB, error) {
		opts := ix.liveOptions()
		opts.ReadOnly = readOnly
		opts.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		}
		db, err := bolt.Open(ix.path, 0o600, opts)
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("index: open %s: %w after %s: another process holds its lock "+
				"(a running server? read-only opens conflict with it too)", ix.path, err, ix.timeout)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch),
			errors.Is(err, berrors.ErrChecksum),
			err != nil && strings.Contains(err.Error(), "file size too small"): // bbolt has no sentinel for it
			return nil, ix.damaged(err.Error())
		case err != nil:
			return nil, fmt.Errorf("index: open %s: %w", ix.path, err)
		}
		if err := ix.checkFile(db, file); err != nil {
			_ = db.Close()
			return nil, err
		}
		return db, nil
	}
	var checked *ovState
	if !ix.readOnly {
		// Check the file read-only first: a read-write open already reads the freelist (where
		// a truncated file makes bbolt panic), and later writes to the file.
		ro, err := open(true)
		if err != nil {
			return nil, nil, err
		}
		// Read the delta log too (a broken page there panics in bbolt) before anything writes.
		// The overlay it gives is the read-write open's: it holds no memory of the file, only
		// generations and offsets, and nobody else writes the file while Dir/LOCK is held
		// (createBuckets below adds only missing, empty buckets).
		if checked, err = ix.readOverlay(ro); err != nil {
			_ = ro.Close()
			return nil, nil, err
		}
		if err := ro.Close(); err != nil {
			return nil, nil, fmt.Errorf("index: close %s: %w", ix.path, err)
		}
	}
	if db, err = open(ix.readOnly); err != nil {
		return nil, nil, err
	}
	fail := func(e error) (*bolt.DB, *ovState, error) {
		_ = db.Close()
		return nil, nil, e
	}
	if !ix.readOnly {
		if err := db.Update(createBuckets); err != nil {
			return fail(fmt.Errorf("index: create buckets in %s: %w", ix.path, err))
		}
	}
	if checked != nil {
		return db, checked, nil
	}
	if st, err = ix.readOverlay(db); err != nil {
		return fail(err)
	}
	return db, st, nil
}

// readOverlay rebuilds db's overlay (loadOverlay) in a read transaction. Called where a panic is
// recovered: the transaction must end before the recover closes db (bbolt's Close waits for open
// transactions), hence the View.
func (ix *Index) readOverlay(db *bolt.DB) (st *ovState, err error) {
	if err := db.View(func(tx *bolt.Tx) error {
		st, err = ix.loadOverlay(tx)
		return err
	}); err != nil {
		if errors.Is(err, errCorruptDelta) {
			return nil, ix.damaged(err.Error())
		}
		return nil, fmt.Errorf("index: read %s: %w", ix.path, err)
	}
	return st, nil
}

// checkFile checks that db's file is the one at ix.path and that it holds every page its meta
// page counts.
func (ix *Index) checkFile(db *bolt.DB, file *os.File) error {
	opened, err := file.Stat()
	if err != nil {
		return fmt.Errorf("index: stat %s: %w", ix.path, err)
	}
	atPath, err := os.Stat(ix.path)
	if err != nil {
		return fmt.Errorf("index: stat %s: %w", ix.path, err)
	}
	if !os.SameFile(opened, atPath) {
		return fmt.Errorf("index: %s was replaced while this process opened it: another process "+
			"writes the data directory without holding %s", ix.path, LockFileName)
	}
	tx, err := db.Begin(false)
	if err != nil {
		return fmt.Errorf("index: read %s: %w", ix.path, err)
	}
	want := tx.Size()
	_ = tx.Rollback()
	if opened.Size() < want {
		return ix.damaged(fmt.Sprintf("it is truncated: %d bytes, but its meta page counts %d", opened.Size(), want))
	}
	return nil
}

// removeLeftovers removes the files of a ReplaceAll (or a creation) that a crash interrupted: the
// half-built index.db.loading and (in the unlikely case that the crash came between creating and
// unlinking it) a spill file.
func removeLeftovers(path string) error {
	spills, err := filepath.Glob(path + spillPattern)
	if err != nil {
		return err
	}
	for _, f := range append(spills, path+loadingSuffix) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("index: remove leftover snapshot file: %w", err)
		}
	}
	return nil
}
