package server

import (
	"net/http"
	"net/http/pprof"
	rpprof "runtime/pprof"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/crmauthz/crmauthz/internal/server/errcode"
)

// PprofPrefix is where mountPprof serves: the path prefix of Go's
// net/http/pprof, as `opa run --server --pprof` serves it.
const PprofPrefix = "/debug/pprof/"

// mountPprof serves Go's runtime profiles (net/http/pprof: the index,
// cmdline, profile, symbol, trace and every named profile such as heap or
// goroutine) under PprofPrefix on r, the admin engine, when Config.Pprof is
// set (`serve --pprof`; docs/operations.md, "Profiling"). A profile shows
// the goroutines' stacks and costs CPU while it runs, so the replication
// API's guard applies: the bearer token when one is configured, else
// loopback clients only.
func (s *Server) mountPprof(r *gin.Engine) {
	g := r.Group(strings.TrimSuffix(PprofPrefix, "/"), s.requireReplicationAuth)
	g.GET("/*name", gin.WrapF(s.servePprof))
	g.POST("/symbol", gin.WrapF(pprof.Symbol)) // pprof's symbol lookups POST their addresses
}

// servePprof dispatches a GET by name as net/http/pprof's own mux does; an
// unknown name is a 404 with the usual error body.
func (s *Server) servePprof(w http.ResponseWriter, r *http.Request) {
	switch name := strings.TrimPrefix(r.URL.Path, PprofPrefix); name {
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default: // the index ("") and the named profiles (heap, goroutine, …)
		if name != "" && rpprof.Lookup(name) == nil {
			s.writeErrorTo(w, r, newError(http.StatusNotFound, errcode.NotFound, "no profile %q", name))
			return
		}
		pprof.Index(w, r)
	}
}
