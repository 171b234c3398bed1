# Tests of the list filters (list.rego): every scope, and that the scope
# agrees with the "view" decision on every record of the fixtures.
package crmauthz_list_test

import data.crmauthz

users := {
	"admin": {"id": "admin", "role": "admin", "location_ids": ["loc-1"], "assigned_data_only": true},
	"admin-nocontacts": {"id": "admin-nocontacts", "role": "admin", "location_ids": ["loc-1"], "contacts_enabled": false},
	"free": {"id": "free", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": false},
	"default": {"id": "default", "role": "user", "location_ids": ["loc-1"]},
	"owner": {"id": "owner", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true},
	"fol": {"id": "fol", "role": "user", "location_ids": ["loc-1", "loc-2"], "assigned_data_only": true},
	"noopps": {"id": "noopps", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true, "opportunities_enabled": false},
	"nocontacts": {"id": "nocontacts", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": false, "contacts_enabled": false},
	"other": {"id": "other", "role": "user", "location_ids": ["loc-2"], "assigned_data_only": true},
	"nolocations": {"id": "nolocations", "role": "admin"},
}

records := {
	"contact": {
		"c-1": {"type": "contact", "id": "c-1", "location_id": "loc-1", "owner": "owner", "followers": ["fol", "noopps"]},
		"c-2": {"type": "contact", "id": "c-2", "location_id": "loc-2", "owner": "other", "followers": ["fol"]},
		"c-3": {"type": "contact", "id": "c-3", "location_id": "loc-1", "owner": "", "followers": []},
		"c-4": {"type": "contact", "id": "c-4", "location_id": "loc-1", "owner": "nocontacts", "followers": ["owner"]},
	},
	"opportunity": {
		"o-1": {"type": "opportunity", "id": "o-1", "location_id": "loc-1", "owner": "noopps", "followers": ["fol"], "contact_id": "c-1"},
		"o-2": {"type": "opportunity", "id": "o-2", "location_id": "loc-2", "owner": "fol", "followers": []},
	},
}

mock_user(id) := users[id]

mock_record(typ, id) := records[typ][id]

scope(subject, typ, loc) := s if {
	s := crmauthz.list_scope with input as {"subject": subject, "type": typ, "location_id": loc}
		with crm.user as mock_user
		with crm.record as mock_record
}

view(subject, r) := d if {
	d := crmauthz.decision with input as {"subject": subject, "action": "view", "resource": {"type": r.type, "id": r.id}}
		with crm.user as mock_user
		with crm.record as mock_record
}

test_admin_sees_all if scope("admin", "contact", "loc-1") == "all"

test_unrestricted_sees_all if {
	scope("free", "contact", "loc-1") == "all"
	scope("default", "opportunity", "loc-1") == "all"
}

test_restricted_sees_assigned if {
	scope("owner", "contact", "loc-1") == "assigned"
	scope("fol", "contact", "loc-2") == "assigned"
}

test_outside_the_location_sees_nothing if {
	scope("owner", "contact", "loc-2") == "none"
	scope("admin", "contact", "loc-2") == "none"
	scope("nolocations", "contact", "loc-1") == "none"
}

test_module_disabled_sees_nothing if {
	scope("noopps", "opportunity", "loc-1") == "none"
	scope("noopps", "contact", "loc-1") == "assigned"
	scope("nocontacts", "contact", "loc-1") == "none"
	scope("nocontacts", "opportunity", "loc-1") == "all"
}

test_module_disabled_beats_admin if scope("admin-nocontacts", "contact", "loc-1") == "none"

test_unknown_type_sees_nothing if scope("admin", "invoice", "loc-1") == "none"

test_unknown_subject_sees_nothing if scope("ghost", "contact", "loc-1") == "none"

# For every user and record: "all" means view is allowed, "none" that it is
# denied, "assigned" that it is allowed exactly when the user owns or follows
# the record (what the reverse index lists).
test_scope_agrees_with_view if {
	disagreements := {[u, r.type, r.id] |
		some u, _ in users
		some _, recs in records
		some _, r in recs
		not agrees(u, r)
	}
	count(disagreements) == 0
}

agrees(u, r) if {
	scope(u, r.type, r.location_id) == "all"
	view(u, r).allow == true
}

agrees(u, r) if {
	scope(u, r.type, r.location_id) == "none"
	view(u, r).allow == false
}

agrees(u, r) if {
	scope(u, r.type, r.location_id) == "assigned"
	view(u, r).allow == listed(u, r)
}

listed(u, r) if r.owner == u

listed(u, r) if u in r.followers

listed(u, r) := false if {
	r.owner != u
	not u in r.followers
}
