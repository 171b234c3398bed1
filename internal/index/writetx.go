package index

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// WriteTx is one Update's transaction: the reads of ReadTx (seeing the transaction's own
// writes, collected in memory until the commit, index.go) plus the replication operations, with the set semantics of docs/reference.md §2.3. Every operation
// validates before it writes: one that fails with ErrInvalidID, ErrTooManyFollowers or
// ErrRecordNotFound has written nothing, so the caller may go on with the transaction.
// It must not be used after the Update callback that received it returns.
type WriteTx struct {
	ReadTx
	maxFollowers int
	// deltas are the count changes of this transaction, by meta key, written at commit.
	deltas map[string]int64
	// pend holds the transaction's writes when they go to the delta log and the overlay
	// (overlay.go); nil when they go straight to the main buckets (tuning.direct).
	pend *pending
}

// newWriteTx starts the write side of tx. With st, writes are collected in w.pend and reads see
// the whole overlay of st; without, they go to the main buckets.
func newWriteTx(tx *bolt.Tx, maxFollowers int, fill float64, st *ovState) *WriteTx {
	w := &WriteTx{maxFollowers: maxFollowers, deltas: map[string]int64{}}
	w.tx = tx
	w.ReadTx.w = w
	if st != nil {
		w.pend = newPending()
		w.setOverlay(st)
	}
	if fill > 0 {
		for _, i := range []int{bRecords, bByUser} {
			if b := w.bucket(i); b != nil {
				b.FillPercent = fill
			}
		}
	}
	return w
}

func (w *WriteTx) reset() {
	w.ReadTx.reset()
	w.deltas = nil
	w.pend = nil
}

// put stores key = val (val must stay untouched until the commit); del deletes key.
func (w *WriteTx) put(bi int, key, val []byte) error {
	if w.pend != nil {
		w.pend[bi][string(key)] = val
		return nil
	}
	return w.bucket(bi).Put(key, val)
}

func (w *WriteTx) del(bi int, key []byte) error {
	if w.pend != nil {
		if w.lay == nil && w.frz == nil && w.bucket(bi).Get(key) == nil {
			delete(w.pend[bi], string(key)) // nothing to hide: forget the key altogether
			return nil
		}
		w.pend[bi][string(key)] = nil
		return nil
	}
	return w.bucket(bi).Delete(key)
}

func (w *WriteTx) count(key string, d int64) { w.deltas[key] += d }

// flushCounts adds the deltas to the stored counts.
func (w *WriteTx) flushCounts() error {
	for k, d := range w.deltas {
		if d == 0 {
			continue
		}
		kb := []byte(k)
		n := int64(decodeUint64(w.get(bMeta, kb))) + d
		if n < 0 {
			return fmt.Errorf("index: count %s would become negative (%d)", k, n)
		}
		var err error
		if n == 0 {
			err = w.del(bMeta, kb)
		} else {
			err = w.put(bMeta, kb, encodeUint64(uint64(n)))
		}
		if err != nil {
			return err
		}
	}
	clear(w.deltas)
	return nil
}

func (w *WriteTx) check() error {
	if w.tx == nil {
		return ErrClosed
	}
	return nil
}

// SetAppliedSeq sets applied_seq.
func (w *WriteTx) SetAppliedSeq(seq uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	return w.put(bMeta, keyAppliedSeq, encodeUint64(seq))
}

func checkUser(u *User) error {
	if err := checkID("user.id", u.ID); err != nil {
		return err
	}
	for i, l := range u.LocationIDs {
		if err := checkID(fmt.Sprintf("user %q location_ids[%d]", u.ID, i), l); err != nil {
			return err
		}
	}
	return nil
}

// encodeUser checks u's ids and returns the stored JSON (location_ids an array, never null).
func encodeUser(u User) ([]byte, error) {
	if err := checkUser(&u); err != nil {
		return nil, err
	}
	if u.LocationIDs == nil {
		u.LocationIDs = []string{}
	}
	return json.Marshal(u)
}

// PutUser inserts or replaces user u (stored with location_ids an array, never null). The role and
// the defaults of the booleans are the caller's business; the ids are checked (ErrInvalidID).
func (w *WriteTx) PutUser(u User) error {
	if err := w.check(); err != nil {
		return err
	}
	v, err := encodeUser(u)
	if err != nil {
		return err
	}
	key := []byte(u.ID)
	if w.get(bUsers, key) == nil {
		w.count(countUsersKey, 1)
	}
	return w.put(bUsers, key, v)
}

