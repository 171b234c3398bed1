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

	// The overlay this transaction reads in front of the main buckets (overlay.go): the versions
	// of lay, then of frz, not newer than gen. lay is nil when the active layer was empty at the
	// start, frz when no layer was frozen.
	lay *layer
	frz *layer
	gen uint64
	dc  deltaCache // the delta entries the overlay's versions point into

	w *WriteTx // non-nil when this is the read side of a WriteTx

	// uc is the users' cache of exactly this transaction's state (usercache.go), nil when none
	// (never set on the read side of a WriteTx).
	uc *userCache

	// sh is the transaction this View shares with the other Views of its state (sharedread.go),
	// nil when it has its own; cur are its cursors on sh's buckets, taken at the first lookup.
	sh  *sharedRead
	cur *cursorSet
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
	t.lay = nil
	t.frz = nil
	t.dc = deltaCache{}
	t.w = nil
	t.uc = nil
	if t.cur != nil {
		t.sh.putCursors(t.cur)
		t.cur = nil
	}
	t.sh = nil
}

// cursors returns t's set of cursors on its shared transaction, taken at the first use.
func (t *ReadTx) cursors() *cursorSet {
	if t.cur == nil {
		t.cur = t.sh.takeCursors()
	}
	return t.cur
}

// touchRoot reads the shared transaction's root page down to bucket name, as a bucket's open does
// (with a kept cursor: no allocation). A View thus reads the root page for each bucket it uses, as
// with a transaction of its own: a damaged root page (bbolt panics on a page without a valid
// type) fails every View, not only a state's first (TestGatewayDeniesOnCorruptIndex).
func (t *ReadTx) touchRoot(name []byte) {
	c := t.cursors()
	if c.root == nil {
		c.root = t.tx.Cursor()
	}
	c.root.Seek(name)
}

// setOverlay makes t read the overlay of st.
func (t *ReadTx) setOverlay(st *ovState) {
	if st.lay.n.Load() > 0 {
		t.lay = st.lay
	}
	t.frz, t.gen = st.frz, st.gen
}

// lookup returns the newest value of key in t's overlay layers not newer than t.gen.
func (t *ReadTx) lookup(bi int, key []byte) (val []byte, found bool) {
	if t.lay != nil {
		if val, found = t.lay.lookup(bi, key, t.gen, t.deltas()); found {
			return val, true
		}
	}
	if t.frz != nil {
		return t.frz.lookup(bi, key, t.gen, t.deltas())
	}
	return nil, false
}

// deltas is the delta log of t's transaction, where the overlay's versions point.
func (t *ReadTx) deltas() *deltaCache {
	if t.dc.tx != t.tx {
		t.dc = deltaCache{tx: t.tx}
		if t.sh != nil {
			t.touchRoot(bucketDelta)
			t.dc.b, t.dc.looked = t.sh.delta, true
		}
	}
	return &t.dc
}

// get returns the value of key in bucket bi as this transaction sees it: its own writes (a
// WriteTx), then the overlay, then the main bucket. nil when absent. The bytes are read-only.
func (t *ReadTx) get(bi int, key []byte) []byte {
	if t.w != nil && t.w.pend != nil {
		if v, ok := t.w.pend[bi][string(key)]; ok {
			return v
		}
	}
	if v, ok := t.lookup(bi, key); ok {
		return v
	}
	b := t.bucket(bi)
	if b == nil {
		return nil
	}
	if t.sh == nil {
		return b.Get(key)
	}
	// bbolt's Get with a cursor kept across the Views of the shared transaction: Seek lands on
	// key or the next key (nil value: a nested bucket, absent here as for Get).
	cs := t.cursors()
	c := cs.b[bi]
	if c == nil {
		c = b.Cursor()
		cs.b[bi] = c
	}
	if k, v := c.Seek(key); bytes.Equal(k, key) {
		return v
	}
	return nil
}

