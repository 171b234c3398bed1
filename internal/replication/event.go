package replication

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/crmauthz/crmauthz/internal/index"
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

// Ops lists every op, for metrics and messages.
var Ops = []string{OpUserUpsert, OpUserDelete, OpRecordUpsert, OpRecordDelete, OpFollowerAdd, OpFollowerRemove, OpOwnerSet}

// Record types known to the index and the default policy (internal/index, keys.go).
var recordTypes = map[string]bool{index.TypeContact: true, index.TypeOpportunity: true}

// Event is one entry of the replication log as it arrives on the wire.
// Which fields an op takes is checked by Validate: a field that does not belong
// to the op is an error, so a misspelt or misplaced field never goes unnoticed.
type Event struct {
	Seq    uint64     `json:"seq"`
	Op     string     `json:"op"`
	User   *UserDoc   `json:"user,omitempty"`
	Record *RecordDoc `json:"record,omitempty"`
	Type   string     `json:"type,omitempty"`
	ID     string     `json:"id,omitempty"`
	UserID *string    `json:"user_id,omitempty"`
	// Tx names the source transaction the event belongs to (optional): the
	// events of one tx are applied together by a reader of a stream
	// (docs/connectors.md). Any op may carry it.
	Tx TxID `json:"tx,omitempty"`
}

// MaxTxLen is the longest tx id accepted.
const MaxTxLen = 256

// TxID is an event's "tx": absent (""), or a non-empty string of at most
// MaxTxLen bytes; "tx": "" on the wire is an error, not an absent tx.
type TxID string

// UnmarshalJSON rejects an empty or overlong tx id.
func (t *TxID) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("tx must be a string")
	}
	if s == "" {
		return fmt.Errorf("tx is empty (leave it out for an event outside a transaction)")
	}
	*t = TxID(s)
	return TxID(s).check()
}

func (t TxID) check() error {
	if len(t) > MaxTxLen {
		return fmt.Errorf("tx is longer than %d bytes", MaxTxLen)
	}
	return nil
}

// UserDoc is a user as it arrives in an event or a snapshot line.
// Pointers tell a missing field from a zero one.
type UserDoc struct {
	ID                   *string   `json:"id"`
	Role                 *string   `json:"role"`
	LocationIDs          *[]string `json:"location_ids"`
	AssignedDataOnly     *bool     `json:"assigned_data_only"`
	ContactsEnabled      *bool     `json:"contacts_enabled"`
	OpportunitiesEnabled *bool     `json:"opportunities_enabled"`
}

// RecordDoc is a record as it arrives in an event or a snapshot line.
type RecordDoc struct {
	Type       *string  `json:"type"`
	ID         *string  `json:"id"`
	LocationID *string  `json:"location_id"`
	Owner      *string  `json:"owner"`
	Followers  []string `json:"followers"`
	ContactID  *string  `json:"contact_id"`
}

// ToUser checks a UserDoc and returns the index's user with the defaults of docs/reference.md §1.1.
func (d *UserDoc) ToUser() (index.User, error) {
	if d == nil {
		return index.User{}, fmt.Errorf("user is missing")
	}
	if d.ID == nil || *d.ID == "" {
		return index.User{}, fmt.Errorf("user.id is missing or empty")
	}
	if d.Role == nil {
		return index.User{}, fmt.Errorf("user %q: role is missing", *d.ID)
	}
	if *d.Role != index.RoleAdmin && *d.Role != index.RoleUser {
		return index.User{}, fmt.Errorf("user %q: role must be %q or %q, not %q", *d.ID, index.RoleAdmin, index.RoleUser, *d.Role)
	}
	if d.LocationIDs == nil {
		return index.User{}, fmt.Errorf("user %q: location_ids is missing", *d.ID)
	}
	for i, l := range *d.LocationIDs {
		if l == "" {
			return index.User{}, fmt.Errorf("user %q: location_ids[%d] is empty", *d.ID, i)
		}
	}
	u := index.User{
		ID:                   *d.ID,
		Role:                 *d.Role,
		LocationIDs:          dedupe(*d.LocationIDs),
		ContactsEnabled:      true,
		OpportunitiesEnabled: true,
	}
	if d.AssignedDataOnly != nil {
		u.AssignedDataOnly = *d.AssignedDataOnly
	}
	if d.ContactsEnabled != nil {
		u.ContactsEnabled = *d.ContactsEnabled
	}
	if d.OpportunitiesEnabled != nil {
		u.OpportunitiesEnabled = *d.OpportunitiesEnabled
	}
	return u, nil
}

