# Tests of the route mapping (routes.rego) and of data.crmauthz.http_decision:
# every route of the table, the path prefix, bodies that change the owner or
# list followers, and bodies that are never guessed at.
package crmauthz.routes_test

import data.crmauthz
import data.crmauthz.routes

# ---------------------------------------------------------------------------
# Fixtures

users := {
	"u-owner": {"id": "u-owner", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true},
	"u-fol": {"id": "u-fol", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true},
	"u-fol2": {"id": "u-fol2", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true},
	"u-none": {"id": "u-none", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true},
	"u-far": {"id": "u-far", "role": "user", "location_ids": ["loc-2"], "assigned_data_only": true},
	"u-admin": {"id": "u-admin", "role": "admin", "location_ids": ["loc-1"]},
}

eight := ["f-1", "f-2", "f-3", "f-4", "f-5", "f-6", "f-7", "u-fol"]

records := {
	"contact": {
		"c-1": {"type": "contact", "id": "c-1", "location_id": "loc-1", "owner": "u-owner", "followers": ["u-fol", "u-fol2"]},
		"c 2/x": {"type": "contact", "id": "c 2/x", "location_id": "loc-1", "owner": "u-owner", "followers": []},
		"c-free": {"type": "contact", "id": "c-free", "location_id": "loc-1", "owner": "", "followers": ["u-fol"]},
		"c-eight": {"type": "contact", "id": "c-eight", "location_id": "loc-1", "owner": "u-owner", "followers": eight},
	},
	"opportunity": {"o-1": {"type": "opportunity", "id": "o-1", "location_id": "loc-1", "owner": "u-owner", "followers": ["u-fol"]}},
}

mock_user(id) := users[id]

mock_record(typ, id) := records[typ][id]

segs(path) := [s | some s in split(path, "/"); s != ""]

req(subject, method, path) := {"subject": subject, "method": method, "path": path, "segments": segs(path)}

req_body(subject, method, path, body) := object.union(req(subject, method, path), {"body": body})

# http evaluates the entry point for one request.
http(r) := d if {
	d := crmauthz.http_decision with input as r
		with crm.user as mock_user
		with crm.record as mock_record
}

route_of(q) := r if {
	r := routes.route with input as q
		with crm.user as mock_user
		with crm.record as mock_record
}

contact(id) := {"type": "contact", "id": id}

# ---------------------------------------------------------------------------
# The table

test_routes_of_the_table if {
	cases := [
		["GET", "/contacts/c-1", "view", contact("c-1")],
		["HEAD", "/contacts/c-1", "view", contact("c-1")],
		["PUT", "/contacts/c-1", "edit", contact("c-1")],
		["PATCH", "/contacts/c-1", "edit", contact("c-1")],
		["DELETE", "/contacts/c-1", "delete", contact("c-1")],
		["POST", "/contacts/c-1/followers", "add_follower", contact("c-1")],
		["DELETE", "/contacts/c-1/followers", "remove_follower", contact("c-1")],
		["PUT", "/contacts/c-1/owner", "change_owner", contact("c-1")],
		["PATCH", "/contacts/c-1/owner", "change_owner", contact("c-1")],
		["POST", "/contacts/c-1/owner", "change_owner", contact("c-1")],
		["GET", "/opportunities/o-1", "view", {"type": "opportunity", "id": "o-1"}],
		["PATCH", "/opportunities/o-1", "edit", {"type": "opportunity", "id": "o-1"}],
		["DELETE", "/opportunities/o-1", "delete", {"type": "opportunity", "id": "o-1"}],
		["POST", "/opportunities/o-1/followers", "add_follower", {"type": "opportunity", "id": "o-1"}],
		["DELETE", "/opportunities/o-1/followers", "remove_follower", {"type": "opportunity", "id": "o-1"}],
	]
	every c in cases {
		route_of(req("u-owner", c[0], c[1])) == {"action": c[2], "resource": c[3], "targets": []}
	}
}

