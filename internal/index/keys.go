package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Sentinel errors. Every error the package returns for one of these conditions wraps the sentinel
// (test with errors.Is) and adds a message naming the record, user or field concerned.
var (
	// ErrRecordNotFound is returned by WriteTx.AddFollower, WriteTx.RemoveFollower and
	// WriteTx.SetOwner when the record does not exist.
	ErrRecordNotFound = errors.New("record not found")
	// ErrTooManyFollowers is returned by WriteTx.PutRecord and Loader.PutRecord when a record has
	// more than Config.MaxFollowers distinct followers besides its owner, and by
	// WriteTx.AddFollower when adding a new follower would exceed that maximum. Nothing is written.
	ErrTooManyFollowers = errors.New("too many followers")
	// ErrInvalidID is returned by every method taking ids (user, record, location and type names,
	// owner, followers, contact_id) when one is empty where it is required, longer than MaxIDLen
	// bytes, contains a NUL byte or is not valid UTF-8. Nothing is written.
	ErrInvalidID = errors.New("invalid id")
	// ErrClosed is returned by View, Update, ReplaceAll and WaitForSeq once the index is closed, and
	// by ReadTx methods used after their View callback returned.
	ErrClosed = errors.New("index closed")
	// ErrReadOnly is returned by Update and ReplaceAll on an index opened with Config.ReadOnly.
	ErrReadOnly = errors.New("index opened read-only")
)

// MaxIDLen is the maximum length in bytes of any id (user, record, location, type).
const MaxIDLen = 512

// Bucket names and meta keys (see docs/design.md).
var (
	bucketMeta    = []byte("meta")
	bucketUsers   = []byte("users")
	bucketRecords = []byte("records")
	bucketByUser  = []byte("byuser")
	bucketDelta   = []byte("delta")

	keyAppliedSeq = []byte("applied_seq")
)

const (
	countUsersKey        = "count:users"
	countRecordKeyPrefix = "count:record:"
	countKeyPrefix       = "count:"

	roleOwner    = 'o'
	roleFollower = 'f'
)

// The domain's words (docs/reference.md §1), declared here once for every Go package of the
// module, since every one may import index (the Rego policies keep their own, and
// internal/refmodel, written independently, its own).

// Built-in record types; Counts.Records always has these keys.
const (
	TypeContact     = "contact"
	TypeOpportunity = "opportunity"
)

// The roles of a user.
const (
	RoleAdmin = "admin"
	RoleUser  = "user"
)

// The actions a decision is asked about.
const (
	ActionView           = "view"
	ActionEdit           = "edit"
	ActionDelete         = "delete"
	ActionChangeOwner    = "change_owner"
	ActionAddFollower    = "add_follower"
	ActionRemoveFollower = "remove_follower"
)

// Actions returns every action, in the order of docs/reference.md §1.2.
func Actions() []string {
	return []string{ActionView, ActionEdit, ActionDelete, ActionChangeOwner, ActionAddFollower, ActionRemoveFollower}
}

// idProblem says what is wrong with id, or "" when it is a valid id.
func idProblem(id string) string {
	switch {
	case id == "":
		return "is empty"
	case len(id) > MaxIDLen:
		return fmt.Sprintf("is %d bytes long (at most %d)", len(id), MaxIDLen)
	case strings.IndexByte(id, 0) >= 0:
		return "contains a NUL byte"
	case !utf8.ValidString(id):
		// JSON cannot carry it: the stored document would name another id than its key.
		return "is not valid UTF-8"
	}
	return ""
}

func invalidID(field, problem string) error {
	return fmt.Errorf("%w: %s %s", ErrInvalidID, field, problem)
}

// checkID validates one id. field names it in the error ("record id", …).
func checkID(field, id string) error {
	if p := idProblem(id); p != "" {
		return invalidID(field, p)
	}
	return nil
}

// checkOptionalID validates an id that may be empty.
func checkOptionalID(field, id string) error {
	if id == "" {
		return nil
	}
	return checkID(field, id)
}

// recordKey appends the records-bucket key `<type>\x00<id>` to dst.
func recordKey(dst []byte, typ, id string) []byte {
	if dst == nil {
		dst = make([]byte, 0, len(typ)+1+len(id)) // one allocation, not two
	}
	dst = append(dst, typ...)
	dst = append(dst, 0)
	return append(dst, id...)
}

// byUserPrefix appends `<user>\x00<type>\x00<location>\x00` to dst.
func byUserPrefix(dst []byte, user, typ, loc string) []byte {
	dst = append(dst, user...)
	dst = append(dst, 0)
	dst = append(dst, typ...)
	dst = append(dst, 0)
	dst = append(dst, loc...)
	return append(dst, 0)
}

// byUserKey appends `<user>\x00<type>\x00<location>\x00<id>` to dst.
func byUserKey(dst []byte, user, typ, loc, id string) []byte {
	return append(byUserPrefix(dst, user, typ, loc), id...)
}

// splitByUserKey splits a byuser key into its four parts.
func splitByUserKey(k []byte) (user, typ, loc, id string, ok bool) {
	parts := bytes.SplitN(k, []byte{0}, 4)
	if len(parts) != 4 {
		return "", "", "", "", false
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), string(parts[3]), true
}

func encodeUint64(v uint64) []byte {
	b := make([]byte, 8) // fresh: bbolt keeps a reference to values until commit
	binary.BigEndian.PutUint64(b, v)
	return b
}

func decodeUint64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
