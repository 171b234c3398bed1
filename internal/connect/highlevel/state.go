package highlevel

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// stateFile is the connector's bbolt file under --state-dir (docs/highlevel.md, "State").
const stateFile = "highlevel.db"

// Buckets of the state file.
var (
	bMeta    = []byte("meta")    // seq, snapshot, next_work, pending
	bDedupe  = []byte("dedupe")  // webhookId → 8-byte unix nanos of acceptance
	bWork    = []byte("work")    // 8-byte work number → workItem JSON (FIFO)
	bWorkIdx = []byte("workidx") // kind 0x00 id → 8-byte work number (one pending item per object)
	bUsers   = []byte("users")   // user id → entry JSON
	bRecords = []byte("records") // type 0x00 id → entry JSON
	bOutbox  = []byte("outbox")  // 8-byte seq → event JSON, written to the state before the sink
	bCompany = []byte("company") // location id → its companyId, as GET /locations/{locationId} answered
)

var (
	kSeq      = []byte("seq")       // last seq assigned (written to the outbox or the sink)
	kSnapshot = []byte("snapshot")  // 1 once the first copy reached the sink as a snapshot
	kNextWork = []byte("next_work") // next work number
	kPending  = []byte("pending")   // number of items in work
)

// workItem is one piece of work taken from a webhook: a refresh reads the object from the API,
// a delete is written as is.
type workItem struct {
	Op       string `json:"op"`   // "refresh" or "delete"
	Kind     string `json:"kind"` // "user", "contact" or "opportunity"
	ID       string `json:"id"`
	Location string `json:"loc,omitempty"` // locationId of the webhook ("" for company-level)
	// Company is the companyId of a company-level webhook taken before the connector knew its
	// company: the refresh checks it then.
	Company string `json:"co,omitempty"`
}

func (w workItem) key() []byte { return []byte(w.Kind + "\x00" + w.ID) }

// entry is the connector's copy of one fact as it last wrote it. Gen is the seq of the event
// that wrote it (or of the snapshot); Deleted marks a tombstone, kept until the next full
// reconcile so that a listing read before a delete does not bring the object back.
type entry struct {
	Gen     uint64          `json:"g"`
	Deleted bool            `json:"d,omitempty"`
	Fact    json.RawMessage `json:"f,omitempty"`
}

type state struct {
	db *bolt.DB
}

func openState(dir string) (*state, error) {
	if dir == "" {
		return nil, errors.New("state dir is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, stateFile), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w (is another connector running on this state dir?)", filepath.Join(dir, stateFile), err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bMeta, bDedupe, bWork, bWorkIdx, bUsers, bRecords, bOutbox, bCompany} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	// webhooks wait for their batch's fsync anyway: a short gathering delay keeps each answer fast
	db.MaxBatchDelay = 2 * time.Millisecond
	return &state{db: db}, nil
}

func (s *state) Close() error { return s.db.Close() }

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func be(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func getMeta(tx *bolt.Tx, k []byte) uint64          { return u64(tx.Bucket(bMeta).Get(k)) }
func putMeta(tx *bolt.Tx, k []byte, v uint64) error { return tx.Bucket(bMeta).Put(k, be(v)) }

// enqueueResult is what the webhook receiver answers.
type enqueueResult int

const (
	enqueued enqueueResult = iota
	duplicate
	backedUp
)

// enqueue records a webhook's work durably, with its webhookId, in one transaction: a duplicate
// id or a full queue changes nothing. Callers go through db.Batch, so fn may run twice; it only
// reads and writes inside its transaction.
func (s *state) enqueue(webhookID string, w workItem, now time.Time, maxPending int) (enqueueResult, uint64, error) {
	var res enqueueResult
	var pending uint64
	err := s.db.Batch(func(tx *bolt.Tx) error {
		res, pending = enqueued, getMeta(tx, kPending)
		d := tx.Bucket(bDedupe)
		if d.Get([]byte(webhookID)) != nil {
			res = duplicate
			return nil
		}
		idx := tx.Bucket(bWorkIdx)
		old := idx.Get(w.key())
		if old == nil && pending >= uint64(maxPending) {
			res = backedUp
			return nil
		}
		raw, err := json.Marshal(w)
		if err != nil {
			return err
		}
		n := getMeta(tx, kNextWork) + 1
		work := tx.Bucket(bWork)
		if old != nil { // a newer webhook for the same object replaces the waiting one
			if err := work.Delete(old); err != nil {
				return err
			}
		} else {
			pending++
		}
		if err := work.Put(be(n), raw); err != nil {
			return err
		}
		if err := idx.Put(w.key(), be(n)); err != nil {
			return err
		}
		if err := d.Put([]byte(webhookID), be(uint64(now.UnixNano()))); err != nil {
			return err
		}
		if err := putMeta(tx, kNextWork, n); err != nil {
			return err
		}
		return putMeta(tx, kPending, pending)
	})
	return res, pending, err
}

// queued is a work item with its number.
type queued struct {
	n uint64
	workItem
}

// takeWork returns up to max waiting items, oldest first (they stay queued until done).
func (s *state) takeWork(max int) ([]queued, error) {
	var out []queued
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bWork).Cursor()
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			var w workItem
			if err := json.Unmarshal(v, &w); err != nil {
				return fmt.Errorf("work item %d: %w", u64(k), err)
			}
			out = append(out, queued{n: u64(k), workItem: w})
		}
		return nil
	})
	return out, err
}

// doneWork removes finished items inside a commit's transaction; an item replaced by a newer
// webhook meanwhile (another number for the same object) stays.
func doneWork(tx *bolt.Tx, items []queued) error {
	work, idx := tx.Bucket(bWork), tx.Bucket(bWorkIdx)
	pending := getMeta(tx, kPending)
	for _, q := range items {
		if work.Get(be(q.n)) == nil {
			continue
		}
		if err := work.Delete(be(q.n)); err != nil {
			return err
		}
		if bytes.Equal(idx.Get(q.key()), be(q.n)) {
			if err := idx.Delete(q.key()); err != nil {
				return err
			}
		}
		if pending > 0 {
			pending--
		}
	}
	return putMeta(tx, kPending, pending)
}

func (s *state) pending() (n uint64) {
	s.db.View(func(tx *bolt.Tx) error { n = getMeta(tx, kPending); return nil })
	return n
}

// pruneDedupe forgets webhook ids accepted before cutoff.
func (s *state) pruneDedupe(cutoff time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bDedupe).Cursor()
		for k, v := c.First(); k != nil; {
			if int64(u64(v)) < cutoff.UnixNano() {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
				k, v = c.Seek(k) // after a delete the cursor must be repositioned
				continue
			}
			k, v = c.Next()
		}
		return nil
	})
	return n, err
}

func factKey(kind, id string) []byte {
	if kind == kindUser {
		return []byte(id)
	}
	return []byte(kind + "\x00" + id)
}

func factBucket(kind string) []byte {
	if kind == kindUser {
		return bUsers
	}
	return bRecords
}

func getEntry(tx *bolt.Tx, kind, id string) (entry, bool, error) {
	v := tx.Bucket(factBucket(kind)).Get(factKey(kind, id))
	if v == nil {
		return entry{}, false, nil
	}
	var e entry
	if err := json.Unmarshal(v, &e); err != nil {
		return entry{}, false, fmt.Errorf("state: %s %q: %w", kind, id, err)
	}
	return e, true, nil
}

func putEntry(tx *bolt.Tx, kind, id string, e entry) error {
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return tx.Bucket(factBucket(kind)).Put(factKey(kind, id), raw)
}