// DeleteUser deletes user id, removes it from every follower list and unassigns (owner "") the
// records it owned, found through the reverse index. The references are cleaned even when the user
// itself is not stored (owners and followers need not be). An id neither stored nor referenced:
// no-op.
func (w *WriteTx) DeleteUser(id string) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := checkID("user id", id); err != nil {
		return err
	}
	// Collect first: bbolt cursors must not run over keys being deleted.
	type ref struct {
		key  []byte
		typ  string
		id   string
		role byte
	}
	var refs []ref
	err := w.scan(bByUser, append([]byte(id), 0), nil, func(k, v []byte) (bool, error) {
		_, typ, _, rid, ok := splitByUserKey(k)
		if !ok || len(v) != 1 {
			return false, fmt.Errorf("index: corrupt reverse index entry %q", k)
		}
		refs = append(refs, ref{key: bytes.Clone(k), typ: typ, id: rid, role: v[0]})
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, r := range refs {
		if err := w.del(bByUser, r.key); err != nil {
			return err
		}
		rec, ok, err := w.Record(r.typ, r.id)
		if err != nil {
			return err
		}
		if !ok {
			continue // the entry was stale; it is gone now
		}
		switch {
		case r.role == roleOwner && rec.Owner == id:
			rec.Owner = ""
		case r.role == roleFollower:
			rec.Followers = slices.DeleteFunc(rec.Followers, func(f string) bool { return f == id })
		}
		if err := w.storeRecord(&rec); err != nil {
			return err
		}
	}
	key := []byte(id)
	if w.get(bUsers, key) == nil {
		return nil
	}
	w.count(countUsersKey, -1)
	return w.del(bUsers, key)
}

// normaliseRecord validates r's ids and returns a copy of it whose followers are a set without the
// owner, in first-seen order (never nil).
func normaliseRecord(r Record, maxFollowers int) (Record, error) {
	if err := checkRecordRef(r.Type, r.ID); err != nil {
		return Record{}, err
	}
	name := func(field string) string { return fmt.Sprintf("%s %q %s", r.Type, r.ID, field) }
	if p := idProblem(r.LocationID); p != "" {
		return Record{}, invalidID(name("location_id"), p)
	}
	if p := idProblem(r.Owner); r.Owner != "" && p != "" {
		return Record{}, invalidID(name("owner"), p)
	}
	if p := idProblem(r.ContactID); r.ContactID != "" && p != "" {
		return Record{}, invalidID(name("contact_id"), p)
	}
	followers := make([]string, 0, min(len(r.Followers), maxFollowers))
	for i, f := range r.Followers {
		if p := idProblem(f); p != "" {
			return Record{}, invalidID(name(fmt.Sprintf("followers[%d]", i)), p)
		}
		if f == r.Owner || slices.Contains(followers, f) {
			continue
		}
		if len(followers) == maxFollowers {
			return Record{}, fmt.Errorf("%w: %s %q has more than %d distinct followers besides its owner",
				ErrTooManyFollowers, r.Type, r.ID, maxFollowers)
		}
		followers = append(followers, f)
	}
	r.Followers = followers
	return r, nil
}

// PutRecord inserts or replaces record r. Its followers are normalised: the owner and duplicates
// are dropped (first-seen order kept); more than MaxFollowers distinct followers is
// ErrTooManyFollowers. The reverse index follows the new location, owner and followers.
func (w *WriteTx) PutRecord(r Record) error {
	if err := w.check(); err != nil {
		return err
	}
	r, err := normaliseRecord(r, w.maxFollowers)
	if err != nil {
		return err
	}
	old, exists, err := w.Record(r.Type, r.ID)
	if err != nil {
		return err
	}
	if exists {
		if err := w.unindex(&old); err != nil {
			return err
		}
	} else {
		w.count(countRecordKeyPrefix+r.Type, 1)
	}
	if err := w.index(&r); err != nil {
		return err
	}
	return w.storeRecord(&r)
}

// DeleteRecord deletes record (typ, id) and its reverse index entries. Absent: no-op.
func (w *WriteTx) DeleteRecord(typ, id string) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := checkRecordRef(typ, id); err != nil {
		return err
	}
	old, exists, err := w.Record(typ, id)
	if err != nil || !exists {
		return err
	}
	if err := w.unindex(&old); err != nil {
		return err
	}
	w.count(countRecordKeyPrefix+typ, -1)
	return w.del(bRecords, recordKey(nil, typ, id))
}