test_not_routes if {
	cases := [
		["POST", "/contacts/c-1"], # creating is not a record action
		["OPTIONS", "/contacts/c-1"],
		["get", "/contacts/c-1"], # methods are case-sensitive
		["GET", "/contacts"], # lists are filtered by the app (GET /v1/subjects/{id}/records)
		["GET", "/contacts/c-1/followers"],
		["PUT", "/contacts/c-1/followers"],
		["GET", "/contacts/c-1/owner"],
		["DELETE", "/contacts/c-1/owner"],
		["GET", "/contacts/c-1/notes"],
		["GET", "/contacts/c-1/followers/u-1"],
		["GET", "/users/u-1"],
		["GET", "/Contacts/c-1"], # collections are case-sensitive
		["GET", "/"],
		["GET", "/api/v2/contacts/c-1"], # no prefix configured
	]
	every c in cases {
		not route_of(req("u-owner", c[0], c[1]))
		http(req("u-owner", c[0], c[1])) == {"allow": false, "reason": "unmapped_route"}
	}
}

test_path_prefix if {
	q := req("u-owner", "GET", "/api/v2/contacts/c-1")
	d := http(q) with data.crmauthz.config.path_prefix as "/api/v2"
	d.allow
	d.reason == "owner"
	d.action == "view"

	# a trailing or missing slash in the setting does not matter
	http(q).reason == "owner" with data.crmauthz.config.path_prefix as "api/v2/"

	# without the prefix, or under another one, it is not a route
	http(req("u-owner", "GET", "/contacts/c-1")).reason == "unmapped_route" with data.crmauthz.config.path_prefix as "/api/v2"
	http(req("u-owner", "GET", "/api/v1/contacts/c-1")).reason == "unmapped_route" with data.crmauthz.config.path_prefix as "/api/v2"
	http(req("u-owner", "GET", "/api")).reason == "unmapped_route" with data.crmauthz.config.path_prefix as "/api/v2"
}

test_decoded_segments_name_the_record if {
	# crmauthz passes the segments percent-decoded: /contacts/c%202%2Fx is record "c 2/x"
	q := {"subject": "u-owner", "method": "GET", "path": "/contacts/c%202%2Fx", "segments": ["contacts", "c 2/x"]}
	http(q) == {"allow": true, "reason": "owner", "action": "view", "resource": contact("c 2/x"), "targets": []}
}

# ---------------------------------------------------------------------------
# Decisions without a body (nginx, Caddy, Traefik)

test_decisions_without_body if {
	cases := [
		["u-owner", "DELETE", "/contacts/c-1", true, "owner"],
		["u-fol", "GET", "/contacts/c-1", true, "follower"],
		["u-fol", "PUT", "/contacts/c-1", true, "follower"],
		["u-fol", "DELETE", "/contacts/c-1", false, "follower_not_permitted"],
		["u-fol", "POST", "/contacts/c-1/followers", false, "follower_not_permitted"],
		["u-fol", "PUT", "/contacts/c-1/owner", false, "followers_cannot_change_owner"],
		["u-owner", "PUT", "/contacts/c-1/owner", true, "owner"],
		["u-none", "GET", "/contacts/c-1", false, "not_assigned"],
		["u-admin", "DELETE", "/opportunities/o-1", true, "admin"],
		["u-far", "GET", "/contacts/c-1", false, "cross_location"],
		["u-ghost", "GET", "/contacts/c-1", false, "unknown_subject"],
		["u-owner", "GET", "/contacts/c-404", false, "record_not_found"],
		["u-owner", "PUT", "/contacts/c-404", false, "record_not_found"],
	]
	every c in cases {
		d := http(req(c[0], c[1], c[2]))
		d.allow == c[3]
		d.reason == c[4]
	}
}

