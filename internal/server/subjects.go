package server

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
)

// Paging of GET /v1/subjects/{id}/records.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

// listTypes are the record types a list may ask for (as replication accepts).
var listTypes = map[string]bool{index.TypeContact: true, index.TypeOpportunity: true}

// subjectRecordsResponse is {"all": true} or {"all": false, "ids": [...],
// "next_cursor"?}, with the applied_seq and policy revision it was read at.
type subjectRecordsResponse struct {
	All bool `json:"all"`
	// IDs is absent when All; never null otherwise.
	IDs *[]string `json:"ids,omitempty"`
	// NextCursor is present when more ids remain: ask again with cursor=it.
	NextCursor     string `json:"next_cursor,omitempty"`
	PolicyRevision string `json:"policy_revision"`
	AppliedSeq     uint64 `json:"applied_seq"`
}

// listQuery is a checked query of GET /v1/subjects/{id}/records.
type listQuery struct {
	typ, loc, after string
	limit           int
	minSeq          uint64
}

// subjectQuery is the part of a query string both subject endpoints
// (records and filter) take: type and location_id, min_seq, and the values
// of the parameters only one of them knows.
type subjectQuery struct {
	typ, loc string
	minSeq   uint64
	vals     url.Values
}

// parseSubjectQuery checks what both subject endpoints require: only the
// parameters type, location_id, extra and min_seq, each at most once; type
// and location_id present and valid; min_seq a whole number. Anything else
// is a 400.
func parseSubjectQuery(raw string, extra ...string) (subjectQuery, error) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return subjectQuery{}, invalid("the query string is malformed: %v", err)
	}
	known := append(append([]string{"type", "location_id"}, extra...), "min_seq")
	for k, v := range vals {
		if !slices.Contains(known, k) {
			return subjectQuery{}, invalid("unknown query parameter %q (known: %s)", k, strings.Join(known, ", "))
		}
		if len(v) > 1 {
			return subjectQuery{}, invalid("the query parameter %q is given %d times", k, len(v))
		}
	}
	q := subjectQuery{typ: vals.Get("type"), loc: vals.Get("location_id"), vals: vals}
	switch {
	case q.typ == "":
		return subjectQuery{}, invalid("the query parameter type is missing or empty (contact or opportunity)")
	case !listTypes[q.typ]:
		return subjectQuery{}, invalid("type must be \"contact\" or \"opportunity\", not %q", q.typ)
	case q.loc == "":
		return subjectQuery{}, invalid("the query parameter location_id is missing or empty")
	}
	if p := idProblem(q.loc); p != "" {
		return subjectQuery{}, invalid("location_id %s", p)
	}
	if _, ok := vals["min_seq"]; ok {
		n, err := strconv.ParseUint(vals.Get("min_seq"), 10, 64)
		if err != nil {
			return subjectQuery{}, invalid("min_seq must be a whole number, not %q", vals.Get("min_seq"))
		}
		q.minSeq = n
	}
	return q, nil
}

// parseListQuery checks the query string of GET /v1/subjects/{id}/records:
// parseSubjectQuery's, limit 1..1000 (default 100) and an opaque cursor.
func parseListQuery(raw string) (listQuery, error) {
	sq, err := parseSubjectQuery(raw, "limit", "cursor")
	if err != nil {
		return listQuery{}, err
	}
	vals := sq.vals
	q := listQuery{typ: sq.typ, loc: sq.loc, minSeq: sq.minSeq, limit: defaultListLimit}
	if _, ok := vals["limit"]; ok {
		n, err := strconv.Atoi(vals.Get("limit"))
		if err != nil || n < 1 || n > maxListLimit {
			return listQuery{}, invalid("limit must be a whole number from 1 to %d, not %q", maxListLimit, vals.Get("limit"))
		}
		q.limit = n
	}
	if _, ok := vals["cursor"]; ok {
		b, err := base64.RawURLEncoding.DecodeString(vals.Get("cursor"))
		if err != nil || idProblem(string(b)) != "" {
			return listQuery{}, invalid("cursor is not one this server gave (pass next_cursor as it came)")
		}
		q.after = string(b)
	}
	return q, nil
}

