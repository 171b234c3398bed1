package postgres

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// MaxFollowers is the most followers a record fact holds (docs/reference.md §1).
const MaxFollowers = 10

// maxIDBytes is the index's limit on ids.
const maxIDBytes = 512

// The kinds of crmauthz_connector_source_anomalies_total (docs/postgres.md "Bad rows").
const (
	AnomalyOwnerFollower      = "owner_among_followers"
	AnomalyDuplicateFollower  = "duplicate_follower"
	AnomalyTooManyFollowers   = "too_many_followers"
	AnomalyUnknownRole        = "unknown_role"
	AnomalyMissingField       = "missing_field"
	AnomalyInvalidID          = "invalid_id"
	AnomalyUnknownRecordType  = "unknown_record_type"
	AnomalyFollowerOfNoRecord = "follower_of_missing_record"
)

// anomalyFunc counts and logs one bad fact of the source, with its key.
type anomalyFunc func(kind, key, detail string)

func badID(id string) bool { return id == "" || len(id) > maxIDBytes || strings.IndexByte(id, 0) >= 0 }

// userFact computes the user fact of a row: nil when the row is absent or cannot be a user (an
// unknown role is written as deleted: fail closed).
func userFact(id string, r userRow, ok bool, bad anomalyFunc) *User {
	if !ok {
		return nil
	}
	if badID(id) {
		bad(AnomalyInvalidID, "user "+id, "the id is empty, over 512 bytes or holds a NUL byte")
		return nil
	}
	if r.Role == nil || (*r.Role != index.RoleAdmin && *r.Role != index.RoleUser) {
		role := "NULL"
		if r.Role != nil {
			role = *r.Role
		}
		bad(AnomalyUnknownRole, "user "+id, "role "+role+" is neither admin nor user: written as deleted")
		return nil
	}
	if r.NoLoc {
		bad(AnomalyMissingField, "user "+id, "location_ids is NULL: written as deleted")
		return nil
	}
	u := &User{ID: id, Role: *r.Role, LocationIDs: []string{}, ContactsEnabled: true, OpportunitiesEnabled: true}
	for _, l := range r.Locs {
		if l != "" && !slices.Contains(u.LocationIDs, l) {
			u.LocationIDs = append(u.LocationIDs, l)
		}
	}
	if r.ADO != nil {
		u.AssignedDataOnly = *r.ADO
	}
	if r.CE != nil {
		u.ContactsEnabled = *r.CE
	}
	if r.OE != nil {
		u.OpportunitiesEnabled = *r.OE
	}
	return u
}

// recordFact computes a record fact from its row and its follower rows (sorted, distinct): the
// owner and duplicates dropped, at most MaxFollowers (the smallest ids). nil when the row is
// absent or cannot be a record.
func recordFact(k recKey, r recRow, ok bool, followers []string, dup bool, bad anomalyFunc) *Record {
	if !ok {
		return nil
	}
	if badID(k.ID) {
		bad(AnomalyInvalidID, k.String(), "the id is empty, over 512 bytes or holds a NUL byte")
		return nil
	}
	if r.Loc == nil || *r.Loc == "" {
		bad(AnomalyMissingField, k.String(), "location_id is NULL or empty: written as deleted")
		return nil
	}
	rec := &Record{Type: k.Type, ID: k.ID, LocationID: *r.Loc, Followers: []string{}}
	if r.Owner != nil {
		rec.Owner = *r.Owner
	}
	if k.Type == index.TypeOpportunity && r.Contact != nil {
		rec.ContactID = *r.Contact
	}
	if dup {
		bad(AnomalyDuplicateFollower, k.String(), "a follower row is there more than once")
	}
	for _, f := range followers {
		switch {
		case f == rec.Owner:
			bad(AnomalyOwnerFollower, k.String(), "the owner "+f+" is also a follower: dropped")
		case badID(f):
			bad(AnomalyInvalidID, k.String(), "a follower's user id is invalid: dropped")
		default:
			rec.Followers = append(rec.Followers, f)
		}
	}
	if len(rec.Followers) > MaxFollowers {
		bad(AnomalyTooManyFollowers, k.String(), "more than 10 followers: the 10 smallest user ids are written")
		rec.Followers = rec.Followers[:MaxFollowers]
	}
	return rec
}

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func ptr[T any](v T) *T { return &v }

func userEvent(u *User) replication.Event {
	return replication.Event{Op: replication.OpUserUpsert, User: &replication.UserDoc{
		ID: ptr(u.ID), Role: ptr(u.Role), LocationIDs: ptr(slices.Clone(u.LocationIDs)),
		AssignedDataOnly: ptr(u.AssignedDataOnly), ContactsEnabled: ptr(u.ContactsEnabled),
		OpportunitiesEnabled: ptr(u.OpportunitiesEnabled)}}
}

func recordEvent(r *Record) replication.Event {
	d := &replication.RecordDoc{Type: ptr(r.Type), ID: ptr(r.ID), LocationID: ptr(r.LocationID), Owner: ptr(r.Owner),
		Followers: slices.Clone(r.Followers)}
	if r.ContactID != "" {
		d.ContactID = ptr(r.ContactID)
	}
	return replication.Event{Op: replication.OpRecordUpsert, Record: d}
}

// touched is what one source transaction changed in the copy.
type touched struct {
	users   map[string]bool
	records map[recKey]bool
}

func newTouched() *touched {
	return &touched{users: map[string]bool{}, records: map[recKey]bool{}}
}

// events recomputes the facts of what t names from the copy, compares them with what was last
// written, updates the written facts and returns the events, in a fixed order (user deletes,
// user upserts, records; each sorted): the same copy and changes always give the same events.
// A user written as deleted had the index drop it from every record (docs/reference.md §2), so
// the records that name it are written again.
func (s stx) events(t *touched, bad anomalyFunc) ([]replication.Event, error) {
	var dels, ups, recs []replication.Event
	force := map[recKey]bool{}
	for _, id := range sortedKeys(t.users) {
		row, ok, err := s.user(id)
		if err != nil {
			return nil, err
		}
		f := userFact(id, row, ok, bad)
		old, had, err := s.writtenUser(id)
		if err != nil {
			return nil, err
		}
		switch {
		case f == nil && had:
			dels = append(dels, replication.Event{Op: replication.OpUserDelete, UserID: ptr(id)})
			for _, k := range s.recordsNaming(id) {
				t.records[k], force[k] = true, true
			}
		case f != nil && (!had || !sameJSON(&old, f)):
			ups = append(ups, userEvent(f))
		default:
			continue
		}
		if err := s.setWrittenUser(id, f); err != nil {
			return nil, err
		}
	}
	keys := make([]recKey, 0, len(t.records))
	for k := range t.records {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b recKey) int {
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, k := range keys {
		row, ok, err := s.rec(k)
		if err != nil {
			return nil, err
		}
		fs, dup := s.followers(k)
		f := recordFact(k, row, ok, fs, dup, bad)
		old, had, err := s.writtenRec(k)
		if err != nil {
			return nil, err
		}
		switch {
		case f == nil && had:
			recs = append(recs, replication.Event{Op: replication.OpRecordDelete, Type: k.Type, ID: k.ID})
		case f != nil && (!had || force[k] || !sameJSON(&old, f)):
			recs = append(recs, recordEvent(f))
		default:
			continue
		}
		if err := s.setWrittenRec(k, f); err != nil {
			return nil, err
		}
	}
	return append(append(dels, ups...), recs...), nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
