package highlevel

import (
	"encoding/json"
	"slices"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// The kinds of objects the connector follows.
const (
	kindUser        = "user"
	kindContact     = index.TypeContact
	kindOpportunity = index.TypeOpportunity
)

// maxFollowers is the default policy's limit of followers besides the owner (docs/policies.md).
const maxFollowers = 10

// The anomaly kinds of crmauthz_connector_source_anomalies_total (docs/highlevel.md).
const (
	anomalyOwnerFollower     = "owner_among_followers"
	anomalyDuplicateFollower = "duplicate_follower"
	anomalyTooManyFollowers  = "too_many_followers"
	anomalyUnknownRole       = "unknown_role"
	anomalyInvalidObject     = "invalid_object"
	// anomalyCompanyChanged: a location's companyId changed since it was learned ("The company").
	anomalyCompanyChanged = "company_changed"
)

// userFact is a user as the connector writes it (the replication API's user, defaults filled in).
type userFact struct {
	ID                   string   `json:"id"`
	Role                 string   `json:"role"`
	LocationIDs          []string `json:"location_ids"`
	AssignedDataOnly     bool     `json:"assigned_data_only"`
	ContactsEnabled      bool     `json:"contacts_enabled"`
	OpportunitiesEnabled bool     `json:"opportunities_enabled"`
}

// recordFact is a record as the connector writes it: followers sorted, without the owner or
// duplicates, at most maxFollowers.
type recordFact struct {
	Type       string   `json:"type"`
	ID         string   `json:"id"`
	LocationID string   `json:"location_id"`
	Owner      string   `json:"owner"`
	Followers  []string `json:"followers"`
	ContactID  string   `json:"contact_id,omitempty"`
}

// anomalyFunc is told of each bad fact of the source, with its key.
type anomalyFunc func(kind, objKind, id, detail string)

// hlUser is a user of HighLevel's API v2 (GET /users/search, GET /users/{userId}).
type hlUser struct {
	ID      string `json:"id"`
	Deleted bool   `json:"deleted"`
	Roles   *struct {
		Role        string   `json:"role"`
		LocationIDs []string `json:"locationIds"`
	} `json:"roles"`
	Permissions *struct {
		AssignedDataOnly     *bool `json:"assignedDataOnly"`
		ContactsEnabled      *bool `json:"contactsEnabled"`
		OpportunitiesEnabled *bool `json:"opportunitiesEnabled"`
	} `json:"permissions"`
}

// hlRecord is a contact (POST /contacts/search) or an opportunity (GET /opportunities/search).
type hlRecord struct {
	ID          string          `json:"id"`
	LocationID  string          `json:"locationId"`
	AssignedTo  string          `json:"assignedTo"`
	Followers   []string        `json:"followers"`
	ContactID   string          `json:"contactId"`
	SearchAfter json.RawMessage `json:"searchAfter"`
}

// userFromAPI maps a HighLevel user to the fact to write; ok false means the user is to be
// deleted (the API marks it deleted, or its role is unknown: fail closed).
func userFromAPI(u hlUser, report anomalyFunc) (userFact, bool) {
	if u.Deleted {
		return userFact{}, false
	}
	if u.Roles == nil || (u.Roles.Role != index.RoleAdmin && u.Roles.Role != index.RoleUser) {
		role := ""
		if u.Roles != nil {
			role = u.Roles.Role
		}
		report(anomalyUnknownRole, kindUser, u.ID, "role "+quote(role)+" is neither admin nor user: written as deleted")
		return userFact{}, false
	}
	f := userFact{ID: u.ID, Role: u.Roles.Role, LocationIDs: []string{}, ContactsEnabled: true, OpportunitiesEnabled: true}
	for _, l := range u.Roles.LocationIDs {
		if l != "" && !slices.Contains(f.LocationIDs, l) {
			f.LocationIDs = append(f.LocationIDs, l)
		}
	}
	slices.Sort(f.LocationIDs)
	if p := u.Permissions; p != nil {
		if p.AssignedDataOnly != nil {
			f.AssignedDataOnly = *p.AssignedDataOnly
		}
		if p.ContactsEnabled != nil {
			f.ContactsEnabled = *p.ContactsEnabled
		}
		if p.OpportunitiesEnabled != nil {
			f.OpportunitiesEnabled = *p.OpportunitiesEnabled
		}
	}
	return f, true
}

// recordFromAPI maps a contact or opportunity to the fact to write, normalising its followers
// (docs/highlevel.md, "Bad facts"): the owner and duplicates are dropped, and of more than
// maxFollowers the smallest ids are kept (the rest take effect when there is room, since the
// fact is recomputed from the source each time).
func recordFromAPI(kind string, r hlRecord, report anomalyFunc) recordFact {
	f := recordFact{Type: kind, ID: r.ID, LocationID: r.LocationID, Owner: r.AssignedTo, Followers: []string{}}
	if kind == kindOpportunity {
		f.ContactID = r.ContactID
	}
	seen := map[string]bool{}
	for _, u := range r.Followers {
		switch {
		case u == "":
			report(anomalyInvalidObject, kind, r.ID, "an empty follower id: dropped")
		case u == r.AssignedTo:
			report(anomalyOwnerFollower, kind, r.ID, "owner "+quote(u)+" among the followers: dropped")
		case seen[u]:
			report(anomalyDuplicateFollower, kind, r.ID, "follower "+quote(u)+" listed twice")
		default:
			seen[u] = true
			f.Followers = append(f.Followers, u)
		}
	}
	slices.Sort(f.Followers)
	if len(f.Followers) > maxFollowers {
		report(anomalyTooManyFollowers, kind, r.ID, "more than 10 followers: the 10 smallest ids are kept")
		f.Followers = f.Followers[:maxFollowers]
	}
	return f
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

func ptr[T any](v T) *T { return &v }

// upsertEvent is the replication event writing a fact.
func upsertEvent(kind string, fact json.RawMessage) (replication.Event, error) {
	if kind == kindUser {
		var u userFact
		if err := json.Unmarshal(fact, &u); err != nil {
			return replication.Event{}, err
		}
		return replication.Event{Op: replication.OpUserUpsert, User: &replication.UserDoc{
			ID: ptr(u.ID), Role: ptr(u.Role), LocationIDs: ptr(u.LocationIDs), AssignedDataOnly: ptr(u.AssignedDataOnly),
			ContactsEnabled: ptr(u.ContactsEnabled), OpportunitiesEnabled: ptr(u.OpportunitiesEnabled)}}, nil
	}
	var r recordFact
	if err := json.Unmarshal(fact, &r); err != nil {
		return replication.Event{}, err
	}
	doc := &replication.RecordDoc{Type: ptr(r.Type), ID: ptr(r.ID), LocationID: ptr(r.LocationID), Owner: ptr(r.Owner), Followers: r.Followers}
	if r.ContactID != "" {
		doc.ContactID = ptr(r.ContactID)
	}
	return replication.Event{Op: replication.OpRecordUpsert, Record: doc}, nil
}

// deleteEvent is the replication event deleting an object.
func deleteEvent(kind, id string) replication.Event {
	if kind == kindUser {
		return replication.Event{Op: replication.OpUserDelete, UserID: ptr(id)}
	}
	return replication.Event{Op: replication.OpRecordDelete, Type: kind, ID: id}
}