// ToRecord checks a RecordDoc and returns the index's record.
// Followers are normalised by the index (owner and duplicates dropped); the
// follower limit is checked there too, on the normalised set.
func (d *RecordDoc) ToRecord() (index.Record, error) {
	if d == nil {
		return index.Record{}, fmt.Errorf("record is missing")
	}
	if d.Type == nil {
		return index.Record{}, fmt.Errorf("record.type is missing")
	}
	if err := checkType(*d.Type); err != nil {
		return index.Record{}, err
	}
	if d.ID == nil || *d.ID == "" {
		return index.Record{}, fmt.Errorf("record.id is missing or empty")
	}
	if d.LocationID == nil || *d.LocationID == "" {
		return index.Record{}, fmt.Errorf("%s %q: location_id is missing or empty", *d.Type, *d.ID)
	}
	r := index.Record{Type: *d.Type, ID: *d.ID, LocationID: *d.LocationID, Followers: []string{}}
	if d.Owner != nil {
		r.Owner = *d.Owner
	}
	for i, f := range d.Followers {
		if f == "" {
			return index.Record{}, fmt.Errorf("%s %q: followers[%d] is empty", r.Type, r.ID, i)
		}
	}
	if d.Followers != nil {
		r.Followers = d.Followers
	}
	if d.ContactID != nil {
		if r.Type != index.TypeOpportunity {
			return index.Record{}, fmt.Errorf("%s %q: contact_id is only for opportunities", r.Type, r.ID)
		}
		r.ContactID = *d.ContactID
	}
	return r, nil
}

func checkType(t string) error {
	if !recordTypes[t] {
		return fmt.Errorf("type must be %q or %q, not %q", index.TypeContact, index.TypeOpportunity, t)
	}
	return nil
}

// Validate checks the shape of one event: a known op, its fields present, no
// field of another op. What depends on the index (the record exists, the
// follower limit) is checked when the event is applied.
func (e *Event) Validate() error {
	if e.Seq == 0 {
		return fmt.Errorf("seq is missing or 0 (sequence numbers start at 1)")
	}
	if err := e.Tx.check(); err != nil {
		return err
	}
	var allowed []string
	switch e.Op {
	case OpUserUpsert:
		allowed = []string{"user"}
		if _, err := e.User.ToUser(); err != nil {
			return err
		}
	case OpRecordUpsert:
		allowed = []string{"record"}
		if _, err := e.Record.ToRecord(); err != nil {
			return err
		}
	case OpFollowerAdd, OpFollowerRemove, OpOwnerSet:
		allowed = []string{"type", "id", "user_id"}
		if err := e.needTypeID(); err != nil {
			return err
		}
		if e.UserID == nil {
			return fmt.Errorf("%s: user_id is missing", e.Op)
		}
		if *e.UserID == "" && e.Op != OpOwnerSet {
			return fmt.Errorf("%s: user_id is empty", e.Op)
		}
	case OpRecordDelete:
		allowed = []string{"type", "id"}
		if err := e.needTypeID(); err != nil {
			return err
		}
	case OpUserDelete:
		allowed = []string{"user_id"}
		if e.UserID == nil || *e.UserID == "" {
			return fmt.Errorf("%s: user_id is missing or empty", e.Op)
		}
	case "":
		return fmt.Errorf("op is missing")
	default:
		return fmt.Errorf("unknown op %q (want one of %s)", e.Op, strings.Join(Ops, ", "))
	}
	for _, f := range e.presentFields() {
		if !contains(allowed, f) {
			return fmt.Errorf("%s does not take the field %q", e.Op, f)
		}
	}
	return nil
}

func (e *Event) needTypeID() error {
	if e.Type == "" {
		return fmt.Errorf("%s: type is missing", e.Op)
	}
	if err := checkType(e.Type); err != nil {
		return fmt.Errorf("%s: %w", e.Op, err)
	}
	if e.ID == "" {
		return fmt.Errorf("%s: id is missing", e.Op)
	}
	return nil
}

func (e *Event) presentFields() []string {
	var f []string
	if e.User != nil {
		f = append(f, "user")
	}
	if e.Record != nil {
		f = append(f, "record")
	}
	if e.Type != "" {
		f = append(f, "type")
	}
	if e.ID != "" {
		f = append(f, "id")
	}
	if e.UserID != nil {
		f = append(f, "user_id")
	}
	return f
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
