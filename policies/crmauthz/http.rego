# The entry point of the gateway endpoints (/v1/forward-auth, /v1/ext-authz/…
# and Envoy's gRPC Authorization/Check): the decision of one HTTP request of
# the CRM's API, mapped to an action by routes.rego and decided by
# data.crmauthz.decision, in one evaluation.
#
# Input: {"subject", "method", "path", "segments", "body"?} (see routes.rego).
# Result: {"allow": bool, "reason": string} with "action", "resource" and
# "targets" when the request is a route.
package crmauthz

import data.crmauthz.routes

http_decision := routes.decision