// overlayRange returns the keys of bucket bi starting with prefix and >= start that this
// transaction sees in its own writes or the overlay, sorted, with their values (nil: deleted,
// which hides the main bucket's key).
func (t *ReadTx) overlayRange(bi int, prefix, start []byte) []ovKV {
	var keys []string
	if t.w != nil && t.w.pend != nil {
		for k := range t.w.pend[bi] {
			if strings.HasPrefix(k, string(prefix)) && k >= string(start) {
				keys = append(keys, k)
			}
		}
	}
	if t.lay != nil {
		keys = t.lay.keys(bi, prefix, start, t.gen, t.deltas(), keys)
	}
	if t.frz != nil {
		keys = t.frz.keys(bi, prefix, start, t.gen, t.deltas(), keys)
	}
	if len(keys) == 0 {
		return nil
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	out := make([]ovKV, 0, len(keys))
	for _, k := range keys {
		if t.w != nil && t.w.pend != nil {
			if v, ok := t.w.pend[bi][k]; ok {
				out = append(out, ovKV{key: k, val: v})
				continue
			}
		}
		if v, ok := t.lookup(bi, []byte(k)); ok {
			out = append(out, ovKV{key: k, val: v})
		}
	}
	return out
}

// scan calls fn with the keys of bucket bi that start with prefix and are >= start, in key order,
// with their values, as this transaction sees them (the main bucket merged with the overlay),
// until fn returns false or an error (returned as is). k and v are read-only and valid only
// during the call; fn must not write.
func (t *ReadTx) scan(bi int, prefix, start []byte, fn func(k, v []byte) (bool, error)) error {
	if bytes.Compare(start, prefix) < 0 {
		start = prefix
	}
	ov := t.overlayRange(bi, prefix, start)
	var (
		c    *bolt.Cursor
		k, v []byte
	)
	if b := t.bucket(bi); b != nil {
		c = b.Cursor()
		k, v = c.Seek(start)
	}
	for {
		inMain := k != nil && bytes.HasPrefix(k, prefix)
		if !inMain && len(ov) == 0 {
			return nil
		}
		var ck, cv []byte
		if len(ov) > 0 && (!inMain || ov[0].key <= string(k)) {
			if inMain && ov[0].key == string(k) {
				k, v = c.Next() // the overlay's value hides the main bucket's
			}
			e := ov[0]
			ov = ov[1:]
			if e.val == nil {
				continue
			}
			ck, cv = []byte(e.key), e.val
		} else {
			ck, cv = k, v
			k, v = c.Next()
		}
		more, err := fn(ck, cv)
		if err != nil || !more {
			return err
		}
	}
}

// bucket returns bucket i, or nil when it does not exist (a read-only open of a new file).
func (t *ReadTx) bucket(i int) *bolt.Bucket {
	if t.looked&(1<<i) == 0 {
		if t.sh != nil {
			t.touchRoot(bucketNames[i])
			t.buckets[i] = t.sh.buckets[i] // opened once for the Views of the state
		} else {
			t.buckets[i] = t.tx.Bucket(bucketNames[i])
		}
		t.looked |= 1 << i
	}
	return t.buckets[i]
}

// AppliedSeq is the replication seq this state reflects (0 for a new index). A View answers it
// from its state's cache (usercache.go) after the state's first read of it.
func (t *ReadTx) AppliedSeq() uint64 {
	if t.tx == nil {
		return 0
	}
	uc := t.uc
	if t.w != nil {
		uc = nil // its own writes come first (SetAppliedSeq)
	}
	if uc != nil {
		if seq, ok := uc.appliedSeq(); ok {
			return seq
		}
	}
	seq := decodeUint64(t.get(bMeta, keyAppliedSeq))
	if uc != nil && t.dc.err == nil {
		uc.setAppliedSeq(seq)
	}
	return seq
}

// UserJSON returns the stored JSON of user id, or nil, nil if absent. The bytes belong to bbolt
// or to the users' cache of this transaction's state (usercache.go): use them only inside the
// transaction, never modify them. An id that could never be stored
// (empty, too long, with a NUL byte, not UTF-8) is absent, not an error: lookups on the decision
// path answer "unknown", whatever the request holds.
func (t *ReadTx) UserJSON(id string) ([]byte, error) {
	if t.tx == nil {
		return nil, ErrClosed
	}
	if idProblem(id) != "" {
		return nil, nil
	}
	uc := t.uc
	if t.w != nil {
		uc = nil // its own writes come first; never set there, but never read it either
	}
	if uc != nil {
		if v, ok := uc.get(id); ok {
			return v, nil
		}
	}
	t.key = append(t.key[:0], id...)
	v := t.get(bUsers, t.key)
	if t.dc.err != nil {
		return nil, t.dc.err
	}
	if uc != nil {
		uc.put(id, v)
	}
	return v, nil
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
	t.key = recordKey(t.key[:0], typ, id)
	v := t.get(bRecords, t.key)
	if t.dc.err != nil {
		return nil, t.dc.err
	}
	return v, nil
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
	err := t.scan(bMeta, []byte(countKeyPrefix), nil, func(k, v []byte) (bool, error) {
		switch ks := string(k); {
		case ks == countUsersKey:
			c.Users = decodeUint64(v)
		case strings.HasPrefix(ks, countRecordKeyPrefix):
			c.Records[ks[len(countRecordKeyPrefix):]] = decodeUint64(v)
		}
		return true, nil
	})
	if err != nil {
		return c // scan's callback returns no error
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
	prefix := byUserPrefix(nil, userID, typ, loc)
	start := append(prefix[:len(prefix):len(prefix)], after...)
	err = t.scan(bByUser, prefix, start, func(k, _ []byte) (bool, error) {
		if after != "" && bytes.Equal(k, start) {
			return true, nil
		}
		if len(ids) == limit {
			next = ids[len(ids)-1]
			return false, nil
		}
		ids = append(ids, string(k[len(prefix):]))
		return true, nil
	})
	return ids, next, err
}

// ForEachUser calls fn with every user, in id order, until fn returns an error (returned as is).
// In a WriteTx, fn must not write.
func (t *ReadTx) ForEachUser(fn func(User) error) error {
	if t.tx == nil {
		return ErrClosed
	}
	return t.scan(bUsers, nil, nil, func(_, v []byte) (bool, error) {
		u, err := decodeUser(v)
		if err != nil {
			return false, err
		}
		return true, fn(u)
	})
}

// ForEachRecord calls fn with every record, in (type, id) order, until fn returns an error
// (returned as is). In a WriteTx, fn must not write.
func (t *ReadTx) ForEachRecord(fn func(Record) error) error {
	if t.tx == nil {
		return ErrClosed
	}
	return t.scan(bRecords, nil, nil, func(_, v []byte) (bool, error) {
		r, err := decodeRecord(v)
		if err != nil {
			return false, err
		}
		return true, fn(r)
	})
}
