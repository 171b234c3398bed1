package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/gin-gonic/gin"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
	"github.com/crmauthz/crmauthz/internal/strictjson"
)

// apiError is an error the server itself raises, with its status and code.
type apiError struct {
	Status  int
	Code    string
	Message string
	Extra   map[string]any // fields added inside "error" (applied_seq, index, line)
	Err     error          // the cause it was made from, or nil
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }
func (e *apiError) Unwrap() error { return e.Err }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// toAPIError returns the apiError err holds, or the one errorTable makes of
// err, which it wraps (errors.Is and As still find the cause).
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	ae = errorTable(err)
	ae.Err = err
	return ae
}

// errorTable is the one table that maps every error to an HTTP status and a
// code of docs/reference.md §2.6. Anything it does not know is a 500: on the
// decision listener that is a deny, never an allow.
//
// The errors that wrap others come first: an *InvalidEventError or a
// *SnapshotLineError wraps the event's or the line's own error (a
// *strictjson.Error, say), and is answered as a whole (422 with its index or
// line), never as what it wraps.
func errorTable(err error) *apiError {
	var (
		mbe  *http.MaxBytesError
		sje  *strictjson.Error
		mal  *replication.MalformedError
		gap  *replication.GapError
		inv  *replication.InvalidEventError
		line *replication.SnapshotLineError
	)
	switch {
	case errors.As(err, &inv):
		e := newError(http.StatusUnprocessableEntity, errcode.InvalidEvent, "%s", inv.Error())
		e.Extra = map[string]any{"index": inv.Index}
		return e
	case errors.As(err, &line):
		e := newError(http.StatusUnprocessableEntity, errcode.InvalidSnapshot, "%s", line.Error())
		e.Extra = map[string]any{"line": line.Line}
		return e
	case errors.As(err, &gap):
		e := newError(http.StatusConflict, errcode.SequenceGap, "%s", gap.Error())
		e.Extra = map[string]any{"applied_seq": gap.AppliedSeq}
		return e
	case errors.As(err, &mbe):
		// also a *strictjson.Error of kind ErrTooLarge, which wraps it
		return newError(http.StatusRequestEntityTooLarge, errcode.PayloadTooLarge, "the body is larger than %d bytes", mbe.Limit)
	case errors.As(err, &sje):
		switch {
		case sje.Malformed():
			return newError(http.StatusBadRequest, errcode.MalformedJSON, "%s", sje.Msg)
		case errors.Is(sje, strictjson.ErrTooLarge):
			return newError(http.StatusRequestEntityTooLarge, errcode.PayloadTooLarge, "%s", sje.Msg)
		}
		return newError(http.StatusBadRequest, errcode.InvalidRequest, "%s", sje.Msg) // unknown field, key twice, wrong type
	case errors.As(err, &mal):
		return newError(http.StatusBadRequest, errcode.MalformedJSON, "%s", mal.Msg)
	case errors.Is(err, errTruncated), errors.Is(err, io.ErrUnexpectedEOF):
		// a body read that ended before Content-Length (the decoders turn
		// their own unexpected ends into *replication.MalformedError first)
		return newError(http.StatusBadRequest, errcode.Truncated,
			"the body ended before the length it announced (Content-Length): it was cut off on the way; nothing was changed")
	case errors.Is(err, replication.ErrTooManyEvents):
		return newError(http.StatusRequestEntityTooLarge, errcode.PayloadTooLarge, "%v", err)
	case errors.Is(err, replication.ErrSnapshotInProgress):
		return newError(http.StatusServiceUnavailable, errcode.SnapshotInProgress, "%v", err)
	case errors.Is(err, index.ErrReadOnly):
		return newError(http.StatusServiceUnavailable, errcode.IndexReadOnly, "the index is open read-only")
	case errors.Is(err, index.ErrClosed):
		return newError(http.StatusServiceUnavailable, errcode.IndexClosed, "the index is closed (shutting down)")
	case errors.Is(err, syscall.ENOSPC):
		return newError(http.StatusInsufficientStorage, errcode.InsufficientStorage, "the data directory is full: %v", err)
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return newError(http.StatusServiceUnavailable, errcode.IndexUnwritable, "the data directory cannot be written: %v", err)
	case isTimeout(err):
		return newError(http.StatusRequestTimeout, errcode.RequestTimeout, "the request was not received in time: %v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusServiceUnavailable, errcode.Timeout, "%v", err)
	}
	return newError(http.StatusInternalServerError, errcode.InternalError, "%v", err)
}

// errTruncated is a body that ended before its Content-Length.
var errTruncated = errors.New("the body was cut off")

// cutReader notes a body that ends before its Content-Length (the client
// went away mid-upload), whatever a decoder then makes of the short input:
// such a request is 400 truncated, like a snapshot cut off.
type cutReader struct {
	r   io.Reader
	cut bool
}

func (c *cutReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		c.cut = true
	}
	return n, err
}

// isTimeout tells a read deadline of the connection (a client too slow to
// send its body) from other errors.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

type errorBody struct {
	Error map[string]any `json:"error"`
}

// writeError writes the error body of docs/reference.md §2.6 once and stops the handler chain.
func (s *Server) writeError(c *gin.Context, err error) {
	s.writeErrorTo(c.Writer, c.Request, err)
	c.Abort()
}

// writeErrorTo writes err's error body (docs/reference.md §2.6) to w, the
// bytes and headers Gin's c.JSON wrote, and returns its status; a 5xx is
// logged.
func (s *Server) writeErrorTo(w http.ResponseWriter, r *http.Request, err error) int {
	ae := toAPIError(err)
	if ae.Status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", ae.Status, "err", err)
	}
	body := map[string]any{"code": ae.Code, "message": ae.Message}
	for k, v := range ae.Extra {
		body[k] = v
	}
	b, mErr := json.Marshal(errorBody{Error: body})
	if mErr != nil { // cannot happen: strings and numbers
		b = []byte(`{"error":{"code":"` + errcode.InternalError + `","message":"internal error"}}`)
	}
	h := w.Header()
	if ae.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="crmauthz"`)
	}
	if len(h["Content-Type"]) == 0 {
		h["Content-Type"] = jsonContentType
	}
	w.WriteHeader(ae.Status)
	_, _ = w.Write(b)
	return ae.Status
}
