# The default crmauthz policy (policies/crmauthz/authz.rego) for a stock
# `opa run --server`, used by `make bench` (tools/crmauthz-bench) to compare the
# two on the same facts. The rules, their order and their reasons are the
# same; only the facts come from OPA's store instead of crmauthz's index:
#
#   crm.user(id)         -> data.users[id]
#   crm.record(type, id) -> data.records[type][id]
#
# data.users and data.records hold the same JSON documents as the index
# (defaults filled in). The switches come from policies/crmauthz/config.rego,
# loaded beside this file. A test in tools/crmauthz-bench checks that the rules
# below stay those of policies/crmauthz/authz.rego.
package crmauthz

import data.crmauthz.config

decision := {"allow": false, "reason": "unknown_action"} if {
	# 1. the action is not one of the known actions
	not known_action
} else := {"allow": false, "reason": "unknown_subject"} if {
	# 2. the subject is not in the index
	not subject
} else := {"allow": false, "reason": "record_not_found"} if {
	# 3. the record is not in the index
	not record
} else := {"allow": false, "reason": "cross_location"} if {
	# 4. the record lives in a location the subject does not belong to
	not subject_in_location
} else := {"allow": false, "reason": "module_disabled"} if {
	# 5. the subject's module for this record type is switched off
	# (a switch that is absent counts as enabled, the default)
	module_off(subject, record.type)
} else := {"allow": false, "reason": "unknown_target"} if {
	# 6a. a target is given (null counts as not given) and it is not in the index
	input.target != null
	not target
} else := {"allow": false, "reason": "target_cross_location"} if {
	# 6b. a target is given and it does not belong to the record's location
	input.target != null
	not target_in_location
} else := {"allow": false, "reason": "follower_limit_reached"} if {
	# 7. adding a new follower (not a follower yet, not the owner) to a record
	# that already has the maximum: denied for everyone, admins too
	input.action == "add_follower"
	input.target != null
	not target_is_follower
	input.target != object.get(record, "owner", "")
	count(record.followers) >= config.max_followers
} else := {"allow": true, "reason": "admin"} if {
	# 8. admins may do everything in their locations
	is_admin(subject)
} else := {"allow": true, "reason": "unrestricted"} if {
	# 9. users without the "Only Assigned Data" restriction (absent: unrestricted)
	unrestricted(subject)
} else := {"allow": true, "reason": "owner"} if {
	# 10. the owner (assigned user) may do everything with its record
	owns(input.subject, record)
} else := follower_decision if {
	# 11. followers: see follower_decision
	follows(input.subject, record)
} else := {"allow": false, "reason": "not_assigned"}

# allow is the boolean of the decision, for clients that only want a yes or no.
allow := decision.allow

# The subject, the record and the target from the index; undefined when absent.
subject := data.users[input.subject]

record := data.records[input.resource.type][input.resource.id]

target := data.users[input.target]

# The user switch that enables the module of each record type.
module_switch := {"contact": "contacts_enabled", "opportunity": "opportunities_enabled"}

known_action if input.action in {"view", "edit", "delete", "change_owner", "add_follower", "remove_follower"}

subject_in_location if in_location(subject, record.location_id)

# The conditions of the rules, as functions of the user and the record. The
# data filter (GET /v1/subjects/{id}/filter, docs/filtering.md) is derived
# from the chain above by partial evaluation, with the record unknown: keep
# the record's conditions to what it can translate (==, !=, in on the
# record's fields, a follower test).

# Rule 4: the user belongs to the location.
in_location(user, location_id) if location_id in user.location_ids

# Rule 5: the user's module for the record type is switched off.
module_off(user, record_type) if user[module_switch[record_type]] == false

# Rule 8: the user is an admin.
is_admin(user) if user.role == "admin"

# Rule 9: the user has no "Only Assigned Data" restriction.
unrestricted(user) if not user.assigned_data_only

# Rule 10: the user owns the record; owner "" is an unassigned record.
owns(user_id, rec) if {
	rec.owner == user_id
	user_id != ""
}

# Rule 11: the user follows the record.
follows(user_id, rec) if user_id in rec.followers

target_in_location if record.location_id in target.location_ids

target_is_follower if input.target in record.followers

# What a follower of the record may do.
follower_decision := {"allow": true, "reason": "follower"} if {
	input.action in {"view", "edit"}
} else := {"allow": true, "reason": "follower_unfollow"} if {
	# a follower may always unfollow
	input.action == "remove_follower"
	input.target == input.subject
} else := {"allow": false, "reason": "followers_cannot_change_owner"} if {
	input.action == "change_owner"
} else := {"allow": true, "reason": "follower"} if {
	input.action == "delete"
	config.followers_can_delete
} else := {"allow": true, "reason": "follower"} if {
	input.action in {"add_follower", "remove_follower"}
	config.followers_can_manage_followers
} else := {"allow": false, "reason": "follower_not_permitted"}
