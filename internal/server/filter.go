package server

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/crmauthz/crmauthz/internal/filter"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
)

// filterResponse is the reply of GET /v1/subjects/{id}/filter
// (docs/filtering.md): the kind, and for "conditional" the SQL or the UCAST.
type filterResponse struct {
	Kind           string         `json:"kind"`
	SQL            *filter.SQL    `json:"sql,omitempty"`
	UCAST          map[string]any `json:"ucast,omitempty"`
	PolicyRevision string         `json:"policy_revision"`
	AppliedSeq     uint64         `json:"applied_seq"`
}

// filterQuery is a checked query of GET /v1/subjects/{id}/filter.
type filterQuery struct {
	typ, loc string
	dialect  filter.Dialect
	minSeq   uint64
}

// parseFilterQuery checks the query string of GET /v1/subjects/{id}/filter:
// parseSubjectQuery's and dialect (default postgresql).
func parseFilterQuery(raw string) (filterQuery, error) {
	sq, err := parseSubjectQuery(raw, "dialect")
	if err != nil {
		return filterQuery{}, err
	}
	d, err := filter.ParseDialect(sq.vals.Get("dialect"))
	if err != nil {
		return filterQuery{}, invalid("%v", err)
	}
	return filterQuery{typ: sq.typ, loc: sq.loc, dialect: d, minSeq: sq.minSeq}, nil
}

// getSubjectFilter serves GET /v1/subjects/{id}/filter: the records of one
// type in one location the subject may view, as a condition an app adds to
// its own query. One read transaction: the policy's partial evaluation of
// data.crmauthz.decision for a view, with the subject's facts known and the
// record unknown, then its translation.
// An unknown subject is whatever the policy says (the default: none).
func (s *Server) getSubjectFilter(c *gin.Context, subject string) {
	q, err := parseFilterQuery(c.Request.URL.RawQuery)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if err := s.waitForSeq(c.Request.Context(), q.minSeq); err != nil {
		s.writeError(c, err)
		return
	}
	var resp filterResponse
	err = s.ix.View(func(tx *index.ReadTx) error {
		resp.AppliedSeq = tx.AppliedSeq()
		p, rev, err := s.eng.PartialView(c.Request.Context(), tx, policy.FilterInput{Subject: subject, Type: q.typ, LocationID: q.loc})
		resp.PolicyRevision = rev
		if err != nil {
			return err
		}
		if len(p.Unknowns) != 1 {
			return newError(http.StatusInternalServerError, errcode.FilterUntranslatable,
				"the data filter needs exactly one unknown (the record), not %v", p.Unknowns)
		}
		// The translation for this location and dialect is memoized with
		// the (cached) partial evaluation: the reply is only read.
		key := strconv.Itoa(len(q.typ)) + ":" + q.typ + string(q.dialect) + "\x00" + q.loc
		v, err := p.Memo(key, func() (any, error) {
			in := filter.Input{Branches: make([]filter.Branch, 0, len(p.Branches)), Support: p.Support, Unknown: p.Unknowns[0], RecordType: q.typ, LocationID: q.loc}
			for _, b := range p.Branches {
				in.Branches = append(in.Branches, filter.Branch{When: b.When, Allow: b.Allow})
			}
			return s.filter.Translate(in, q.dialect)
		})
		if err != nil {
			return err
		}
		res := v.(filter.Result)
		resp.Kind, resp.SQL, resp.UCAST = res.Kind, res.SQL, res.UCAST
		return nil
	})
	if err != nil {
		s.writeError(c, filterError(err))
		return
	}
	c.PureJSON(http.StatusOK, resp) // "<>" as it is, not \u003c\u003e
}

// filterError maps the errors of a filter: a policy the translator cannot
// express and a policy without the entry point are the server's (5xx, never
// a filter); the rest as for decisions.
func filterError(err error) error {
	var ue *filter.UntranslatableError
	switch {
	case errors.As(err, &ue):
		return newError(http.StatusInternalServerError, errcode.FilterUntranslatable, "%v", ue)
	case errors.Is(err, policy.ErrFilterUnderivable):
		return newError(http.StatusInternalServerError, errcode.FilterUntranslatable, "%v", err)
	case errors.Is(err, policy.ErrNoViewFilter):
		return newError(http.StatusNotImplemented, errcode.FilterNotDefined, "%v", err)
	}
	return evalError(err)
}
