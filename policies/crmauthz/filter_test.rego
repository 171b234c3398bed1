# Tests of the data filter's entry point (filter.rego): evaluated with a known
# record, view_filter must agree with the "view" decision on every user and
# record of the fixtures (those of list_test.rego), in the record's location
# and in others.
package crmauthz_filter_test

import data.crmauthz
import data.crmauthz_list_test as fixtures
import data.crmauthz_test as authz_fixtures

view_filter(u, r, loc) if {
	crmauthz.view_filter with input as {"subject": u, "action": "view", "type": r.type, "location_id": loc, "record": r}
		with crm.user as fixtures.mock_user
		with crm.record as fixtures.mock_record
}

allowed(u, r) if fixtures.view(u, r).allow == true

test_view_filter_agrees_with_view if {
	disagreements := {[u, r.type, r.id] |
		some u, _ in fixtures.users
		some _, recs in fixtures.records
		some _, r in recs
		not agrees(u, r)
	}
	count(disagreements) == 0
}

agrees(u, r) if {
	allowed(u, r)
	view_filter(u, r, r.location_id)
}

agrees(u, r) if {
	not allowed(u, r)
	not view_filter(u, r, r.location_id)
}

# A record asked for in another location than its own is never selected: the
# query adds "location = L", and the filter itself knows only L.
test_view_filter_in_another_location if {
	not view_filter("fol", fixtures.records.contact["c-2"], "loc-3")
	not view_filter("admin", fixtures.records.contact["c-1"], "loc-2")
}

test_view_filter_unknown_subject if not view_filter("ghost", fixtures.records.contact["c-3"], "loc-1")

test_view_filter_follows_the_switches if {
	view_filter("fol", fixtures.records.contact["c-1"], "loc-1")
	not view_filter("fol", fixtures.records.contact["c-1"], "loc-1") with data.crmauthz.follower_decision as {"allow": false, "reason": "x"}
}

# The same over the fixtures of authz_test.rego (records without owner or
# followers, full records, admins with a module off).
test_view_filter_agrees_with_view_on_authz_fixtures if {
	disagreements := {[u, r.type, r.id] |
		some u, _ in authz_fixtures.users
		some _, recs in authz_fixtures.records
		some _, r in recs
		not agrees_authz(u, r)
	}
	count(disagreements) == 0
}

authz_view_filter(u, r) if {
	crmauthz.view_filter with input as {"subject": u, "action": "view", "type": r.type, "location_id": r.location_id, "record": r}
		with crm.user as authz_fixtures.mock_user
		with crm.record as authz_fixtures.mock_record
}

agrees_authz(u, r) if {
	authz_fixtures.decide(u, "view", r.type, r.id).allow == true
	authz_view_filter(u, r)
}

agrees_authz(u, r) if {
	authz_fixtures.decide(u, "view", r.type, r.id).allow == false
	not authz_view_filter(u, r)
}
