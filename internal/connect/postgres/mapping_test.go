package postgres

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// TestMappingUUIDAndFullIdentity: a mapping renames a schema-qualified database with uuid ids; a
// followers table without a key but REPLICA IDENTITY FULL works, duplicates included; an update
// that leaves a TOASTed location_ids unchanged keeps it (from the connector's copy).
func TestMappingUUIDAndFullIdentity(t *testing.T) {
	pg := pgtestStart(t)
	pg.Exec(t, "postgres", "CREATE DATABASE app")
	pg.Exec(t, "app",
		`CREATE SCHEMA crm`,
		`CREATE TABLE crm.staff(uid uuid primary key, kind text not null, locs text[] not null, restricted bool, c_on bool, o_on bool)`,
		`CREATE TABLE crm.people(pid uuid primary key, loc text not null, assignee uuid)`,
		`CREATE TABLE crm.deals(did uuid primary key, loc text not null, assignee uuid, person uuid)`,
		`CREATE TABLE crm.watchers(kind text not null, rid uuid not null, uid uuid not null)`,
		`ALTER TABLE crm.watchers REPLICA IDENTITY FULL`,
	)
	m, err := mapping.Parse([]byte(`
users: {table: crm.staff, id: uid, role: kind, location_ids: locs, assigned_data_only: restricted, contacts_enabled: c_on, opportunities_enabled: o_on}
contacts: {table: crm.people, id: pid, location_id: loc, owner: assignee}
opportunities: {table: crm.deals, id: did, location_id: loc, owner: assignee, contact_id: person}
followers: {table: crm.watchers, record_type: kind, record_id: rid, user_id: uid}
`))
	if err != nil {
		t.Fatal(err)
	}
	const (
		u1 = "00000000-0000-0000-0000-000000000001"
		u2 = "00000000-0000-0000-0000-000000000002"
		c1 = "00000000-0000-0000-0000-0000000000c1"
		o1 = "00000000-0000-0000-0000-0000000000d1"
	)
	// location_ids big enough to be TOASTed (random, so it does not compress away).
	var locs []string
	for range 400 {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		locs = append(locs, "loc-"+hex.EncodeToString(b))
	}
	pg.Exec(t, "app",
		fmt.Sprintf(`INSERT INTO crm.staff VALUES ('%s','user','{%s}',true,NULL,NULL), ('%s','user','{loc-1}',NULL,true,false)`, u1, strings.Join(locs, ","), u2),
		fmt.Sprintf(`INSERT INTO crm.people VALUES ('%s','loc-1','%s')`, c1, u1),
		fmt.Sprintf(`INSERT INTO crm.watchers VALUES ('contact','%s','%s'), ('contact','%s','%s')`, c1, u2, c1, u2))
	rep := newReplica(t)
	run := startConnector(t, Config{DSN: pg.DSN("postgres", "app"), Mapping: m, Sink: rep.sink(t), StateDir: t.TempDir()})
	waitFor(t, "the snapshot", func() bool { ok, _ := run.c.Ready(); return ok })
	check := func(what string, want func(m *refmodel.Model) bool) {
		t.Helper()
		waitFor(t, what, func() bool { return want(rep.model(t)) })
	}
	check("the first copy", func(m *refmodel.Model) bool {
		r := m.Records[refmodel.Key{Type: "contact", ID: c1}]
		u := m.Users[u1]
		return r.Owner == u1 && slices.Equal(r.Followers, []string{u2}) && len(u.LocationIDs) == 400 && u.AssignedDataOnly && u.ContactsEnabled
	})
	if v := counter(t, run, "crmauthz_connector_source_anomalies_total", AnomalyDuplicateFollower); v < 1 {
		t.Errorf("the duplicate follower row was not counted")
	}
	pg.Exec(t, "app",
		fmt.Sprintf(`UPDATE crm.staff SET kind = 'admin' WHERE uid = '%s'`, u1), // locs unchanged: TOASTed
		fmt.Sprintf(`INSERT INTO crm.deals VALUES ('%s','loc-1','%s','%s')`, o1, u2, c1),
		`DELETE FROM crm.watchers WHERE ctid = (SELECT min(ctid) FROM crm.watchers)`, // one of the two duplicates
	)
	check("the changes", func(m *refmodel.Model) bool {
		u := m.Users[u1]
		r := m.Records[refmodel.Key{Type: "contact", ID: c1}]
		o := m.Records[refmodel.Key{Type: "opportunity", ID: o1}]
		return u.Role == "admin" && slices.Equal(u.LocationIDs, locs) && slices.Equal(r.Followers, []string{u2}) &&
			o.Owner == u2 && o.ContactID == c1
	})
	pg.Exec(t, "app", `DELETE FROM crm.watchers`)
	check("the last duplicate removed", func(m *refmodel.Model) bool {
		return len(m.Records[refmodel.Key{Type: "contact", ID: c1}].Followers) == 0
	})
}
