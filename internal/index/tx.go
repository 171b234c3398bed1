package index

import (
	"bytes"
	"encoding/json"
	"fmt"
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
