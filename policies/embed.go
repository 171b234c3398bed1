// Package policies holds the default Rego policy of crmauthz, built into the binary.
package policies

import "embed"

// FS holds the default policy sources. The files are under crmauthz/:
// authz.rego (package crmauthz, entry point data.crmauthz.decision), config.rego
// (package crmauthz.config, the policy switches), routes.rego (package
// crmauthz.routes, the gateway endpoints' route table) with http.rego (entry
// point data.crmauthz.http_decision), list.rego (data.crmauthz.list_scope), and
// the policy tests (*_test.rego). The data filter is derived from
// data.crmauthz.decision itself (docs/filtering.md).
//
//go:embed crmauthz
var FS embed.FS
