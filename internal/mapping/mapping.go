// Package mapping reads the table mapping shared by the PostgreSQL connector (docs/postgres.md) and
// the data filter (docs/filtering.md): which tables and columns of a CRM's own database hold its
// users, contacts, opportunities and followers. The file is YAML; every key may be omitted to keep
// the default schema's name (docs/reference.md, "Default schema").
//
// Names are identifiers, used as written: the filter quotes them in the SQL it emits and the
// connector compares them with the names PostgreSQL reports, so a name is spelt with the case the
// database stores (PostgreSQL folds unquoted names to lower case). Nothing but a plain identifier
// (letters, digits, underscore; a table may have one "schema." prefix) is accepted, so a mapping can
// never carry SQL text.
package mapping

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/crmauthz/crmauthz/internal/index"
)

// Users maps the users table.
type Users struct {
	Table                string `json:"table"`
	ID                   string `json:"id"`
	Role                 string `json:"role"`
	LocationIDs          string `json:"location_ids"`
	AssignedDataOnly     string `json:"assigned_data_only"`
	ContactsEnabled      string `json:"contacts_enabled"`
	OpportunitiesEnabled string `json:"opportunities_enabled"`
}

// Records maps a records table (contacts or opportunities). ContactID is for opportunities only.
type Records struct {
	Table      string `json:"table"`
	ID         string `json:"id"`
	LocationID string `json:"location_id"`
	Owner      string `json:"owner"`
	ContactID  string `json:"contact_id,omitempty"`
}

// Followers maps the followers join table: one row per (record type, record id, user id).
type Followers struct {
	Table      string `json:"table"`
	RecordType string `json:"record_type"`
	RecordID   string `json:"record_id"`
	UserID     string `json:"user_id"`
}

// Mapping is the whole file.
type Mapping struct {
	Users         Users     `json:"users"`
	Contacts      Records   `json:"contacts"`
	Opportunities Records   `json:"opportunities"`
	Followers     Followers `json:"followers"`
}

// Default is the default schema (docs/reference.md).
func Default() Mapping {
	return Mapping{
		Users: Users{Table: "crm_users", ID: "id", Role: "role", LocationIDs: "location_ids",
			AssignedDataOnly: "assigned_data_only", ContactsEnabled: "contacts_enabled",
			OpportunitiesEnabled: "opportunities_enabled"},
		Contacts:      Records{Table: "crm_contacts", ID: "id", LocationID: "location_id", Owner: "owner_id"},
		Opportunities: Records{Table: "crm_opportunities", ID: "id", LocationID: "location_id", Owner: "owner_id", ContactID: "contact_id"},
		Followers:     Followers{Table: "crm_record_followers", RecordType: "record_type", RecordID: "record_id", UserID: "user_id"},
	}
}

// maxFileBytes bounds a mapping file.
const maxFileBytes = 64 << 10

