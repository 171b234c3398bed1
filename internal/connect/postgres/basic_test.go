package postgres

import (
	"testing"
)

// TestSnapshotThenStream: rows present before the connector starts arrive as one snapshot (the
// owner among the followers dropped, a guest role as no user, a follower of a record not there
// waiting for it, each counted); later inserts, updates, deletes and a TRUNCATE of the followers
// follow.
func TestSnapshotThenStream(t *testing.T) {
	pg := crmDB(t)
	pg.Exec(t, "crm",
		`INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true), ('u-2','admin','{loc-1,loc-2}',false,true,false), ('u-3','guest','{loc-1}',false,true,true)`,
		`INSERT INTO crm_contacts VALUES ('c-1','loc-1','u-1'), ('c-2','loc-1',NULL)`,
		`INSERT INTO crm_opportunities VALUES ('o-1','loc-1','u-2','c-1')`,
		`INSERT INTO crm_record_followers VALUES ('contact','c-1','u-2'), ('contact','c-1','u-1'), ('opportunity','o-1','u-1'), ('contact','c-9','u-1')`,
	)
	rep := newReplica(t)
	conn := pg.Conn(t, "crm")
	run := startConnector(t, Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sink(t), StateDir: t.TempDir()})
	waitEqual(t, rep, conn, "after the snapshot")
	for _, kind := range []string{AnomalyOwnerFollower, AnomalyFollowerOfNoRecord, AnomalyUnknownRole} {
		if v := counter(t, run, "crmauthz_connector_source_anomalies_total", kind); v < 1 {
			t.Errorf("anomaly %s not counted", kind)
		}
	}

	pg.Exec(t, "crm",
		`UPDATE crm_contacts SET owner_id = 'u-2' WHERE id = 'c-1'`,
		`INSERT INTO crm_contacts VALUES ('c-9','loc-2','u-3')`,
		`DELETE FROM crm_users WHERE id = 'u-1'`,
		`UPDATE crm_users SET role = 'user' WHERE id = 'u-3'`,
		`UPDATE crm_record_followers SET user_id = 'u-3' WHERE record_id = 'o-1'`,
	)
	waitEqual(t, rep, conn, "after changes")
	pg.Exec(t, "crm", `TRUNCATE crm_record_followers`)
	waitEqual(t, rep, conn, "after TRUNCATE")
	pg.Exec(t, "crm", `TRUNCATE crm_users, crm_opportunities`)
	waitEqual(t, rep, conn, "after TRUNCATE of the users and opportunities")
	if m := rep.model(t); len(m.Users) != 0 || len(m.Records) != 3 {
		t.Fatalf("after TRUNCATE: %d users, %d records; want 0 and the 3 contacts", len(m.Users), len(m.Records))
	}
}
