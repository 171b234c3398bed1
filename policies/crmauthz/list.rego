# List filters: which records of one type in one location a subject may see
# in list and search views (GET /v1/subjects/{id}/records, docs/reference.md §2.5). They
# follow the rules of the decision for "view" (authz.rego), so a list never
# shows what a decision would deny, nor hides what it would allow.
#
# Entry point: data.crmauthz.list_scope -> "all" | "assigned" | "none".
# Input: {"subject": "u-2", "type": "contact", "location_id": "loc-1"}
#   "all":      every record of the type in the location (admins, and users
#               without the "Only Assigned Data" restriction): no filter
#   "assigned": the records the subject owns or follows there, which crmauthz
#               lists from the index's reverse index
#   "none":     nothing: the subject is not in the location, its module for
#               the type is off, or the type is unknown
# crmauthz answers an unknown subject with 404 before asking; here it would
# be "none".
package crmauthz

list_scope := "none" if {
	# rule 4: the subject does not belong to the location
	not list_subject_in_location
} else := "none" if {
	# the type is not one the policy knows
	not module_switch[input.type]
} else := "none" if {
	# rule 5: the subject's module for this type is switched off
	subject[module_switch[input.type]] == false
} else := "all" if {
	# rule 8: admins see everything in their locations
	subject.role == "admin"
} else := "all" if {
	# rule 9: users without the "Only Assigned Data" restriction
	not subject.assigned_data_only
} else := "assigned"

list_subject_in_location if input.location_id in subject.location_ids
