// Package refmodel is the reference model of the index that the project's tests share: docs/reference.md §2.3
// replication semantics applied to plain maps, written independently of internal/index and
// internal/replication, so that one model is the oracle for every layer that holds the facts (the
// index's write API, the list endpoint, the real binary after a crash, a fleet fed over NATS), the
// way one conformance suite runs against every backend.
//
// Only tests import it. It imports no other package of this module, so the index's own
// (package index) tests can use it without an import cycle.
//
// A Model holds what the index holds: users by id and records by type and id, followers in the
// order the index keeps them (a record.upsert's order, duplicates and the owner dropped; a
// follower.add at the end). Apply takes one event of the replication log; an event that docs/reference.md calls
// invalid is an error and changes nothing.
package refmodel

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// The ops of the replication log (docs/reference.md §2.3).
const (
	OpUserUpsert     = "user.upsert"
	OpUserDelete     = "user.delete"
	OpRecordUpsert   = "record.upsert"
	OpRecordDelete   = "record.delete"
	OpFollowerAdd    = "follower.add"
	OpFollowerRemove = "follower.remove"
	OpOwnerSet       = "owner.set"
)

// The record types of docs/reference.md §1.
const (
	TypeContact     = "contact"
	TypeOpportunity = "opportunity"
)

// DefaultMaxFollowers is the maximum number of followers of a record besides its owner (docs/reference.md §1.1).
const DefaultMaxFollowers = 10

// Error is the kind of an error of Apply; test it with errors.Is.
type Error string

func (e Error) Error() string { return string(e) }

// The errors of Apply, wrapped with what is wrong.
const (
	// ErrInvalid: an unknown op, a missing or empty field, a bad type or role.
	ErrInvalid = Error("invalid event")
	// ErrRecordNotFound: follower.add, follower.remove or owner.set on a record that does not exist.
	ErrRecordNotFound = Error("record not found")
	// ErrTooManyFollowers: a record.upsert or follower.add that would leave more than the maximum.
	ErrTooManyFollowers = Error("too many followers")
)

// User is a user as the index stores it: the fields of docs/reference.md §1.1 and JSON names, defaults filled in. Its
// fields are those of index.User, in the same order, so that either converts to the other.
type User struct {
	ID                   string   `json:"id"`
	Role                 string   `json:"role"`
	LocationIDs          []string `json:"location_ids"`
	AssignedDataOnly     bool     `json:"assigned_data_only"`
	ContactsEnabled      bool     `json:"contacts_enabled"`
	OpportunitiesEnabled bool     `json:"opportunities_enabled"`
}

// Record is a record as the index stores it (and converts to and from index.Record).
type Record struct {
	Type       string   `json:"type"`
	ID         string   `json:"id"`
	LocationID string   `json:"location_id"`
	Owner      string   `json:"owner"`
	Followers  []string `json:"followers"`
	ContactID  string   `json:"contact_id,omitempty"`
}

// Key names a record.
type Key struct{ Type, ID string }

func (k Key) String() string { return k.Type + "/" + k.ID }

// compare orders keys by type, then id.
func (k Key) compare(o Key) int {
	if k.Type != o.Type {
		return strings.Compare(k.Type, o.Type)
	}
	return strings.Compare(k.ID, o.ID)
}

// Event is one entry of the replication log, in the wire shape of docs/reference.md §2.3: json.Marshal of an Event is what
// POST /v1/replication/events and the NATS stream take.
type Event struct {
	Seq    uint64  `json:"seq"`
	Op     string  `json:"op"`
	User   *User   `json:"user,omitempty"`
	Record *Record `json:"record,omitempty"`
	Type   string  `json:"type,omitempty"`
	ID     string  `json:"id,omitempty"`
	UserID *string `json:"user_id,omitempty"`
}

// Model is the index as plain maps. The zero value is not usable: use New.
type Model struct {
	Users   map[string]User
	Records map[Key]Record
	// MaxFollowers is the maximum number of followers besides the owner; 0 is DefaultMaxFollowers.
	MaxFollowers int
}

// New returns an empty model with the default maximum of followers (docs/reference.md §1.1).
func New() *Model {
	return &Model{Users: map[string]User{}, Records: map[Key]Record{}}
}

func (m *Model) max() int {
	if m.MaxFollowers > 0 {
		return m.MaxFollowers
	}
	return DefaultMaxFollowers
}