// existing loads a record that must exist.
func (w *WriteTx) existing(typ, id string) (Record, error) {
	if err := w.check(); err != nil {
		return Record{}, err
	}
	if err := checkRecordRef(typ, id); err != nil {
		return Record{}, err
	}
	r, ok, err := w.Record(typ, id)
	if err != nil {
		return Record{}, err
	}
	if !ok {
		return Record{}, fmt.Errorf("%w: %s %q", ErrRecordNotFound, typ, id)
	}
	return r, nil
}

// AddFollower makes userID a follower of record (typ, id). A present follower or the owner: no-op.
// ErrRecordNotFound when the record does not exist; ErrTooManyFollowers when it already has
// MaxFollowers followers.
func (w *WriteTx) AddFollower(typ, id, userID string) error {
	if err := checkID("follower user id", userID); err != nil {
		return err
	}
	r, err := w.existing(typ, id)
	if err != nil {
		return err
	}
	if userID == r.Owner || slices.Contains(r.Followers, userID) {
		return nil
	}
	if len(r.Followers) >= w.maxFollowers {
		return fmt.Errorf("%w: %s %q already has %d followers", ErrTooManyFollowers, typ, id, len(r.Followers))
	}
	r.Followers = append(r.Followers, userID)
	if err := w.putRef(userID, &r, roleFollower); err != nil {
		return err
	}
	return w.storeRecord(&r)
}

// RemoveFollower removes userID from the followers of record (typ, id). Absent: no-op.
// ErrRecordNotFound when the record does not exist.
func (w *WriteTx) RemoveFollower(typ, id, userID string) error {
	if err := checkID("follower user id", userID); err != nil {
		return err
	}
	r, err := w.existing(typ, id)
	if err != nil {
		return err
	}
	i := slices.Index(r.Followers, userID)
	if i < 0 {
		return nil
	}
	r.Followers = slices.Delete(r.Followers, i, i+1)
	if err := w.delRef(userID, &r); err != nil {
		return err
	}
	return w.storeRecord(&r)
}

// SetOwner makes userID the owner of record (typ, id); "" unassigns it. A follower that becomes the
// owner leaves the followers. ErrRecordNotFound when the record does not exist.
func (w *WriteTx) SetOwner(typ, id, userID string) error {
	if err := checkOptionalID("owner user id", userID); err != nil {
		return err
	}
	r, err := w.existing(typ, id)
	if err != nil {
		return err
	}
	if r.Owner == userID {
		return nil
	}
	if r.Owner != "" {
		if err := w.delRef(r.Owner, &r); err != nil {
			return err
		}
	}
	r.Owner = userID
	if userID != "" {
		// Overwrites the follower entry, if any: one entry per (user, record).
		r.Followers = slices.DeleteFunc(r.Followers, func(f string) bool { return f == userID })
		if err := w.putRef(userID, &r, roleOwner); err != nil {
			return err
		}
	}
	return w.storeRecord(&r)
}

func (w *WriteTx) storeRecord(r *Record) error {
	if r.Followers == nil {
		r.Followers = []string{}
	}
	v, err := appendRecordJSON(nil, r) // fresh: bbolt keeps a reference to values until commit
	if err != nil {
		return err
	}
	return w.put(bRecords, recordKey(nil, r.Type, r.ID), v)
}

var (
	valueOwner    = []byte{roleOwner}
	valueFollower = []byte{roleFollower}
)

func (w *WriteTx) putRef(user string, r *Record, role byte) error {
	v := valueFollower
	if role == roleOwner {
		v = valueOwner
	}
	w.key = byUserKey(w.key[:0], user, r.Type, r.LocationID, r.ID)
	return w.put(bByUser, w.key, v)
}

func (w *WriteTx) delRef(user string, r *Record) error {
	w.key = byUserKey(w.key[:0], user, r.Type, r.LocationID, r.ID)
	return w.del(bByUser, w.key)
}

// index writes the reverse index entries of r.
func (w *WriteTx) index(r *Record) error {
	if r.Owner != "" {
		if err := w.putRef(r.Owner, r, roleOwner); err != nil {
			return err
		}
	}
	for _, f := range r.Followers {
		if err := w.putRef(f, r, roleFollower); err != nil {
			return err
		}
	}
	return nil
}

// unindex deletes the reverse index entries of r.
func (w *WriteTx) unindex(r *Record) error {
	if r.Owner != "" {
		if err := w.delRef(r.Owner, r); err != nil {
			return err
		}
	}
	for _, f := range r.Followers {
		if err := w.delRef(f, r); err != nil {
			return err
		}
	}
	return nil
}
