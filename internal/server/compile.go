package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
	"github.com/crmauthz/crmauthz/internal/strictjson"
)

// The Accept types of OPA's Compile API and the (target, dialect) each asks for.
var compileAccept = map[string][2]string{
	"application/vnd.opa.ucast.all+json":      {"ucast", "all"},
	"application/vnd.opa.ucast.minimal+json":  {"ucast", "minimal"},
	"application/vnd.opa.ucast.prisma+json":   {"ucast", "prisma"},
	"application/vnd.opa.ucast.linq+json":     {"ucast", "linq"},
	"application/vnd.opa.sql.postgresql+json": {"sql", "postgresql"},
	"application/vnd.opa.sql.mysql+json":      {"sql", "mysql"},
	"application/vnd.opa.sql.sqlserver+json":  {"sql", "sqlserver"},
	"application/vnd.opa.sql.sqlite+json":     {"sql", "sqlite"},
}

const multiTarget = "application/vnd.opa.multitarget+json"

// compileRequest is OPA's Compile API request body.
type compileRequest struct {
	Input    *json.RawMessage `json:"input"`
	Query    string           `json:"query"`
	Unknowns *[]string        `json:"unknowns"`
	Options  struct {
		DisableInlining []string       `json:"disableInlining"`
		Mappings        map[string]any `json:"targetSQLTableMappings"`
		TargetDialects  []string       `json:"targetDialects"`
		MaskRule        string         `json:"maskRule"`
	} `json:"options"`
}

// postCompile serves OPA's Compile API, POST /v1/compile/{path}, for the
// paths the Data API serves (--data-api-paths): OPA's own translation
// (docs/filtering.md, "OPA's Compile API"). The reply is OPA's:
// {"result": {"query": …}}, no "result" when nothing can match, and for the
// multitarget type one query per target.
func (s *Server) postCompile(c *gin.Context) {
	path := strings.Trim(c.Param("path"), "/")
	if path == "" {
		s.writeError(c, invalid("a path is required, e.g. /v1/compile/crmauthz/allow"))
		return
	}
	if !s.dataPathAllowed(path) {
		s.writeError(c, newError(http.StatusForbidden, errcode.PathNotAllowed,
			"the Compile API does not serve %q here (allowed: see --data-api-paths)", path))
		return
	}
	segs := strings.Split(path, "/")
	for _, seg := range segs {
		if seg == "" {
			s.writeError(c, invalid("the path %q has an empty segment", path))
			return
		}
	}
	accept := strings.TrimSpace(c.GetHeader("Accept"))
	var targets [][2]string
	switch td, ok := compileAccept[accept]; {
	case ok:
		targets = [][2]string{td}
	case accept == multiTarget:
	default:
		s.writeError(c, newError(http.StatusNotAcceptable, errcode.InvalidRequest,
			"the Accept header must be one Compile API type (application/vnd.opa.sql.postgresql+json, …, application/vnd.opa.ucast.all+json, %s), not %q", multiTarget, accept))
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxDecisionBytes))
	if err != nil {
		s.writeError(c, err)
		return
	}
	var body compileRequest
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := strictjson.Unmarshal(raw, &body); err != nil {
			s.writeError(c, err)
			return
		}
	}
	req := policy.CompileRequest{Path: segs, Targets: targets, Mappings: body.Options.Mappings, DisableInlining: body.Options.DisableInlining}
	switch {
	case body.Query != "":
		s.writeError(c, invalid("query is not supported: the path names the query"))
		return
	case body.Options.MaskRule != "":
		s.writeError(c, invalid("options.maskRule is not supported"))
		return
	case accept == multiTarget && len(body.Options.TargetDialects) == 0:
		s.writeError(c, invalid("options.targetDialects is required with %s", multiTarget))
		return
	}
	if accept == multiTarget {
		for _, td := range body.Options.TargetDialects {
			t, d, ok := strings.Cut(td, "+")
			if !ok || !knownTarget(t, d) {
				s.writeError(c, invalid("options.targetDialects: unknown target %q (e.g. sql+postgresql, ucast+all)", td))
				return
			}
			req.Targets = append(req.Targets, [2]string{t, d})
		}
	}
	if body.Input != nil {
		req.Input, err = ast.ValueFromReader(bytes.NewReader(*body.Input))
		if err != nil {
			s.writeError(c, invalid("input: %v", err))
			return
		}
	}
	if body.Unknowns != nil {
		for _, u := range *body.Unknowns {
			ref, err := ast.ParseRef(u)
			if err != nil || !(ref.HasPrefix(ast.InputRootRef) || ref.HasPrefix(ast.DefaultRootRef)) {
				s.writeError(c, invalid("unknowns: %q is not a reference under input or data", u))
				return
			}
			req.Unknowns = append(req.Unknowns, ref)
		}
	}
	var queries map[string]any
	err = s.ix.View(func(tx *index.ReadTx) error {
		var err error
		queries, _, err = s.eng.CompileFilters(c.Request.Context(), tx, req)
		return err
	})
	var ce *policy.CompileErrors
	switch {
	case errors.As(err, &ce):
		e := newError(http.StatusBadRequest, errcode.CompileError, "the policy cannot be compiled to a filter for this target: %v", ce)
		e.Extra = map[string]any{"errors": ce.Errs}
		s.writeError(c, e)
		return
	case errors.Is(err, policy.ErrCompileRequest):
		s.writeError(c, invalid("%v", err))
		return
	case err != nil:
		s.writeError(c, evalError(err))
		return
	}
	type result struct {
		Query any `json:"query"`
	}
	reply := map[string]any{}
	if accept == multiTarget {
		res := map[string]any{}
		for _, t := range req.Targets {
			name := t[1]
			if t[0] == "ucast" {
				name = "ucast"
			}
			if q := queries[t[0]+"+"+t[1]]; q != nil {
				res[name] = result{q}
			}
		}
		reply["result"] = res
	} else if q := queries[targets[0][0]+"+"+targets[0][1]]; q != nil {
		reply["result"] = result{q}
	}
	c.Header("Content-Type", accept)
	b, err := json.Marshal(reply)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Data(http.StatusOK, accept, b)
}

func knownTarget(t, d string) bool {
	for _, td := range compileAccept {
		if td == [2]string{t, d} {
			return true
		}
	}
	return false
}