// Clone returns a deep copy: applying events to it leaves m as it is.
func (m *Model) Clone() *Model {
	c := &Model{Users: make(map[string]User, len(m.Users)), Records: make(map[Key]Record, len(m.Records)), MaxFollowers: m.MaxFollowers}
	for id, u := range m.Users {
		u.LocationIDs = slices.Clone(u.LocationIDs)
		c.Users[id] = u
	}
	for k, r := range m.Records {
		r.Followers = slices.Clone(r.Followers)
		c.Records[k] = r
	}
	return c
}

// Apply applies one event with docs/reference.md §2.3 semantics. An invalid event is an error (ErrInvalid,
// ErrRecordNotFound, ErrTooManyFollowers) and changes nothing. The event's slices are copied.
func (m *Model) Apply(e Event) error {
	switch e.Op {
	case OpUserUpsert:
		if e.User == nil {
			return fmt.Errorf("%w: %s without a user", ErrInvalid, e.Op)
		}
		u := *e.User
		if u.ID == "" || u.Role != "admin" && u.Role != "user" || u.LocationIDs == nil || slices.Contains(u.LocationIDs, "") {
			return fmt.Errorf("%w: user %+v", ErrInvalid, u)
		}
		u.LocationIDs = slices.Clone(u.LocationIDs)
		m.Users[u.ID] = u
	case OpUserDelete:
		if e.UserID == nil || *e.UserID == "" {
			return fmt.Errorf("%w: %s without a user_id", ErrInvalid, e.Op)
		}
		id := *e.UserID
		delete(m.Users, id)
		for k, r := range m.Records {
			if r.Owner != id && !slices.Contains(r.Followers, id) {
				continue
			}
			if r.Owner == id {
				r.Owner = ""
			}
			r.Followers = without(r.Followers, id)
			m.Records[k] = r
		}
	case OpRecordUpsert:
		if e.Record == nil {
			return fmt.Errorf("%w: %s without a record", ErrInvalid, e.Op)
		}
		r, err := m.normalise(*e.Record)
		if err != nil {
			return err
		}
		m.Records[Key{r.Type, r.ID}] = r
	case OpRecordDelete:
		if err := checkKey(e); err != nil {
			return err
		}
		delete(m.Records, Key{e.Type, e.ID})
	case OpFollowerAdd, OpFollowerRemove, OpOwnerSet:
		r, err := m.existing(e)
		if err != nil {
			return err
		}
		u := *e.UserID
		switch e.Op {
		case OpFollowerAdd:
			if u == r.Owner || slices.Contains(r.Followers, u) {
				return nil
			}
			if len(r.Followers) >= m.max() {
				return fmt.Errorf("%w: %s %s: %q would be follower %d", ErrTooManyFollowers, e.Op, Key{e.Type, e.ID}, u, len(r.Followers)+1)
			}
			r.Followers = append(slices.Clone(r.Followers), u)
		case OpFollowerRemove:
			r.Followers = without(r.Followers, u)
		case OpOwnerSet:
			r.Owner = u
			r.Followers = without(r.Followers, u)
		}
		m.Records[Key{r.Type, r.ID}] = r
	default:
		return fmt.Errorf("%w: unknown op %q", ErrInvalid, e.Op)
	}
	return nil
}

// normalise checks a record.upsert's record and drops the owner and duplicates from its
// followers, keeping their order.
func (m *Model) normalise(r Record) (Record, error) {
	if !validType(r.Type) || r.ID == "" || r.LocationID == "" || r.ContactID != "" && r.Type != TypeOpportunity {
		return r, fmt.Errorf("%w: record %+v", ErrInvalid, r)
	}
	fs := []string{}
	for _, f := range r.Followers {
		if f == "" {
			return r, fmt.Errorf("%w: record %s: an empty follower", ErrInvalid, Key{r.Type, r.ID})
		}
		if f != r.Owner && !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
	}
	if len(fs) > m.max() {
		return r, fmt.Errorf("%w: record %s has %d followers besides its owner", ErrTooManyFollowers, Key{r.Type, r.ID}, len(fs))
	}
	r.Followers = fs
	return r, nil
}

// existing checks a follower or owner event and returns a copy of its record.
func (m *Model) existing(e Event) (Record, error) {
	if err := checkKey(e); err != nil {
		return Record{}, err
	}
	if e.UserID == nil || *e.UserID == "" && e.Op != OpOwnerSet {
		return Record{}, fmt.Errorf("%w: %s without a user_id", ErrInvalid, e.Op)
	}
	r, ok := m.Records[Key{e.Type, e.ID}]
	if !ok {
		return r, fmt.Errorf("%w: %s on %s", ErrRecordNotFound, e.Op, Key{e.Type, e.ID})
	}
	r.Followers = slices.Clone(r.Followers)
	return r, nil
}

