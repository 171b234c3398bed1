# Tests of the default policy: every rule and reason of docs/reference.md §1, their order,
# every action for owners and followers, the switches and the follower maximum.
# The facts are mocked: with crm.user as mock_user with crm.record as mock_record.
package crmauthz_test

import data.crmauthz

# ---------------------------------------------------------------------------
# Fixtures

users := {
	"admin-1": {"id": "admin-1", "role": "admin", "location_ids": ["loc-1"], "assigned_data_only": true, "contacts_enabled": true, "opportunities_enabled": true},
	"admin-2": {"id": "admin-2", "role": "admin", "location_ids": ["loc-2"], "assigned_data_only": false, "contacts_enabled": true, "opportunities_enabled": true},
	"admin-nocontacts": {"id": "admin-nocontacts", "role": "admin", "location_ids": ["loc-1"], "assigned_data_only": false, "contacts_enabled": false, "opportunities_enabled": true},
	"u-free": {"id": "u-free", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": false, "contacts_enabled": true, "opportunities_enabled": true},
	"u-default": {"id": "u-default", "role": "user", "location_ids": ["loc-1"]},
	"u-owner": {"id": "u-owner", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true, "contacts_enabled": true, "opportunities_enabled": true},
	"u-fol": {"id": "u-fol", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true, "contacts_enabled": true, "opportunities_enabled": true},
	"u-oppfol": {"id": "u-oppfol", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true, "contacts_enabled": true, "opportunities_enabled": true},
	"u-none": {"id": "u-none", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true, "contacts_enabled": true, "opportunities_enabled": true},
	"u-nocontacts": {"id": "u-nocontacts", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": false, "contacts_enabled": false, "opportunities_enabled": true},
	"u-noopps": {"id": "u-noopps", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": false, "contacts_enabled": true, "opportunities_enabled": false},
	"u-other": {"id": "u-other", "role": "user", "location_ids": ["loc-2"], "assigned_data_only": true, "contacts_enabled": true, "opportunities_enabled": true},
	"u-both": {"id": "u-both", "role": "user", "location_ids": ["loc-2", "loc-1"], "assigned_data_only": true, "contacts_enabled": true, "opportunities_enabled": true},
}

nine := ["f-1", "f-2", "f-3", "f-4", "f-5", "f-6", "f-7", "f-8", "u-fol"]

records := {
	"contact": {
		"c-1": {"type": "contact", "id": "c-1", "location_id": "loc-1", "owner": "u-owner", "followers": ["u-fol"]},
		"c-2": {"type": "contact", "id": "c-2", "location_id": "loc-2", "owner": "u-other", "followers": []},
		"c-unassigned": {"type": "contact", "id": "c-unassigned", "location_id": "loc-1", "owner": "", "followers": ["u-fol"]},
		"c-nofollowers": {"type": "contact", "id": "c-nofollowers", "location_id": "loc-1"},
		"c-nine": {"type": "contact", "id": "c-nine", "location_id": "loc-1", "owner": "u-owner", "followers": nine},
		"c-full": {"type": "contact", "id": "c-full", "location_id": "loc-1", "owner": "u-owner", "followers": array.concat(nine, ["f-9"])},
	},
	"opportunity": {"o-1": {"type": "opportunity", "id": "o-1", "location_id": "loc-1", "owner": "u-owner", "followers": ["u-oppfol"], "contact_id": "c-1"}},
}

mock_user(id) := users[id]

mock_record(typ, id) := records[typ][id]

all_actions := ["view", "edit", "delete", "change_owner", "add_follower", "remove_follower"]

# decide evaluates the decision without a target, decide_t with one.
decide(subject, action, typ, id) := d if {
	d := crmauthz.decision with input as {"subject": subject, "action": action, "resource": {"type": typ, "id": id}}
		with crm.user as mock_user
		with crm.record as mock_record
}

decide_t(subject, action, typ, id, target) := d if {
	d := crmauthz.decision with input as {"subject": subject, "action": action, "resource": {"type": typ, "id": id}, "target": target}
		with crm.user as mock_user
		with crm.record as mock_record
}

allowed(reason) := {"allow": true, "reason": reason}

denied(reason) := {"allow": false, "reason": reason}

# ---------------------------------------------------------------------------
# Rule 1: unknown_action

test_unknown_action if {
	decide("u-owner", "publish", "contact", "c-1") == denied("unknown_action")
}

test_missing_action if {
	d := crmauthz.decision with input as {"subject": "u-owner", "resource": {"type": "contact", "id": "c-1"}}
		with crm.user as mock_user
		with crm.record as mock_record
	d == denied("unknown_action")
}

test_unknown_action_beats_unknown_subject if {
	decide("ghost", "publish", "contact", "nope") == denied("unknown_action")
}

test_unknown_action_for_admin if {
	decide("admin-1", "VIEW", "contact", "c-1") == denied("unknown_action")
}

# ---------------------------------------------------------------------------
# Rule 2: unknown_subject

test_unknown_subject if {
	decide("ghost", "view", "contact", "c-1") == denied("unknown_subject")
}

test_unknown_subject_beats_record_not_found if {
	decide("ghost", "view", "contact", "nope") == denied("unknown_subject")
}

test_missing_subject if {
	d := crmauthz.decision with input as {"action": "view", "resource": {"type": "contact", "id": "c-1"}}
		with crm.user as mock_user
		with crm.record as mock_record
	d == denied("unknown_subject")
}

# ---------------------------------------------------------------------------
# Rule 3: record_not_found

test_record_not_found if {
	decide("u-owner", "view", "contact", "nope") == denied("record_not_found")
}

test_record_not_found_wrong_type if {
	# o-1 is an opportunity, not a contact
	decide("u-owner", "view", "contact", "o-1") == denied("record_not_found")
}

test_record_not_found_unknown_type if {
	decide("admin-1", "view", "invoice", "c-1") == denied("record_not_found")
}

test_record_not_found_for_admin if {
	decide("admin-1", "delete", "opportunity", "nope") == denied("record_not_found")
}

# ---------------------------------------------------------------------------
# Rule 4: cross_location

test_cross_location if {
	decide("u-free", "view", "contact", "c-2") == denied("cross_location")
}

test_cross_location_beats_admin if {
	decide("admin-2", "view", "contact", "c-1") == denied("cross_location")
}

test_cross_location_beats_owner if {
	# u-other owns c-2 in loc-2 but u-owner (loc-1) asks for it
	decide("u-owner", "view", "contact", "c-2") == denied("cross_location")
}

test_several_locations if {
	decide("u-both", "view", "contact", "c-2") == denied("not_assigned")
	decide("u-both", "view", "contact", "c-1") == denied("not_assigned")
}

test_cross_location_without_location_ids if {
	d := crmauthz.decision with input as {"subject": "x", "action": "view", "resource": {"type": "contact", "id": "c-1"}}
		with crm.user as {"id": "x", "role": "admin"}
		with crm.record as mock_record
	d == denied("cross_location")
}

# ---------------------------------------------------------------------------
# Rule 5: module_disabled

test_module_disabled_contacts if {
	decide("u-nocontacts", "view", "contact", "c-1") == denied("module_disabled")
	decide("u-nocontacts", "view", "opportunity", "o-1") == allowed("unrestricted")
}

test_module_disabled_opportunities if {
	decide("u-noopps", "view", "opportunity", "o-1") == denied("module_disabled")
	decide("u-noopps", "view", "contact", "c-1") == allowed("unrestricted")
}

test_module_disabled_beats_admin if {
	decide("admin-nocontacts", "view", "contact", "c-1") == denied("module_disabled")
	decide("admin-nocontacts", "view", "opportunity", "o-1") == allowed("admin")
}

test_module_switches_default_to_enabled if {
	decide("u-default", "view", "contact", "c-1") == allowed("unrestricted")
	decide("u-default", "view", "opportunity", "o-1") == allowed("unrestricted")
}

test_cross_location_beats_module_disabled if {
	decide("u-nocontacts", "view", "contact", "c-2") == denied("cross_location")
}

# ---------------------------------------------------------------------------
# Rule 6: unknown_target, target_cross_location

test_unknown_target if {
	decide_t("u-owner", "add_follower", "contact", "c-1", "ghost") == denied("unknown_target")
}

test_unknown_target_for_admin if {
	decide_t("admin-1", "change_owner", "contact", "c-1", "ghost") == denied("unknown_target")
}

test_target_cross_location if {
	decide_t("u-owner", "add_follower", "contact", "c-1", "u-other") == denied("target_cross_location")
}

test_target_cross_location_for_admin if {
	decide_t("admin-1", "change_owner", "contact", "c-1", "u-other") == denied("target_cross_location")
}

test_target_cross_location_without_location_ids if {
	d := crmauthz.decision with input as {"subject": "u-owner", "action": "add_follower", "resource": {"type": "contact", "id": "c-1"}, "target": "x"}
		with crm.user as mock_user_or_bare
		with crm.record as mock_record
	d == denied("target_cross_location")
}

mock_user_or_bare(id) := users[id]

mock_user_or_bare(id) := {"id": id, "role": "user"} if not users[id]

test_target_in_several_locations if {
	decide_t("u-owner", "add_follower", "contact", "c-1", "u-both") == allowed("owner")
}

test_module_disabled_beats_unknown_target if {
	decide_t("u-nocontacts", "add_follower", "contact", "c-1", "ghost") == denied("module_disabled")
}

test_target_checked_for_every_action if {
	every a in all_actions {
		decide_t("u-owner", a, "contact", "c-1", "ghost") == denied("unknown_target")
	}
}

test_null_target_is_no_target if {
	decide_t("u-owner", "add_follower", "contact", "c-1", null) == allowed("owner")
}

test_no_target_no_target_checks if {
	decide("u-owner", "change_owner", "contact", "c-1") == allowed("owner")
}

# ---------------------------------------------------------------------------
# Rule 7: follower_limit_reached

test_follower_limit_reached if {
	decide_t("u-owner", "add_follower", "contact", "c-full", "u-none") == denied("follower_limit_reached")
}

test_follower_limit_applies_to_admins if {
	decide_t("admin-1", "add_follower", "contact", "c-full", "u-none") == denied("follower_limit_reached")
}

test_follower_limit_applies_to_unrestricted if {
	decide_t("u-free", "add_follower", "contact", "c-full", "u-none") == denied("follower_limit_reached")
}

test_nine_followers_may_get_a_tenth if {
	decide_t("u-owner", "add_follower", "contact", "c-nine", "u-none") == allowed("owner")
	decide_t("admin-1", "add_follower", "contact", "c-nine", "u-none") == allowed("admin")
}

test_follower_limit_existing_follower if {
	# adding a present follower changes nothing: not over the limit
	decide_t("u-owner", "add_follower", "contact", "c-full", "u-fol") == allowed("owner")
}

test_follower_limit_owner_as_target if {
	# adding the owner changes nothing: not over the limit
	decide_t("u-owner", "add_follower", "contact", "c-full", "u-owner") == allowed("owner")
}

test_follower_limit_other_actions if {
	decide_t("u-owner", "remove_follower", "contact", "c-full", "u-fol") == allowed("owner")
	decide_t("u-owner", "change_owner", "contact", "c-full", "u-none") == allowed("owner")
}

test_follower_limit_needs_a_target if {
	decide("u-owner", "add_follower", "contact", "c-full") == allowed("owner")
}

test_follower_limit_is_configurable if {
	decide_t("u-owner", "add_follower", "contact", "c-nine", "u-none") == denied("follower_limit_reached") with data.crmauthz.config.max_followers as 9
	decide_t("u-owner", "add_follower", "contact", "c-full", "u-none") == allowed("owner") with data.crmauthz.config.max_followers as 11
}

test_target_cross_location_beats_follower_limit if {
	decide_t("u-owner", "add_follower", "contact", "c-full", "u-other") == denied("target_cross_location")
}

test_follower_limit_beats_follower_rules if {
	decide_t("u-fol", "add_follower", "contact", "c-full", "u-none") == denied("follower_limit_reached")
}

# ---------------------------------------------------------------------------
# Rule 8: admin

test_admin_every_action if {
	every a in all_actions {
		decide("admin-1", a, "contact", "c-1") == allowed("admin")
		decide("admin-1", a, "opportunity", "o-1") == allowed("admin")
	}
}

test_admin_with_target if {
	decide_t("admin-1", "add_follower", "contact", "c-1", "u-none") == allowed("admin")
	decide_t("admin-1", "change_owner", "contact", "c-1", "u-none") == allowed("admin")
}

test_admin_beats_assigned_data_only if {
	users["admin-1"].assigned_data_only
	decide("admin-1", "delete", "contact", "c-unassigned") == allowed("admin")
}

# ---------------------------------------------------------------------------
# Rule 9: unrestricted

test_unrestricted_every_action if {
	every a in all_actions {
		decide("u-free", a, "contact", "c-1") == allowed("unrestricted")
		decide("u-free", a, "opportunity", "o-1") == allowed("unrestricted")
	}
}

test_unrestricted_by_default if {
	decide("u-default", "delete", "contact", "c-unassigned") == allowed("unrestricted")
}

# ---------------------------------------------------------------------------
# Rule 10: owner

test_owner_every_action if {
	every a in all_actions {
		decide("u-owner", a, "contact", "c-1") == allowed("owner")
		decide("u-owner", a, "opportunity", "o-1") == allowed("owner")
		decide_t("u-owner", a, "contact", "c-1", "u-none") == allowed("owner")
	}
}

test_unassigned_record_has_no_owner if {
	decide("u-none", "view", "contact", "c-unassigned") == denied("not_assigned")
	d := crmauthz.decision with input as {"subject": "", "action": "view", "resource": {"type": "contact", "id": "c-unassigned"}}
		with crm.user as {"id": "", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}
		with crm.record as mock_record
	d == denied("not_assigned")
}

# ---------------------------------------------------------------------------
# Rule 11: followers

test_follower_view_edit if {
	decide("u-fol", "view", "contact", "c-1") == allowed("follower")
	decide("u-fol", "edit", "contact", "c-1") == allowed("follower")
	decide("u-oppfol", "view", "opportunity", "o-1") == allowed("follower")
	decide("u-oppfol", "edit", "opportunity", "o-1") == allowed("follower")
}

test_follower_unfollow if {
	decide_t("u-fol", "remove_follower", "contact", "c-1", "u-fol") == allowed("follower_unfollow")
	decide_t("u-oppfol", "remove_follower", "opportunity", "o-1", "u-oppfol") == allowed("follower_unfollow")
}

test_follower_cannot_change_owner if {
	decide("u-fol", "change_owner", "contact", "c-1") == denied("followers_cannot_change_owner")
	decide_t("u-fol", "change_owner", "contact", "c-1", "u-fol") == denied("followers_cannot_change_owner")
	decide_t("u-fol", "change_owner", "contact", "c-1", "u-none") == denied("followers_cannot_change_owner")
}

test_follower_not_permitted if {
	decide("u-fol", "delete", "contact", "c-1") == denied("follower_not_permitted")
	decide("u-fol", "add_follower", "contact", "c-1") == denied("follower_not_permitted")
	decide_t("u-fol", "add_follower", "contact", "c-1", "u-none") == denied("follower_not_permitted")
	decide_t("u-fol", "remove_follower", "contact", "c-1", "u-owner") == denied("follower_not_permitted")
	decide("u-fol", "remove_follower", "contact", "c-1") == denied("follower_not_permitted")
}

test_follower_every_action if {
	want := {
		"view": allowed("follower"),
		"edit": allowed("follower"),
		"delete": denied("follower_not_permitted"),
		"change_owner": denied("followers_cannot_change_owner"),
		"add_follower": denied("follower_not_permitted"),
		"remove_follower": denied("follower_not_permitted"),
	}
	every a in all_actions {
		decide("u-fol", a, "contact", "c-1") == want[a]
		decide("u-oppfol", a, "opportunity", "o-1") == want[a]
	}
}

test_follower_of_unassigned_record if {
	decide("u-fol", "edit", "contact", "c-unassigned") == allowed("follower")
}

test_following_an_opportunity_grants_nothing_on_its_contact if {
	records.opportunity["o-1"].contact_id == "c-1"
	every a in all_actions {
		decide("u-oppfol", a, "contact", "c-1") == denied("not_assigned")
	}
}

test_following_a_contact_grants_nothing_on_its_opportunities if {
	every a in all_actions {
		decide("u-fol", a, "opportunity", "o-1") == denied("not_assigned")
	}
}

# The switches

test_followers_can_delete if {
	decide("u-fol", "delete", "contact", "c-1") == allowed("follower") with data.crmauthz.config.followers_can_delete as true
	decide("u-fol", "add_follower", "contact", "c-1") == denied("follower_not_permitted") with data.crmauthz.config.followers_can_delete as true
	decide("u-fol", "change_owner", "contact", "c-1") == denied("followers_cannot_change_owner") with data.crmauthz.config.followers_can_delete as true
	decide("u-none", "delete", "contact", "c-1") == denied("not_assigned") with data.crmauthz.config.followers_can_delete as true
}

test_followers_can_manage_followers if {
	decide_t("u-fol", "add_follower", "contact", "c-1", "u-none") == allowed("follower") with data.crmauthz.config.followers_can_manage_followers as true
	decide_t("u-fol", "remove_follower", "contact", "c-1", "u-owner") == allowed("follower") with data.crmauthz.config.followers_can_manage_followers as true
	decide_t("u-fol", "remove_follower", "contact", "c-1", "u-fol") == allowed("follower_unfollow") with data.crmauthz.config.followers_can_manage_followers as true
	decide("u-fol", "delete", "contact", "c-1") == denied("follower_not_permitted") with data.crmauthz.config.followers_can_manage_followers as true
	decide("u-fol", "change_owner", "contact", "c-1") == denied("followers_cannot_change_owner") with data.crmauthz.config.followers_can_manage_followers as true
	decide_t("u-fol", "add_follower", "contact", "c-full", "u-none") == denied("follower_limit_reached") with data.crmauthz.config.followers_can_manage_followers as true
}

test_switches_off_by_default if {
	not data.crmauthz.config.followers_can_delete
	not data.crmauthz.config.followers_can_manage_followers
	data.crmauthz.config.max_followers == 10
}

# ---------------------------------------------------------------------------
# Rule 12: not_assigned

test_not_assigned if {
	every a in all_actions {
		decide("u-none", a, "contact", "c-1") == denied("not_assigned")
		decide("u-none", a, "opportunity", "o-1") == denied("not_assigned")
	}
}

test_not_assigned_without_followers_field if {
	decide("u-none", "view", "contact", "c-nofollowers") == denied("not_assigned")
	decide("u-free", "view", "contact", "c-nofollowers") == allowed("unrestricted")
}

# ---------------------------------------------------------------------------
# The result

test_allow_shortcut if {
	crmauthz.allow with input as {"subject": "u-owner", "action": "view", "resource": {"type": "contact", "id": "c-1"}}
		with crm.user as mock_user
		with crm.record as mock_record
	not crmauthz.allow with input as {"subject": "u-none", "action": "view", "resource": {"type": "contact", "id": "c-1"}}
		with crm.user as mock_user
		with crm.record as mock_record
}

test_decision_is_always_one_object if {
	every s in object.keys(users) {
		every a in array.concat(all_actions, ["bogus"]) {
			every rid in object.keys(records.contact) {
				d := decide(s, a, "contact", rid)
				is_boolean(d.allow)
				is_string(d.reason)
				count(d) == 2
			}
		}
	}
}