// subjectOfPath finds {id} in /v1/subjects/{id}<suffix> from the path as
// sent, so an id may hold any character, "/" included (percent-encoded).
// ok is false when the path is not of that form (a 404).
func subjectOfPath(escaped, suffix string) (id string, ok bool, err error) {
	rest, ok1 := strings.CutPrefix(escaped, "/v1/subjects/")
	enc, ok2 := strings.CutSuffix(rest, suffix)
	if !ok1 || !ok2 || enc == "" || strings.Contains(enc, "/") {
		return "", false, nil
	}
	id, err = url.PathUnescape(enc)
	if err != nil {
		return "", true, invalid("the subject id in the path is not properly percent-encoded: %v", err)
	}
	return id, true, nil
}

// idProblem says what is wrong with an id the index could never hold, or "".
func idProblem(id string) string {
	switch {
	case len(id) > index.MaxIDLen:
		return "is longer than " + strconv.Itoa(index.MaxIDLen) + " bytes"
	case strings.IndexByte(id, 0) >= 0:
		return "contains a NUL byte"
	case !utf8.ValidString(id):
		return "is not valid UTF-8"
	case id == "":
		return "is empty"
	}
	return ""
}

// getSubjectRecords serves GET /v1/subjects/{id}/records: what the subject
// may view of one type in one location, for apps that filter list and search
// views themselves. One read transaction: the subject, the policy's scope
// (data.crmauthz.list_scope) and one page of the reverse index.
func (s *Server) getSubjectRecords(c *gin.Context) {
	if subject, ok, err := subjectOfPath(c.Request.URL.EscapedPath(), "/filter"); ok {
		if err != nil {
			s.writeError(c, err)
			return
		}
		s.getSubjectFilter(c, subject) // GET /v1/subjects/{id}/filter (filter.go)
		return
	}
	subject, ok, err := subjectOfPath(c.Request.URL.EscapedPath(), "/records")
	if !ok {
		s.writeError(c, newError(http.StatusNotFound, errcode.NotFound, "no route %s %s", c.Request.Method, c.Request.URL.Path))
		return
	}
	if err != nil {
		s.writeError(c, err)
		return
	}
	q, err := parseListQuery(c.Request.URL.RawQuery)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if err := s.waitForSeq(c.Request.Context(), q.minSeq); err != nil {
		s.writeError(c, err)
		return
	}
	var (
		resp    subjectRecordsResponse
		unknown bool
	)
	err = s.ix.View(func(tx *index.ReadTx) error {
		resp.AppliedSeq = tx.AppliedSeq()
		u, err := tx.UserJSON(subject)
		if err != nil {
			return err
		}
		if u == nil {
			unknown = true
			return nil
		}
		scope, rev, err := s.eng.ListScope(c.Request.Context(), tx, policy.ListInput{Subject: subject, Type: q.typ, LocationID: q.loc})
		resp.PolicyRevision = rev
		if err != nil {
			return err
		}
		switch scope {
		case policy.ScopeAll:
			resp.All = true
		case policy.ScopeNone:
			resp.IDs = &[]string{}
		case policy.ScopeAssigned:
			ids, next, err := tx.SubjectRecords(subject, q.typ, q.loc, q.after, q.limit)
			if err != nil {
				return err
			}
			resp.IDs = &ids
			if next != "" {
				resp.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(next))
			}
		default:
			return errors.New("unexpected list scope " + strconv.Quote(scope))
		}
		return nil
	})
	switch {
	case err != nil:
		s.writeError(c, evalError(err))
	case unknown:
		s.writeError(c, newError(http.StatusNotFound, errcode.UnknownSubject, "the subject %q is not in the index", subject))
	default:
		c.JSON(http.StatusOK, resp)
	}
}