func checkKey(e Event) error {
	if !validType(e.Type) || e.ID == "" {
		return fmt.Errorf("%w: %s of %q %q", ErrInvalid, e.Op, e.Type, e.ID)
	}
	return nil
}

func validType(t string) bool { return t == TypeContact || t == TypeOpportunity }

// without returns a copy of fs without u (never nil).
func without(fs []string, u string) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		if f != u {
			out = append(out, f)
		}
	}
	return out
}

// UserIDs returns the users' ids, sorted.
func (m *Model) UserIDs() []string {
	return slices.Sorted(maps.Keys(m.Users))
}

// Keys returns the records' keys, sorted by type, then id.
func (m *Model) Keys() []Key {
	keys := make([]Key, 0, len(m.Records))
	for k := range m.Records {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, Key.compare)
	return keys
}

// SubjectRecords returns the sorted ids of the records of type typ in location loc that user
// owns or follows (never nil): what the reverse index answers, before any policy.
func (m *Model) SubjectRecords(user, typ, loc string) []string {
	ids := []string{}
	for k, r := range m.Records {
		if k.Type == typ && r.LocationID == loc && (r.Owner == user || slices.Contains(r.Followers, user)) {
			ids = append(ids, k.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// Snapshot renders the model as snapshot NDJSON (docs/reference.md §2.3) at seq: the header line, then the users
// and the records, sorted.
func (m *Model) Snapshot(seq uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\"seq\": %d}\n", seq)
	for _, id := range m.UserIDs() {
		writeLine(&b, struct {
			User User `json:"user"`
		}{m.Users[id]})
	}
	for _, k := range m.Keys() {
		writeLine(&b, struct {
			Record Record `json:"record"`
		}{m.Records[k]})
	}
	return b.String()
}

// Canonical renders the model as sorted lines, a record's followers sorted (their order is not
// part of the contract of docs/reference.md): two models hold the same facts when their Canonical strings are equal.
func (m *Model) Canonical() string {
	lines := make([]string, 0, len(m.Users)+len(m.Records))
	for _, u := range m.Users {
		lines = append(lines, "U"+mustMarshal(u))
	}
	for _, r := range m.Records {
		r.Followers = slices.Sorted(slices.Values(r.Followers))
		lines = append(lines, "R"+mustMarshal(r))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// ReadSnapshot reads snapshot NDJSON (an export of the server, or Snapshot's output) into a model
// as it is, without normalising: the header's seq and the users and records of the other lines.
// A line that is not a user or a record, an unknown field or an id given twice is an error.
func ReadSnapshot(r io.Reader) (uint64, *Model, error) {
	m := New()
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	var seq *uint64
	for n := 1; sc.Scan(); n++ {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if n == 1 {
			var hdr struct {
				Seq *uint64 `json:"seq"`
			}
			if err := dec.Decode(&hdr); err != nil || hdr.Seq == nil {
				return 0, nil, fmt.Errorf("line 1: not a {\"seq\": N} header: %q", sc.Text())
			}
			seq = hdr.Seq
			continue
		}
		var line struct {
			User   *User   `json:"user"`
			Record *Record `json:"record"`
		}
		if err := dec.Decode(&line); err != nil {
			return 0, nil, fmt.Errorf("line %d: %w", n, err)
		}
		switch {
		case line.User != nil && line.Record == nil:
			if _, dup := m.Users[line.User.ID]; dup {
				return 0, nil, fmt.Errorf("line %d: user %q again", n, line.User.ID)
			}
			m.Users[line.User.ID] = *line.User
		case line.Record != nil && line.User == nil:
			k := Key{line.Record.Type, line.Record.ID}
			if _, dup := m.Records[k]; dup {
				return 0, nil, fmt.Errorf("line %d: record %s again", n, k)
			}
			m.Records[k] = *line.Record
		default:
			return 0, nil, fmt.Errorf("line %d: neither a user nor a record: %q", n, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return 0, nil, err
	}
	if seq == nil {
		return 0, nil, fmt.Errorf("no header line")
	}
	return *seq, m, nil
}

func writeLine(b *strings.Builder, v any) {
	b.WriteString(mustMarshal(v))
	b.WriteByte('\n')
}

// mustMarshal marshals the model's own types, which cannot fail.
func mustMarshal(v any) string {
	j, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(j)
}
