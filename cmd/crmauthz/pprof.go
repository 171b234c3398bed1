package main

import (
	"net/http"
	"strings"

	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/server"
)

// addPprofFlag registers --pprof (CRMAUTHZ_PPROF): Go's runtime profiles on
// the admin listener, off by default, as `opa run --server --pprof`
// (docs/operations.md, "Profiling").
func addPprofFlag(f *pflag.FlagSet, on *bool) {
	f.BoolVar(on, "pprof", false, "serve Go's runtime profiles (net/http/pprof) under /debug/pprof/ on --admin-addr, to the clients the replication API admits")
}

// adminHandler is the admin listener's handler: srv's admin API and, with
// --pprof, srv's profiles under /debug/pprof/. Without --pprof that path is
// the admin API's 404 like any unknown one.
func adminHandler(srv *server.Server, pprof bool) http.Handler {
	admin := srv.AdminHandler()
	if !pprof {
		return admin
	}
	prof := srv.PprofHandler()
	prefix := strings.TrimSuffix(server.PprofPrefix, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == prefix || strings.HasPrefix(p, server.PprofPrefix) {
			prof.ServeHTTP(w, r)
			return
		}
		admin.ServeHTTP(w, r)
	})
}
