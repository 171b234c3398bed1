# The data filter: which records of one type in one location a subject may
# view, as a condition on the record (GET /v1/subjects/{id}/filter,
# docs/filtering.md).
#
# Entry point: data.crmauthz.view_filter, true when input.subject may view
# input.record. Input: {"subject": "u-2", "action": "view", "type": "contact",
# "location_id": "loc-1", "record": {...}}. crmauthz evaluates it partially:
# the subject's facts are read from the index (crm.user), the record is
# unknown, and what is left of the rules is a condition on input.record's
# fields ("id", "location_id", "owner", "followers", "contact_id"), which
# crmauthz translates to SQL over the mapped tables.
#
# It is the decision of authz.rego for a "view" without a target of a record
# of input.type in input.location_id: the refusals that can apply to it
# (rules 2, 4 and 5; rule 3 is the row's existence, rules 6 and 7 need a
# target), then the grants of rules 8 to 11 in their order, each under the
# negation of those before it. It is written without `else` because OPA's
# partial evaluation cannot see through an else chain whose conditions depend
# on an unknown; the conditions themselves are the functions authz.rego's
# chain uses (in_location, module_off, is_admin, unrestricted, owns, follows,
# follower_decision), so a change of one changes both. A new branch of the
# chain that can decide a view must be added here too:
# test_view_filter_agrees_with_view in filter_test.rego compares the two on
# every fixture.
package crmauthz

# METADATA
# title: view_filter
# description: May input.subject view input.record (a record of input.type in input.location_id)?
# compile:
#   unknowns: [input.record]
view_filter if {
	view_filter_in_scope
	view_filter_grant
}

# Rules 2, 4 and 5: the subject exists, belongs to the location and has the
# module of the type on.
view_filter_in_scope if {
	in_location(subject, input.location_id)
	module_switch[input.type]
	not module_off(subject, input.type)
}

# Rules 8 to 11 for a view, in the order of the chain.
view_filter_grant if {
	# 8. admin
	is_admin(subject)
}

view_filter_grant if {
	# 9. unrestricted
	not is_admin(subject)
	unrestricted(subject)
}

view_filter_grant if {
	# 10. owner
	not is_admin(subject)
	not unrestricted(subject)
	owns(input.subject, input.record)
}

view_filter_grant if {
	# 11. follower, as far as follower_decision allows a view
	not is_admin(subject)
	not unrestricted(subject)
	not owns(input.subject, input.record)
	follows(input.subject, input.record)
	follower_decision.allow
}