# ---------------------------------------------------------------------------
# Bodies that change the owner (Envoy with_request_body, or the query). Keys
# arrive folded (crmauthz folds them, and denies a body that gives one field
# twice, before the policy runs): "assignedTo" in a request is "assignedto" here.

test_body_changes_the_owner if {
	put := req_body("u-fol", "PUT", "/contacts/c-1", {"firstname": "Ann", "assignedto": "u-fol"})
	route_of(put) == {"action": "change_owner", "resource": contact("c-1"), "targets": ["u-fol"]}
	http(put) == {"allow": false, "reason": "followers_cannot_change_owner", "action": "change_owner", "resource": contact("c-1"), "targets": ["u-fol"]}

	# the owner may hand the record over
	http(req_body("u-owner", "PATCH", "/contacts/c-1", {"assignedto": "u-fol"})).reason == "owner"

	# "owner" is the same as assignedTo, also both with one value
	http(req_body("u-fol", "PATCH", "/contacts/c-1", {"owner": "u-none"})).reason == "followers_cannot_change_owner"
	http(req_body("u-fol", "PATCH", "/contacts/c-1", {"owner": "u-none", "assignedto": "u-none"})).reason == "followers_cannot_change_owner"

	# the new owner is a target: it must exist and be in the record's location
	http(req_body("u-owner", "PUT", "/contacts/c-1", {"assignedto": "u-far"})).reason == "target_cross_location"
	http(req_body("u-owner", "PUT", "/contacts/c-1", {"assignedto": "u-ghost"})).reason == "unknown_target"
}

test_body_that_keeps_the_owner_is_an_edit if {
	http(req_body("u-fol", "PUT", "/contacts/c-1", {"assignedto": "u-owner", "firstname": "Ann"})).action == "edit"
	http(req_body("u-fol", "PUT", "/contacts/c-1", {"assignedto": "u-owner"})).reason == "follower"
	http(req_body("u-fol", "PUT", "/contacts/c-1", {"firstname": "Ann"})).reason == "follower"
	http(req_body("u-fol", "PUT", "/contacts/c-1", {})).reason == "follower"

	# unassigned stays unassigned
	http(req_body("u-fol", "PUT", "/contacts/c-free", {"assignedto": ""})).reason == "follower"
	http(req_body("u-fol", "PUT", "/contacts/c-free", {"assignedto": null})).reason == "follower"
}

test_unassigning_changes_the_owner if {
	# "" or null unassigns: change_owner without a target
	d := http(req_body("u-fol", "PUT", "/contacts/c-1", {"assignedto": null}))
	d.reason == "followers_cannot_change_owner"
	d.targets == []
	http(req_body("u-owner", "PUT", "/contacts/c-1", {"assignedto": ""})) == {"allow": true, "reason": "owner", "action": "change_owner", "resource": contact("c-1"), "targets": []}
}

test_owner_route_with_body if {
	http(req_body("u-owner", "PUT", "/contacts/c-1/owner", {"assignedto": "u-fol"})).targets == ["u-fol"]
	http(req_body("u-owner", "PUT", "/contacts/c-1/owner", {"assignedto": "u-far"})).reason == "target_cross_location"
	http(req_body("u-owner", "PUT", "/contacts/c-1/owner", [1])).reason == "invalid_body"
}

test_bodies_never_guessed_at if {
	cases := [
		["PUT", "/contacts/c-1", "not an object"],
		["PUT", "/contacts/c-1", ["assignedto", "u-fol"]],
		["PUT", "/contacts/c-1", null],
		["PUT", "/contacts/c-1", {"assignedto": "u-fol", "owner": "u-none"}],
		["PUT", "/contacts/c-1", {"assignedto": 7}],
		["PUT", "/contacts/c-1", {"assignedto": {"id": "u-fol"}}],
		["PUT", "/contacts/c-1", {"assignedto": ["u-fol"]}],
		["PUT", "/contacts/c-1/owner", {"owner": false}],
		["POST", "/contacts/c-1/followers", "u-fol"],
		["POST", "/contacts/c-1/followers", {"followers": "u-fol"}],
		["POST", "/contacts/c-1/followers", {"followers": ["u-fol", 3]}],
		["POST", "/contacts/c-1/followers", {"followers": [""]}],
		["POST", "/contacts/c-1/followers", {"followers": [null]}],
		["DELETE", "/contacts/c-1/followers", {"followers": {"0": "u-fol"}}],
		["POST", "/contacts/c-1/followers", {"followers": [x | some i in numbers.range(1, 101); x := sprintf("u-%d", [i])]}],
	]
	every c in cases {
		d := http(req_body("u-owner", c[0], c[1], c[2]))
		d.allow == false
		d.reason == "invalid_body"
		is_string(d.message)
	}
}

