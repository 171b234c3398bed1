# Route mapping of the gateway endpoints (forward auth for nginx, Caddy and
# Traefik; Envoy's ext_authz over HTTP and gRPC): which action on which record
# an HTTP request of the CRM's API is, and the decision of that request.
#
# Entry point: data.crmauthz.http_decision (http.rego), which is `decision` here.
# Input, built by crmauthz from the original request:
#   {"subject": "u-2",                            # from the trusted header or the JWT
#    "method": "PUT",
#    "path": "/api/v2/contacts/c-1",               # as sent (percent-encoded), no query
#    "segments": ["api", "v2", "contacts", "c-1"], # its segments, percent-decoded
#    "body": {"assignedto": "u-7"}}                # the request's parameters, keys folded
#
# "body" holds the request's parameters (not for GET and HEAD): the JSON body
# when the gateway sends one (Envoy), merged with the query's parameters, as
# Rails and Laravel merge them ("?assignedTo=u-7" is the field assignedTo).
# Every object key arrives folded to one form (lower case for ASCII letters):
# "assignedTo", "ASSIGNEDTO" and "aſſignedTo" (U+017F) are all "assignedto",
# because Go's encoding/json and other case-insensitive decoders fill the same
# field from each of them. crmauthz denies a body that gives one field twice
# (ambiguous_body) before this policy runs, so each folded key is there at most
# once: compare keys with plain equality (see docs/policies.md).
#
# Routes, below config.path_prefix (default none; e.g. "/api/v2"):
#   GET, HEAD       /{collection}/{id}            view
#   PUT, PATCH      /{collection}/{id}            edit; change_owner when the body sets
#                                                  assignedTo (or owner) to someone else
#   DELETE          /{collection}/{id}            delete
#   POST            /{collection}/{id}/followers  add_follower, a check per user of the
#   DELETE          /{collection}/{id}/followers  remove_follower  body's "followers" list
#   PUT, PATCH, POST /{collection}/{id}/owner     change_owner (for gateways that cannot
#                                                  see bodies; target from the body if any)
# with collection "contacts" (type contact) or "opportunities" (type opportunity).
# Anything else is not a route: denied as unmapped_route.
#
# A body that is not a JSON object, names the new owner twice with different
# values (assignedTo and owner), or holds a "followers" that is not a list of
# user ids is never guessed at: denied as invalid_body.
package crmauthz.routes

import data.crmauthz
import data.crmauthz.config

# ---------------------------------------------------------------------------
# The table

# The path segment of each record type's collection.
collections := {"contacts": "contact", "opportunities": "opportunity"}

# Methods on /{collection}/{id}. PUT and PATCH are edits unless the body
# changes the owner (see record_route).
record_methods := {"GET": "view", "HEAD": "view", "PUT": "edit", "PATCH": "edit", "DELETE": "delete"}

# Methods on /{collection}/{id}/followers.
follower_methods := {"POST": "add_follower", "DELETE": "remove_follower"}

# The targets of a route without any: one constant, where a literal [] in
# an object would be an array made per request.
no_targets := []

# The followers of a record that has none (object.get's default: one
# constant, where a literal [] would be an array made per request).
no_followers := []

# Methods on /{collection}/{id}/owner.
owner_methods := {"PUT", "PATCH", "POST"}

# The most users one "followers" list may name.
max_targets := 100

# ---------------------------------------------------------------------------
# Mapping

# The segments of config.path_prefix.
prefix := [s | some s in split(config.path_prefix, "/"); s != ""]

# The segments after the prefix; undefined when the path is not under it.
rest := input.segments if {
	config.path_prefix == ""
} else := input.segments if {
	trim(config.path_prefix, "/") == ""
} else := array.slice(input.segments, count(prefix), count(input.segments)) if {
	array.slice(input.segments, 0, count(prefix)) == prefix
}

# route is {"action", "resource": {"type", "id"}, "targets": [...]} or
# {"invalid": message}; undefined when the request is not a route. One else
# chain, so that the shapes are tried in turn and the first that fits decides.
route := record_route(record_methods[input.method], route_resource) if {
	count(rest) == 2
} else := followers_route(follower_methods[input.method], route_resource) if {
	count(rest) == 3
	rest[2] == "followers"
} else := owner_route(route_resource) if {
	count(rest) == 3
	rest[2] == "owner"
	input.method in owner_methods
}

# The record a route names: {"type", "id"} of its first two segments;
# undefined when the first is not a collection. (A rule of its own, not a
# literal in each shape above: one object literal, which the interpreter
# makes as a record, where three would share a local and be ast objects.)
route_resource := {"type": collections[rest[0]], "id": rest[1]}

# Without a body, or for other actions than edit, the route is what the
# table says; the body only matters to an edit.
record_route(action, resource) := {"action": action, "resource": resource, "targets": no_targets} if {
	not body_matters(action)
} else := {"invalid": problem} if {
	problem := owner_problem
} else := {"action": "change_owner", "resource": resource, "targets": owner_targets} if {
	new_owner != current_owner(resource)
} else := {"action": action, "resource": resource, "targets": no_targets}

body_matters(action) if {
	action == "edit"
	has_body
}

followers_route(action, resource) := {"invalid": followers_problem} if {
	followers_problem
} else := {"action": action, "resource": resource, "targets": follower_targets}

owner_route(resource) := {"invalid": owner_problem} if {
	owner_problem
} else := {"action": "change_owner", "resource": resource, "targets": owner_targets}

