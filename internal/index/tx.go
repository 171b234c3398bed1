package index

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// ReadTx is one bbolt read transaction (or the read side of a WriteTx). It satisfies
// policy.Facts. It must not be used after the View callback that received it returns.
type ReadTx struct {
	tx *bolt.Tx
	// Bucket handles, looked up on first use (a bbolt read transaction allocates one per lookup).
	buckets [4]*bolt.Bucket
	looked  uint8
	key     []byte // scratch buffer for lookup keys (bbolt copies keys it stores)

	w *WriteTx // non-nil when this is the read side of a WriteTx
}

const (
	bMeta = iota
	bUsers
	bRecords
	bByUser
)

var bucketNames = [4][]byte{bMeta: bucketMeta, bUsers: bucketUsers, bRecords: bucketRecords, bByUser: bucketByUser}

// reset clears t for reuse by another View (keeping the scratch buffer).
func (t *ReadTx) reset() {
	t.tx = nil
	t.buckets = [4]*bolt.Bucket{}
	t.looked = 0
	t.w = nil
}

// bucket returns bucket i, or nil when it does not exist (a read-only open of a new file).
func (t *ReadTx) bucket(i int) *bolt.Bucket {
	if t.looked&(1<<i) == 0 {
		t.buckets[i] = t.tx.Bucket(bucketNames[i])
		t.looked |= 1 << i
	}
	return t.buckets[i]
}

// AppliedSeq is the replication seq this state reflects (0 for a new index).
func (t *ReadTx) AppliedSeq() uint64 {
	if t.tx == nil {
		return 0
	}
	b := t.bucket(bMeta)
	if b == nil {
		return 0
	}
	return decodeUint64(b.Get(keyAppliedSeq))
}

// UserJSON returns the stored JSON of user id, or nil, nil if absent. The bytes belong to bbolt:
// valid only inside the transaction, never to be modified. An id that could never be stored
// (empty, too long, with a NUL byte, not UTF-8) is absent, not an error: lookups on the decision
// path answer "unknown", whatever the request holds.
func (t *ReadTx) UserJSON(id string) ([]byte, error) {
	if t.tx == nil {
		return nil, ErrClosed
	}
	if idProblem(id) != "" {
		return nil, nil
	}
	b := t.bucket(bUsers)
	if b == nil {
		return nil, nil
	}
	t.key = append(t.key[:0], id...)
	return b.Get(t.key), nil
}

// RecordJSON returns the stored JSON of record (typ, id), or nil, nil if absent. The bytes belong
// to bbolt: valid only inside the transaction, never to be modified. Invalid ids are absent, as
// for UserJSON.
func (t *ReadTx) RecordJSON(typ, id string) ([]byte, error) {
	if t.tx == nil {
		return nil, ErrClosed
	}
	if idProblem(typ) != "" || idProblem(id) != "" {
		return nil, nil
	}
	b := t.bucket(bRecords)
	if b == nil {
		return nil, nil
	}
	t.key = recordKey(t.key[:0], typ, id)
	return b.Get(t.key), nil
}

func checkRecordRef(typ, id string) error {
	if err := checkID("record type", typ); err != nil {
		return err
	}
	return checkID("record id", id)
}

// User returns user id decoded; ok is false when absent.
func (t *ReadTx) User(id string) (u User, ok bool, err error) {
	v, err := t.UserJSON(id)
	if err != nil || v == nil {
		return User{}, false, err
	}
	u, err = decodeUser(v)
	return u, err == nil, err
}

// Record returns record (typ, id) decoded (Followers non-nil); ok is false when absent.
func (t *ReadTx) Record(typ, id string) (r Record, ok bool, err error) {
	v, err := t.RecordJSON(typ, id)
	if err != nil || v == nil {
		return Record{}, false, err
	}
	r, err = decodeRecord(v)
	return r, err == nil, err
}

func decodeUser(v []byte) (User, error) {
	var u User
	if err := json.Unmarshal(v, &u); err != nil {
		return User{}, fmt.Errorf("index: corrupt user %q: %w", v, err)
	}
	if u.LocationIDs == nil {
		u.LocationIDs = []string{}
	}
	return u, nil
}

func decodeRecord(v []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return Record{}, fmt.Errorf("index: corrupt record %q: %w", v, err)
	}
	if r.Followers == nil {
		r.Followers = []string{}
	}
	return r, nil
}

// Counts are the counts of this state (including the uncommitted changes of a WriteTx).
func (t *ReadTx) Counts() Counts {
	c := newCounts()
	if t.tx == nil {
		return c
	}
	if b := t.bucket(bMeta); b != nil {
		cur := b.Cursor()
		prefix := []byte(countKeyPrefix)
		for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
			switch ks := string(k); {
			case ks == countUsersKey:
				c.Users = decodeUint64(v)
			case strings.HasPrefix(ks, countRecordKeyPrefix):
				c.Records[ks[len(countRecordKeyPrefix):]] = decodeUint64(v)
			}
		}
	}
	if t.w != nil {
		for k, d := range t.w.deltas {
			if k == countUsersKey {
				c.Users = uint64(int64(c.Users) + d)
			} else {
				typ := k[len(countRecordKeyPrefix):]
				c.Records[typ] = uint64(int64(c.Records[typ]) + d)
				if c.Records[typ] == 0 && typ != TypeContact && typ != TypeOpportunity {
					delete(c.Records, typ) // as flushCounts will
				}
			}
		}
	}
	return c
}

