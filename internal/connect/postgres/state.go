package postgres

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The state file (docs/postgres.md "State"): the connector's copy of the mapped tables' rows, the
// facts it last wrote, and its positions.
//
//	bucket     key                              value
//	meta       lsn, end_lsn, seq, synced        8-byte big-endian uint64
//	           source                           "<system id>/<database>/<slot>"
//	users      <user id>                        JSON of userRow
//	records    <type> 0x00 <id>                 JSON of recRow
//	followers  <type> 0x00 <id> 0x00 <user>     4-byte count of rows (REPLICA IDENTITY FULL allows duplicates)
//	written    u 0x00 <id> | r 0x00 <type> 0x00 <id>   JSON of the fact last written
//	byuser     <user> 0x00 <type> 0x00 <id>     empty: a written record names the user
var (
	bMeta      = []byte("meta")
	bUsers     = []byte("users")
	bRecords   = []byte("records")
	bFollowers = []byte("followers")
	bWritten   = []byte("written")
	bByUser    = []byte("byuser")
	allBuckets = [][]byte{bMeta, bUsers, bRecords, bFollowers, bWritten, bByUser}
)

// Meta keys.
const (
	kLSN    = "lsn"     // commit LSN of the last transaction written
	kEndLSN = "end_lsn" // its end LSN: where streaming resumes
	kSeq    = "seq"     // seq of the last event written
	kSynced = "synced"  // 1 once the first copy reached the sink
	kSource = "source"
)

// stateFile is the name of the state file in --state-dir.
const stateFile = "postgres-connector.db"