# The record's owner now ("" when unassigned); undefined when the record is
# not in the index (the decision then denies record_not_found).
current_owner(resource) := object.get(crm.record(resource.type, resource.id), "owner", "")

# ---------------------------------------------------------------------------
# The body

has_body if _ = input.body

# The values of the body's keys that set the owner, folded (see above):
# assignedto and owner; undefined when the body gives none. Two rules, not
# the set of the values: a set is built and counted on every change of
# owner, these are two lookups.
body_assignedto := input.body.assignedto if is_object(input.body)

body_owner := input.body.owner if is_object(input.body)

sets_assignedto if _ = body_assignedto

sets_owner if _ = body_owner

# The value the body's owner keys give: one of them, or both alike.
# Undefined when they give none, or two different values (owner_conflict).
owner_value := v if {
	v := body_assignedto
	not sets_owner
} else := v if {
	v := body_owner
	not sets_assignedto
} else := v if {
	v := body_assignedto
	v == body_owner
}

owner_conflict if body_assignedto != body_owner

# The owner the body sets; "" (or null) unassigns. Undefined when it sets none.
new_owner := v if {
	v := owner_value
	is_string(v)
} else := "" if {
	owner_value == null
}

# change_owner names the new owner as its target; unassigning has no target.
owner_targets := [new_owner] if {
	new_owner != ""
} else := no_targets

owner_problem := "the body is not a JSON object" if {
	has_body
	not is_object(input.body)
} else := "the body sets the owner (assignedTo, owner) more than once, to different values" if {
	owner_conflict
} else := "the new owner (assignedTo, owner) is neither a string nor null" if {
	v := owner_value
	not is_string(v)
	v != null
}

# The body's "followers" value; undefined when the body gives none.
follower_list := input.body.followers if is_object(input.body)

# The users of the body's "followers" list, sorted, without duplicates. A
# list of none or one user is that already: it is taken as it is, without
# building the set and sorting it (the common case, a user at a time).
follower_targets := l if {
	l := follower_list
	is_array(l)
	count(l) < 2
} else := sort({t | some t in follower_list})

followers_problem := "the body is not a JSON object" if {
	has_body
	not is_object(input.body)
} else := "followers is not a list" if {
	l := follower_list
	not is_array(l)
} else := sprintf("followers names more than %d users", [max_targets]) if {
	count(follower_list) > max_targets
} else := "followers holds something other than user ids (non-empty strings)" if {
	some t in follower_list
	not user_id(t)
}

user_id(t) if {
	is_string(t)
	t != ""
}

# ---------------------------------------------------------------------------
# The decision of a request

# decision: {"allow", "reason", "action"?, "resource"?, "targets"?, "message"?}.
# Every target must be allowed: the first denial decides. A list that would
# take the record over the follower maximum is denied like a single 11th
# follower (follower_limit_reached), once every target is allowed on its own
# (list_decision). A request with one target (a new owner, a list of one
# follower: most of them) is decided by target_decision, which answers as
# list_decision does without building the lists.
decision := {"allow": false, "reason": "unmapped_route"} if {
	not route
} else := {"allow": false, "reason": "invalid_body", "message": route.invalid} if {
	route.invalid
} else := {"allow": d.allow, "reason": d.reason, "action": r.action, "resource": r.resource, "targets": no_targets} if {
	# the common case: one check without a target
	r := route
	r.targets == []
	d := crmauthz.decision with input as {"subject": input.subject, "action": r.action, "resource": r.resource}
} else := d if {
	count(route.targets) == 1
	d := target_decision
} else := d if {
	d := list_decision
}

# The decision of a request with targets: the first denial, else the
# follower limit, else the first target's decision.
list_decision := object.union(denials[0], about) if {
	count(denials) > 0
} else := object.union({"allow": false, "reason": "follower_limit_reached"}, about) if {
	too_many_new_followers
} else := object.union(results[0], about)

# list_decision for the one target: its check (target_check) denies, or
# the follower limit (target_over_limit), or its check allows.
target_decision := object.union({"allow": false, "reason": "follower_limit_reached"}, about) if {
	target_check.allow
	target_over_limit
} else := object.union(target_check, about)

target_check := d if {
	d := crmauthz.decision with input as {"subject": input.subject, "action": route.action, "resource": route.resource, "target": route.targets[0]}
}

# What the request is, added to its decision (for logs and metrics).
about := {"action": route.action, "resource": route.resource, "targets": route.targets}

# The decisions of the targets, in order, and those that deny.
results := [d |
	some t in route.targets
	d := crmauthz.decision with input as {"subject": input.subject, "action": route.action, "resource": route.resource, "target": t}
]

denials := [d | some d in results; not d.allow]

too_many_new_followers if {
	route.action == "add_follower"
	rec := crm.record(route.resource.type, route.resource.id)
	followers := object.get(rec, "followers", [])
	added := {t | some t in route.targets; not t in followers; t != object.get(rec, "owner", "")}
	count(followers) + count(added) > config.max_followers
}

# too_many_new_followers for the one target, without building the set of
# the new followers: the target is new unless it follows the record or owns
# it.
target_over_limit if {
	route.action == "add_follower"
	rec := crm.record(route.resource.type, route.resource.id)
	followers := object.get(rec, "followers", no_followers)
	count(followers) + new_follower(route.targets[0], rec, followers) > config.max_followers
}

# new_follower is 1 when t would be a new follower of rec, else 0.
new_follower(t, rec, followers) := 0 if {
	t in followers
} else := 0 if {
	t == object.get(rec, "owner", "")
} else := 1
