# Policy switches of the default crmauthz policy.
#
# They live in Rego (not in a data.json) so that the source tree and a flat
# Kubernetes ConfigMap mount load them at the same path, data.crmauthz.config.
# Edit this file to change them; tests flip them with
# `with data.crmauthz.config.followers_can_delete as true`.
package crmauthz.config

# When true, a follower may delete the records it follows (reason "follower").
default followers_can_delete := false

# When true, a follower may add_follower and remove_follower of anyone on the
# records it follows (reason "follower").
default followers_can_manage_followers := false

# The maximum number of followers of one record. An add_follower of a new
# follower on a record that already has this many is denied
# (follower_limit_reached), for admins too. Keep it in step with the index.
max_followers := 10

# The path prefix of the CRM API's routes as the gateway endpoints see them
# (routes.rego), e.g. "/api/v2": then GET /api/v2/contacts/c-1 is a view, and
# GET /contacts/c-1 is not a route. "" for none.
path_prefix := ""