test_bodies_of_other_routes_are_ignored if {
	# GET and DELETE of a record do not read the body
	http(req_body("u-fol", "GET", "/contacts/c-1", "x")).reason == "follower"
	http(req_body("u-fol", "GET", "/contacts/c-1", {"assignedto": "u-fol"})).action == "view"
	http(req_body("u-owner", "DELETE", "/contacts/c-1", [1])).reason == "owner"
}

# ---------------------------------------------------------------------------
# Follower lists: every target must be allowed

test_follower_lists if {
	# the owner adds two users of the location
	add := http(req_body("u-owner", "POST", "/contacts/c-1/followers", {"followers": ["u-none", "u-admin"]}))
	add == {"allow": true, "reason": "owner", "action": "add_follower", "resource": contact("c-1"), "targets": ["u-admin", "u-none"]}

	# one target in another location denies the whole request
	far := http(req_body("u-owner", "POST", "/contacts/c-1/followers", {"followers": ["u-none", "u-far"]}))
	far.allow == false
	far.reason == "target_cross_location"

	# an unknown user among them, too
	http(req_body("u-owner", "POST", "/contacts/c-1/followers", {"followers": ["u-ghost", "u-none"]})).reason == "unknown_target"

	# duplicates count once
	http(req_body("u-owner", "POST", "/contacts/c-1/followers", {"followers": ["u-none", "u-none"]})).targets == ["u-none"]

	# an empty list, or no list, is one check without a target
	http(req_body("u-owner", "POST", "/contacts/c-1/followers", {"followers": []})).reason == "owner"
	http(req_body("u-owner", "POST", "/contacts/c-1/followers", {})).targets == []
}

test_follower_may_unfollow_but_not_remove_others if {
	http(req_body("u-fol", "DELETE", "/contacts/c-1/followers", {"followers": ["u-fol"]})).reason == "follower_unfollow"
	http(req_body("u-fol", "DELETE", "/contacts/c-1/followers", {"followers": ["u-fol2"]})).reason == "follower_not_permitted"

	# unfollowing oneself together with removing another: denied
	both := http(req_body("u-fol", "DELETE", "/contacts/c-1/followers", {"followers": ["u-fol", "u-fol2"]}))
	both.allow == false
	both.reason == "follower_not_permitted"

	# without a body a follower cannot unfollow (no target to check)
	http(req("u-fol", "DELETE", "/contacts/c-1/followers")).reason == "follower_not_permitted"
}

test_follower_list_over_the_maximum if {
	# c-eight has 8 followers: two new ones fit, three do not, for admins too
	http(req_body("u-owner", "POST", "/contacts/c-eight/followers", {"followers": ["u-none", "u-fol2"]})).allow
	three := {"followers": ["u-none", "u-fol2", "u-admin"]}
	http(req_body("u-owner", "POST", "/contacts/c-eight/followers", three)).reason == "follower_limit_reached"
	http(req_body("u-admin", "POST", "/contacts/c-eight/followers", three)).reason == "follower_limit_reached"

	# present followers and the owner are not new
	http(req_body("u-owner", "POST", "/contacts/c-eight/followers", {"followers": ["u-none", "u-fol2", "u-fol", "u-owner"]})).allow

	# removing is never limited
	http(req_body("u-owner", "DELETE", "/contacts/c-eight/followers", three)).allow
}

