package main

import "github.com/spf13/pflag"

// addPprofFlag registers --pprof (CRMAUTHZ_PPROF): Go's runtime profiles on
// the admin listener (server.Config.Pprof), off by default, as `opa run
// --server --pprof` (docs/operations.md, "Profiling"). Without it
// /debug/pprof/ is the admin API's 404 like any unknown path.
func addPprofFlag(f *pflag.FlagSet, on *bool) {
	f.BoolVar(on, "pprof", false, "serve Go's runtime profiles (net/http/pprof) under /debug/pprof/ on --admin-addr, to the clients the replication API admits")
}