// Load reads and validates a mapping file; an empty path is the default schema.
func Load(path string) (Mapping, error) {
	if path == "" {
		return Default(), nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return Mapping{}, fmt.Errorf("mapping: %w", err)
	}
	if st.Size() > maxFileBytes {
		return Mapping{}, fmt.Errorf("mapping: %s is %d bytes, over the limit of %d", path, st.Size(), maxFileBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Mapping{}, fmt.Errorf("mapping: %w", err)
	}
	m, err := Parse(data)
	if err != nil {
		return Mapping{}, fmt.Errorf("mapping %s: %w", path, err)
	}
	return m, nil
}

// Parse decodes a mapping (YAML or JSON), strictly: an unknown key is an error. Omitted keys keep
// the default schema's names. The result is validated.
func Parse(data []byte) (Mapping, error) {
	m := Default()
	if len(strings.TrimSpace(string(data))) > 0 {
		if err := yaml.UnmarshalStrict(data, &m); err != nil {
			return Mapping{}, fmt.Errorf("invalid mapping: %w", err)
		}
	}
	// A key given as "" (or null) keeps the default too: an empty name could only be a mistake.
	fill(&m, Default())
	if err := m.Validate(); err != nil {
		return Mapping{}, err
	}
	return m, nil
}

func fill(m *Mapping, d Mapping) {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&m.Users.Table, d.Users.Table)
	def(&m.Users.ID, d.Users.ID)
	def(&m.Users.Role, d.Users.Role)
	def(&m.Users.LocationIDs, d.Users.LocationIDs)
	def(&m.Users.AssignedDataOnly, d.Users.AssignedDataOnly)
	def(&m.Users.ContactsEnabled, d.Users.ContactsEnabled)
	def(&m.Users.OpportunitiesEnabled, d.Users.OpportunitiesEnabled)
	def(&m.Contacts.Table, d.Contacts.Table)
	def(&m.Contacts.ID, d.Contacts.ID)
	def(&m.Contacts.LocationID, d.Contacts.LocationID)
	def(&m.Contacts.Owner, d.Contacts.Owner)
	def(&m.Opportunities.Table, d.Opportunities.Table)
	def(&m.Opportunities.ID, d.Opportunities.ID)
	def(&m.Opportunities.LocationID, d.Opportunities.LocationID)
	def(&m.Opportunities.Owner, d.Opportunities.Owner)
	def(&m.Opportunities.ContactID, d.Opportunities.ContactID)
	def(&m.Followers.Table, d.Followers.Table)
	def(&m.Followers.RecordType, d.Followers.RecordType)
	def(&m.Followers.RecordID, d.Followers.RecordID)
	def(&m.Followers.UserID, d.Followers.UserID)
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid mapping")

// Validate checks every name is an identifier (a table may be "schema.table"), that the four
// tables are distinct and that no table maps one column twice.
func (m Mapping) Validate() error {
	bad := func(key, msg string) error { return fmt.Errorf("%w: %s: %s", ErrInvalid, key, msg) }
	tables := map[string]string{}
	checkTable := func(key, t string) error {
		if err := checkTableName(t); err != nil {
			return bad(key+".table", err.Error())
		}
		if other, ok := tables[t]; ok {
			return bad(key+".table", fmt.Sprintf("%q is also the table of %s", t, other))
		}
		tables[t] = key
		return nil
	}
	checkCols := func(key string, cols [][2]string) error {
		seen := map[string]string{}
		for _, c := range cols {
			if c[1] == "" {
				continue
			}
			if !IsIdent(c[1]) {
				return bad(key+"."+c[0], fmt.Sprintf("%q is not a plain identifier (letters, digits, _; at most 63 bytes)", c[1]))
			}
			if other, ok := seen[c[1]]; ok {
				return bad(key+"."+c[0], fmt.Sprintf("column %q is also %s.%s", c[1], key, other))
			}
			seen[c[1]] = c[0]
		}
		return nil
	}
	u, c, o, f := m.Users, m.Contacts, m.Opportunities, m.Followers
	for _, err := range []error{
		checkTable("users", u.Table), checkTable("contacts", c.Table),
		checkTable("opportunities", o.Table), checkTable("followers", f.Table),
		checkCols("users", [][2]string{{"id", u.ID}, {"role", u.Role}, {"location_ids", u.LocationIDs},
			{"assigned_data_only", u.AssignedDataOnly}, {"contacts_enabled", u.ContactsEnabled},
			{"opportunities_enabled", u.OpportunitiesEnabled}}),
		checkCols("contacts", [][2]string{{"id", c.ID}, {"location_id", c.LocationID}, {"owner", c.Owner}}),
		checkCols("opportunities", [][2]string{{"id", o.ID}, {"location_id", o.LocationID}, {"owner", o.Owner}, {"contact_id", o.ContactID}}),
		checkCols("followers", [][2]string{{"record_type", f.RecordType}, {"record_id", f.RecordID}, {"user_id", f.UserID}}),
	} {
		if err != nil {
			return err
		}
	}
	if c.ContactID != "" {
		return bad("contacts.contact_id", "only opportunities belong to a contact")
	}
	return nil
}

// Records returns the records table of a record type ("contact" or "opportunity").
func (m Mapping) Records(recordType string) (Records, bool) {
	switch recordType {
	case index.TypeContact:
		return m.Contacts, true
	case index.TypeOpportunity:
		return m.Opportunities, true
	}
	return Records{}, false
}

// SplitTable splits "schema.table" into its parts; schema is "" when the name has none.
func SplitTable(t string) (schema, table string) {
	if i := strings.IndexByte(t, '.'); i >= 0 {
		return t[:i], t[i+1:]
	}
	return "", t
}

func checkTableName(t string) error {
	schema, table := SplitTable(t)
	if strings.Count(t, ".") > 1 || (strings.Contains(t, ".") && !IsIdent(schema)) || !IsIdent(table) {
		return fmt.Errorf("%q is not a table name (an identifier, optionally \"schema.\" before it)", t)
	}
	return nil
}

// IsIdent reports whether s is a plain SQL identifier: an ASCII letter or _, then letters, digits
// or _, at most 63 bytes (PostgreSQL's limit).
func IsIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '_', ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z':
		case ch >= '0' && ch <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