func openState(dir string) (*bolt.DB, error) {
	db, err := bolt.Open(filepath.Join(dir, stateFile), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening the state file in %s: %w (is another connector running on it?)", dir, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// userRow is a users row as the copy keeps it; nil pointers are SQL NULLs.
type userRow struct {
	Role  *string  `json:"role"`
	Locs  []string `json:"locs"`
	NoLoc bool     `json:"no_locs,omitempty"` // location_ids is NULL
	ADO   *bool    `json:"ado"`
	CE    *bool    `json:"ce"`
	OE    *bool    `json:"oe"`
}

// recRow is a contacts or opportunities row.
type recRow struct {
	Loc     *string `json:"loc"`
	Owner   *string `json:"owner"`
	Contact *string `json:"contact,omitempty"`
}

// User and Record are the facts written, as the replication API and snapshot lines name them.
type User struct {
	ID                   string   `json:"id"`
	Role                 string   `json:"role"`
	LocationIDs          []string `json:"location_ids"`
	AssignedDataOnly     bool     `json:"assigned_data_only"`
	ContactsEnabled      bool     `json:"contacts_enabled"`
	OpportunitiesEnabled bool     `json:"opportunities_enabled"`
}

// Record is a record fact.
type Record struct {
	Type       string   `json:"type"`
	ID         string   `json:"id"`
	LocationID string   `json:"location_id"`
	Owner      string   `json:"owner"`
	Followers  []string `json:"followers"`
	ContactID  string   `json:"contact_id,omitempty"`
}

// recKey names a record.
type recKey struct{ Type, ID string }

func (k recKey) String() string { return k.Type + "/" + k.ID }

func rk(typ, id string) []byte { return []byte(typ + "\x00" + id) }

// stx is one transaction of the state file.
type stx struct{ tx *bolt.Tx }

func (s stx) b(name []byte) *bolt.Bucket { return s.tx.Bucket(name) }

func (s stx) meta(k string) uint64 {
	v := s.b(bMeta).Get([]byte(k))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (s stx) setMeta(k string, v uint64) error {
	return s.b(bMeta).Put([]byte(k), binary.BigEndian.AppendUint64(nil, v))
}

func (s stx) metaString(k string) string { return string(s.b(bMeta).Get([]byte(k))) }

func (s stx) setMetaString(k, v string) error { return s.b(bMeta).Put([]byte(k), []byte(v)) }

func getJSON[T any](b *bolt.Bucket, key []byte) (T, bool, error) {
	var v T
	raw := b.Get(key)
	if raw == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, false, fmt.Errorf("the state file holds a bad value at %q: %w", key, err)
	}
	return v, true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

func (s stx) user(id string) (userRow, bool, error) { return getJSON[userRow](s.b(bUsers), []byte(id)) }
func (s stx) putUser(id string, r userRow) error    { return putJSON(s.b(bUsers), []byte(id), r) }
func (s stx) delUser(id string) error               { return s.b(bUsers).Delete([]byte(id)) }

func (s stx) rec(k recKey) (recRow, bool, error) {
	return getJSON[recRow](s.b(bRecords), rk(k.Type, k.ID))
}
func (s stx) putRec(k recKey, r recRow) error { return putJSON(s.b(bRecords), rk(k.Type, k.ID), r) }
func (s stx) delRec(k recKey) error           { return s.b(bRecords).Delete(rk(k.Type, k.ID)) }

func fk(k recKey, user string) []byte { return []byte(k.Type + "\x00" + k.ID + "\x00" + user) }

// addFollower counts one more row for (k, user); dup tells whether there was one already.
func (s stx) addFollower(k recKey, user string) (dup bool, err error) {
	b := s.b(bFollowers)
	key := fk(k, user)
	n := uint32(0)
	if v := b.Get(key); len(v) == 4 {
		n = binary.BigEndian.Uint32(v)
	}
	return n > 0, b.Put(key, binary.BigEndian.AppendUint32(nil, n+1))
}

// removeFollower counts one row fewer for (k, user).
func (s stx) removeFollower(k recKey, user string) error {
	b := s.b(bFollowers)
	key := fk(k, user)
	v := b.Get(key)
	if len(v) != 4 || binary.BigEndian.Uint32(v) <= 1 {
		return b.Delete(key)
	}
	return b.Put(key, binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(v)-1))
}

// followers returns the distinct followers of k in the copy, sorted, and whether a row was there
// more than once.
func (s stx) followers(k recKey) (users []string, dup bool) {
	prefix := []byte(k.Type + "\x00" + k.ID + "\x00")
	c := s.b(bFollowers).Cursor()
	for key, v := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, v = c.Next() {
		users = append(users, string(key[len(prefix):]))
		if len(v) == 4 && binary.BigEndian.Uint32(v) > 1 {
			dup = true
		}
	}
	return users, dup
}

// clear empties a bucket, calling each with its keys first.
func (s stx) clear(name []byte, each func(key []byte) error) error {
	if each != nil {
		if err := s.b(name).ForEach(func(k, _ []byte) error { return each(bytes.Clone(k)) }); err != nil {
			return err
		}
	}
	if err := s.tx.DeleteBucket(name); err != nil {
		return err
	}
	_, err := s.tx.CreateBucket(name)
	return err
}

func splitKey(k []byte, n int) []string { return strings.SplitN(string(k), "\x00", n) }

// written facts.

func wuKey(id string) []byte              { return []byte("u\x00" + id) }
func wrKey(k recKey) []byte               { return []byte("r\x00" + k.Type + "\x00" + k.ID) }
func byUserKey(u string, k recKey) []byte { return []byte(u + "\x00" + k.Type + "\x00" + k.ID) }

func (s stx) writtenUser(id string) (User, bool, error) {
	return getJSON[User](s.b(bWritten), wuKey(id))
}
func (s stx) writtenRec(k recKey) (Record, bool, error) {
	return getJSON[Record](s.b(bWritten), wrKey(k))
}

func (s stx) setWrittenUser(id string, u *User) error {
	if u == nil {
		return s.b(bWritten).Delete(wuKey(id))
	}
	return putJSON(s.b(bWritten), wuKey(id), u)
}

// setWrittenRec records r as written for k (nil: deleted), keeping byuser exact.
func (s stx) setWrittenRec(k recKey, r *Record) error {
	old, had, err := s.writtenRec(k)
	if err != nil {
		return err
	}
	bu := s.b(bByUser)
	if had {
		for _, u := range namedUsers(old) {
			if err := bu.Delete(byUserKey(u, k)); err != nil {
				return err
			}
		}
	}
	if r == nil {
		return s.b(bWritten).Delete(wrKey(k))
	}
	for _, u := range namedUsers(*r) {
		if err := bu.Put(byUserKey(u, k), nil); err != nil {
			return err
		}
	}
	return putJSON(s.b(bWritten), wrKey(k), r)
}

func namedUsers(r Record) []string {
	out := slices.Clone(r.Followers)
	if r.Owner != "" {
		out = append(out, r.Owner)
	}
	return out
}

// recordsNaming returns the written records that name user (owner or follower).
func (s stx) recordsNaming(user string) []recKey {
	prefix := []byte(user + "\x00")
	var out []recKey
	c := s.b(bByUser).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		p := splitKey(k[len(prefix):], 2)
		if len(p) == 2 {
			out = append(out, recKey{p[0], p[1]})
		}
	}
	return out
}

var errStateMismatch = errors.New("the state directory belongs to another source")