# ---------------------------------------------------------------------------
# One target: target_decision answers as list_decision

# decide_as(r, allow) is [decision, list_decision] of r with every target's
# own check answering allow, and a follower maximum of 8: with an allow, the
# follower limit is routes.rego's own (too_many_new_followers).
decide_as(r, allow) := [one, list] if {
	check := {"allow": allow, "reason": "checked"}
	one := routes.decision with input as r
		with crm.user as mock_user
		with crm.record as mock_record
		with crmauthz.decision as check
		with data.crmauthz.config.max_followers as 8
	list := routes.list_decision with input as r
		with crm.user as mock_user
		with crm.record as mock_record
		with crmauthz.decision as check
		with data.crmauthz.config.max_followers as 8
}

test_one_target_as_a_list if {
	reqs := [
		req_body("u-owner", "POST", "/contacts/c-eight/followers", {"followers": ["u-none"]}),
		req_body("u-owner", "POST", "/contacts/c-eight/followers", {"followers": ["u-fol"]}),
		req_body("u-owner", "POST", "/contacts/c-eight/followers", {"followers": ["u-owner"]}),
		req_body("u-owner", "DELETE", "/contacts/c-eight/followers", {"followers": ["u-none"]}),
		req_body("u-owner", "POST", "/contacts/c-1/followers", {"followers": ["u-none"]}),
		req_body("u-owner", "PUT", "/contacts/c-1/owner", {"owner": "u-fol"}),
		req_body("u-owner", "PATCH", "/contacts/c-1", {"assignedto": "u-fol"}),
	]
	every r in reqs {
		[one, list] := decide_as(r, true)
		one == list
		[one_denied, list_denied] := decide_as(r, false)
		one_denied == list_denied
	}

	# a new follower over the maximum, allowed by its own check
	[limit, _] := decide_as(reqs[0], true)
	limit == {"allow": false, "reason": "follower_limit_reached", "action": "add_follower", "resource": contact("c-eight"), "targets": ["u-none"]}

	# present followers and the owner are not new; removing is never limited
	[present, _] := decide_as(reqs[1], true)
	present.reason == "checked"
	[owner, _] := decide_as(reqs[2], true)
	owner.reason == "checked"
	[removal, _] := decide_as(reqs[3], true)
	removal.reason == "checked"
}

# A record already over a maximum since lowered: a present follower or the
# owner named again is over it too, as in a list (count(followers) alone).
test_one_target_over_a_lowered_maximum if {
	check := {"allow": true, "reason": "checked"}
	every t in ["u-fol", "u-owner", "u-none"] {
		r := req_body("u-owner", "POST", "/contacts/c-eight/followers", {"followers": [t]})
		one := routes.decision with input as r
			with crm.user as mock_user
			with crm.record as mock_record
			with crmauthz.decision as check
			with data.crmauthz.config.max_followers as 7
		list := routes.list_decision with input as r
			with crm.user as mock_user
			with crm.record as mock_record
			with crmauthz.decision as check
			with data.crmauthz.config.max_followers as 7
		one == list
		one.reason == "follower_limit_reached"
	}
}

# A list of none or one user is taken as it is: the same as sorting its set.
test_follower_targets_sorted_without_duplicates if {
	every l in [[], ["u-b"], ["u-b", "u-a"], ["u-a", "u-a"], ["u-b", "u-a", "u-b"]] {
		targets := routes.follower_targets with input as req_body("u-owner", "POST", "/contacts/c-1/followers", {"followers": l})
		targets == sort({t | some t in l})
	}
	routes.follower_targets with input as req_body("u-owner", "POST", "/contacts/c-1/followers", {}) == []
	routes.follower_targets with input as req("u-owner", "POST", "/contacts/c-1/followers") == []
}
