package filter_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// hostile are ids that must stay parameters: quotes, comments, backslashes,
// placeholders of every dialect, unicode.
var hostile = []string{
	`u' OR 1=1 --`, `u'); DROP TABLE crm_contacts; --`, `back\slash\`, `"dq"`, "`bt`", `[br]`,
	`$1`, `?`, `@p1`, `ünï-çødé 🦊`, `%_%`, `x' OR 'a'='a`,
}

var locations = []string{"loc-1", "loc-2", `loc-'3`}

// twins are user ids that differ from others only where a collation of
// MySQL's (case, accents, trailing spaces, characters beyond the BMP) sees no
// difference, and Rego does: each is a subject and owns records, so a filter
// that compares with the column's collation selects the wrong records. They
// never follow a record (a followers table of such a collation could not
// hold both twins).
var twins = []string{`U' OR 1=1 --`, `back\slash\ `, `ünï-çødé 😀`, `uni-code 🦊`, `X' OR 'A'='A`, "U-1", "u-1 "}

// world makes a random world: refmodel's generator, then owners removed ("",
// an unassigned record), contacts of opportunities, switched-off modules,
// users with several locations, the hostile ids as users and records, and the
// twins as users and owners.
func world(tb testing.TB, seed uint64, users int) *refmodel.Model {
	tb.Helper()
	m := refmodel.New()
	for _, e := range refmodel.Events(tb, refmodel.GenConfig{Seed: seed, Users: users, RecordIDs: 250, Locations: locations}, users*12) {
		if err := m.Apply(e); err != nil {
			tb.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	ids := m.UserIDs()
	for _, h := range append(slices.Clone(hostile), twins...) {
		u := refmodel.User{ID: h, Role: "user", LocationIDs: slices.Clone(locations), AssignedDataOnly: true,
			ContactsEnabled: true, OpportunitiesEnabled: true}
		m.Users[h] = u
		if slices.Contains(hostile, h) {
			ids = append(ids, h)
		}
	}
	for _, id := range m.UserIDs() {
		u := m.Users[id]
		if rng.IntN(10) == 0 {
			u.ContactsEnabled = false
		}
		if rng.IntN(4) == 0 {
			u.LocationIDs = append(u.LocationIDs, locations[rng.IntN(len(locations))])
			u.LocationIDs = slices.Compact(slices.Sorted(slices.Values(u.LocationIDs)))
		}
		m.Users[id] = u
	}
	for _, k := range m.Keys() {
		r := m.Records[k]
		switch rng.IntN(8) {
		case 0:
			r.Owner = ""
		case 1:
			r.Owner = hostile[rng.IntN(len(hostile))]
		case 2:
			r.Owner = twins[rng.IntN(len(twins))]
		}
		if rng.IntN(6) == 0 {
			h := hostile[rng.IntN(len(hostile))]
			if h != r.Owner && !slices.Contains(r.Followers, h) && len(r.Followers) < refmodel.DefaultMaxFollowers {
				r.Followers = append(r.Followers, h)
			}
		}
		if k.Type == refmodel.TypeOpportunity && rng.IntN(2) == 0 {
			r.ContactID = fmt.Sprintf("c-%d", rng.IntN(250))
		}
		m.Records[k] = r
	}
	for i, h := range hostile {
		typ := []string{refmodel.TypeContact, refmodel.TypeOpportunity}[i%2]
		k := refmodel.Key{Type: typ, ID: h}
		m.Records[k] = refmodel.Record{Type: typ, ID: h, LocationID: locations[i%len(locations)],
			Owner: hostile[(i+1)%len(hostile)], Followers: []string{hostile[(i+2)%len(hostile)], ids[i%len(ids)]}}
	}
	return m
}

// loadIndex writes the world into a new index.
func loadIndex(tb testing.TB, m *refmodel.Model) *index.Index {
	tb.Helper()
	ix, err := index.Open(index.Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ix.Close() })
	err = ix.ReplaceAll(1, func(l *index.Loader) error {
		for _, id := range m.UserIDs() {
			if err := l.PutUser(index.User(m.Users[id])); err != nil {
				return err
			}
		}
		for _, k := range m.Keys() {
			r := m.Records[k]
			r.Followers = slices.DeleteFunc(slices.Clone(r.Followers), func(f string) bool { return f == r.Owner })
			if err := l.PutRecord(index.Record(r)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return ix
}

// style is how a database spells the statements loadDB and selected write:
// placeholders, quoted names, the type of an id column.
type style struct {
	ph        func(i int) string // the i-th (1-based) parameter
	quoteChar string
	idType    string
}

var (
	pgStyle   = style{dollar, `"`, "text"}
	liteStyle = style{question, `"`, "text"}
	// MySQL quotes names with backticks (unless ANSI_QUOTES) and indexes a
	// text column only by a prefix: ids are varchar (191 characters of
	// utf8mb4 fit the limit of a key of three columns).
	myStyle = style{question, "`", "varchar(191)"}
)

func dollar(i int) string { return fmt.Sprintf("$%d", i) }
func question(int) string { return "?" }

// quote quotes a name, a "schema.table" part by part.
func (st style) quote(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = st.quoteChar + p + st.quoteChar
	}
	return strings.Join(parts, ".")
}

// loadDB creates the records and followers tables of mp (quoted, as the
// filter quotes them) and inserts the world. An unassigned record's owner is
// NULL for every other one and "" for the rest; an absent contact_id is NULL.
func loadDB(tb testing.TB, db *sql.DB, mp mapping.Mapping, st style, m *refmodel.Model) {
	tb.Helper()
	ctx := context.Background()
	q, ph, text := st.quote, st.ph, st.idType
	exec := func(stmt string, args ...any) {
		tb.Helper()
		if _, err := db.ExecContext(ctx, stmt, args...); err != nil {
			tb.Fatalf("%s: %v", stmt, err)
		}
	}
	for _, r := range []mapping.Records{mp.Contacts, mp.Opportunities} {
		cols := fmt.Sprintf("%[1]s %[4]s primary key, %[2]s %[4]s not null, %[3]s %[4]s", q(r.ID), q(r.LocationID), q(r.Owner), text)
		if r.ContactID != "" {
			cols += ", " + q(r.ContactID) + " " + text
		}
		exec(fmt.Sprintf("DROP TABLE IF EXISTS %s", q(r.Table)))
		exec(fmt.Sprintf("CREATE TABLE %s (%s)", q(r.Table), cols))
		exec(fmt.Sprintf("CREATE INDEX %s ON %s (%s, %s)", q(strings.ReplaceAll(r.Table, ".", "_")+"_lo"), q(r.Table), q(r.LocationID), q(r.Owner)))
	}
	f := mp.Followers
	exec(fmt.Sprintf("DROP TABLE IF EXISTS %s", q(f.Table)))
	exec(fmt.Sprintf("CREATE TABLE %[1]s (%[2]s %[5]s not null, %[3]s %[5]s not null, %[4]s %[5]s not null, primary key (%[2]s, %[3]s, %[4]s))",
		q(f.Table), q(f.RecordType), q(f.RecordID), q(f.UserID), text))
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, k := range m.Keys() {
		r := m.Records[k]
		rm, _ := mp.Records(k.Type)
		var owner, contact any = r.Owner, nil
		if r.Owner == "" && n%2 == 0 {
			owner = nil
		}
		n++
		if r.ContactID != "" {
			contact = r.ContactID
		}
		cols, vals := []string{q(rm.ID), q(rm.LocationID), q(rm.Owner)}, []any{r.ID, r.LocationID, owner}
		if rm.ContactID != "" {
			cols, vals = append(cols, q(rm.ContactID)), append(vals, contact)
		}
		marks := make([]string, len(vals))
		for i := range marks {
			marks[i] = ph(i + 1)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", q(rm.Table), strings.Join(cols, ", "), strings.Join(marks, ", ")), vals...); err != nil {
			tb.Fatal(err)
		}
		for _, u := range r.Followers {
			if u == r.Owner {
				continue
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (%s, %s, %s) VALUES (%s, %s, %s)", q(f.Table), q(f.RecordType), q(f.RecordID), q(f.UserID), ph(1), ph(2), ph(3)), k.Type, r.ID, u); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
}