// SubjectRecords lists the ids of the records of type typ in location loc that userID owns or
// follows, in id (byte) order, strictly after `after` ("" = from the start), at most limit (> 0).
// next is the last id returned when more remain, else "". ids is never nil.
func (t *ReadTx) SubjectRecords(userID, typ, loc, after string, limit int) (ids []string, next string, err error) {
	if t.tx == nil {
		return nil, "", ErrClosed
	}
	if err := checkID("user id", userID); err != nil {
		return nil, "", err
	}
	if err := checkID("record type", typ); err != nil {
		return nil, "", err
	}
	if err := checkID("location id", loc); err != nil {
		return nil, "", err
	}
	if err := checkOptionalID("cursor", after); err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		return nil, "", fmt.Errorf("index: SubjectRecords limit must be positive, not %d", limit)
	}
	ids = []string{}
	b := t.bucket(bByUser)
	if b == nil {
		return ids, "", nil
	}
	prefix := byUserPrefix(nil, userID, typ, loc)
	start := append(prefix[:len(prefix):len(prefix)], after...)
	c := b.Cursor()
	k, _ := c.Seek(start)
	if after != "" && bytes.Equal(k, start) {
		k, _ = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(ids) == limit {
			return ids, ids[len(ids)-1], nil
		}
		ids = append(ids, string(k[len(prefix):]))
	}
	return ids, "", nil
}

// ForEachUser calls fn with every user, in id order, until fn returns an error (returned as is).
// In a WriteTx, fn must not write.
func (t *ReadTx) ForEachUser(fn func(User) error) error {
	if t.tx == nil {
		return ErrClosed
	}
	b := t.bucket(bUsers)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		u, err := decodeUser(v)
		if err != nil {
			return err
		}
		if err := fn(u); err != nil {
			return err
		}
	}
	return nil
}

// ForEachRecord calls fn with every record, in (type, id) order, until fn returns an error
// (returned as is). In a WriteTx, fn must not write.
func (t *ReadTx) ForEachRecord(fn func(Record) error) error {
	if t.tx == nil {
		return ErrClosed
	}
	b := t.bucket(bRecords)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, err := decodeRecord(v)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// WriteTx is one bbolt write transaction: the reads of ReadTx (seeing the transaction's own
// writes) plus the replication operations, with the set semantics of docs/reference.md §2.3. Every operation
// validates before it writes: one that fails with ErrInvalidID, ErrTooManyFollowers or
// ErrRecordNotFound has written nothing, so the caller may go on with the transaction.
// It must not be used after the Update callback that received it returns.
type WriteTx struct {
	ReadTx
	maxFollowers int
	// deltas are the count changes of this transaction, by meta key, written at commit.
	deltas map[string]int64
}

func newWriteTx(tx *bolt.Tx, maxFollowers int) *WriteTx {
	w := &WriteTx{maxFollowers: maxFollowers, deltas: map[string]int64{}}
	w.tx = tx
	w.ReadTx.w = w
	return w
}

func (w *WriteTx) reset() {
	w.ReadTx.reset()
	w.deltas = nil
}

func (w *WriteTx) count(key string, d int64) { w.deltas[key] += d }

// flushCounts adds the deltas to the stored counts.
func (w *WriteTx) flushCounts() error {
	b := w.bucket(bMeta)
	for k, d := range w.deltas {
		if d == 0 {
			continue
		}
		kb := []byte(k)
		n := int64(decodeUint64(b.Get(kb))) + d
		if n < 0 {
			return fmt.Errorf("index: count %s would become negative (%d)", k, n)
		}
		var err error
		if n == 0 {
			err = b.Delete(kb)
		} else {
			err = b.Put(kb, encodeUint64(uint64(n)))
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
	return w.bucket(bMeta).Put(keyAppliedSeq, encodeUint64(seq))
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
	b := w.bucket(bUsers)
	key := []byte(u.ID)
	if b.Get(key) == nil {
		w.count(countUsersKey, 1)
	}
	return b.Put(key, v)
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
	bu := w.bucket(bByUser)
	prefix := append([]byte(id), 0)
	c := bu.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		_, typ, _, rid, ok := splitByUserKey(k)
		if !ok || len(v) != 1 {
			return fmt.Errorf("index: corrupt reverse index entry %q", k)
		}
		refs = append(refs, ref{key: bytes.Clone(k), typ: typ, id: rid, role: v[0]})
	}
	for _, r := range refs {
		if err := bu.Delete(r.key); err != nil {
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
	b := w.bucket(bUsers)
	key := []byte(id)
	if b.Get(key) == nil {
		return nil
	}
	w.count(countUsersKey, -1)
	return b.Delete(key)
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
	return w.bucket(bRecords).Delete(recordKey(nil, typ, id))
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
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return w.bucket(bRecords).Put(recordKey(nil, r.Type, r.ID), v)
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
	return w.bucket(bByUser).Put(w.key, v)
}

func (w *WriteTx) delRef(user string, r *Record) error {
	w.key = byUserKey(w.key[:0], user, r.Type, r.LocationID, r.ID)
	return w.bucket(bByUser).Delete(w.key)
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
