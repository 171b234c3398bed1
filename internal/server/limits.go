package server

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/crmauthz/crmauthz/internal/server/errcode"
)

// overloadedBody is the error body of docs/reference.md §2.6 for a request refused by Limit (Limits.MaxInFlight).
const overloadedBody = `{"error":{"code":"` + errcode.Overloaded + `","message":"too many requests in flight; retry shortly"}}`

// Error bodies of a body that did not arrive (Limit).
const (
	bodyTimeoutBody = `{"error":{"code":"` + errcode.RequestTimeout + `","message":"the request body was not received in time (see --body-timeout)"}}`
	bodyReadBody    = `{"error":{"code":"` + errcode.InvalidRequest + `","message":"the request body could not be read"}}`
)

// Limits configures Limit.
type Limits struct {
	// MaxInFlight caps the requests served at once. Beyond it, a request is
	// answered at once with 503 "overloaded" and Retry-After: 1, instead of
	// queueing without bound (memory) or timing out (latency): the gateway
	// can retry or fail over, and a denial is never mistaken for an allow.
	// <= 0: no limit.
	MaxInFlight int
	// OnReject, if set, is called for each request refused as overloaded.
	OnReject func()
	// OnBodyError, if set, is called with the status (408, 400) of each
	// request whose body did not arrive before it took a slot.
	OnBodyError func(status int)
	// BodyBytes: up to this many bytes of a request's body are read before
	// the request takes an in-flight slot, so a client trickling its body
	// holds a connection, not a slot (docs/operations.md "Bounds").
	// 0: the body is read by the handler, inside its slot.
	BodyBytes int64
	// BodyTimeout is the time a client has, from the end of its headers, to
	// send those bytes; past it the request is answered 408 request_timeout
	// and the connection closed. 0: the server's read timeout alone.
	BodyTimeout time.Duration
	// ReadTimeout is the deadline given to the rest of a body longer than
	// BodyBytes, counted from the end of the first BodyBytes (the handler
	// may set its own, as snapshot uploads do). 0: none.
	ReadTimeout time.Duration
}

// Limit serves h within l: it reads the start of the body (l.BodyBytes)
// under its own deadline, then takes an in-flight slot for the handler.
func Limit(h http.Handler, l Limits) http.Handler {
	var slots inFlight
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.BodyBytes > 0 && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			if !preread(w, r, l) {
				return
			}
		}
		if l.MaxInFlight <= 0 {
			h.ServeHTTP(w, r)
			return
		}
		if !slots.take(int64(l.MaxInFlight)) {
			if l.OnReject != nil {
				l.OnReject()
			}
			w.Header().Set("Retry-After", "1")
			writeRaw(w, http.StatusServiceUnavailable, overloadedBody)
			return
		}
		defer slots.release()
		h.ServeHTTP(w, r)
	})
}

// inFlight counts the requests holding a slot of Limit. It admits exactly
// what a buffered channel of max slots would (a request is refused only when
// max are in flight), at the cost of one atomic compare-and-swap to take a
// slot and one atomic add to give it back, instead of a channel's lock taken
// twice (BENCHMARKS.md, "Session 6: the fixed-rate gap").
type inFlight struct{ n atomic.Int64 }

// take takes a slot if fewer than max are taken.
func (f *inFlight) take(max int64) bool {
	for {
		n := f.n.Load()
		if n >= max {
			return false
		}
		if f.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release gives a slot back.
func (f *inFlight) release() { f.n.Add(-1) }

// preread reads up to l.BodyBytes+1 bytes of r's body within l.BodyTimeout
// and puts them back in front of the rest. It answers the request itself
// and returns false when the body does not arrive.
func preread(w http.ResponseWriter, r *http.Request, l Limits) bool {
	rc := http.NewResponseController(w)
	if l.BodyTimeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(l.BodyTimeout))
	}
	limit := l.BodyBytes + 1 // one more tells a body over BodyBytes
	if r.ContentLength > 0 && r.ContentLength < limit {
		limit = r.ContentLength
	}
	// The buffer grows as bytes come, never by what Content-Length announces.
	buf, err := readUpTo(r.Body, limit)
	if err != nil {
		w.Header().Set("Connection", "close")
		status, body := http.StatusBadRequest, bodyReadBody
		if isTimeout(err) {
			status, body = http.StatusRequestTimeout, bodyTimeoutBody
		}
		if l.OnBodyError != nil {
			l.OnBodyError(status)
		}
		writeRaw(w, status, body)
		return false
	}
	if int64(len(buf)) < limit || r.ContentLength == int64(len(buf)) {
		// The whole body: nothing more is read from the connection by this
		// request, so no deadline applies to it (the server sets the next
		// request's own). net/http has already cleared the body's deadline:
		// the read that met the body's end started its background read
		// (connReader.startBackgroundRead), which clears the connection's
		// read deadline first, so that a handler running past --body-timeout
		// keeps its context (TestLimitWholeBodyOutlivesItsDeadline). Not
		// setting it again saves a timer update per request (BENCHMARKS.md,
		// "Session 6: the fixed-rate gap").
		r.Body = &wholeBody{b: buf}
		return true
	}
	// A body longer than BodyBytes: the rest is read by the handler.
	var deadline time.Time
	if l.ReadTimeout > 0 {
		deadline = time.Now().Add(l.ReadTimeout)
	}
	_ = rc.SetReadDeadline(deadline)
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	return true
}

// readUpTo reads r until EOF or limit bytes, into a buffer that grows as
// bytes come (from 512 bytes).
func readUpTo(r io.Reader, limit int64) ([]byte, error) {
	buf := make([]byte, 0, min(limit, 512)+1)
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):int(min(int64(cap(buf)), limit))])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// wholeBody is a request body Limit has read whole. A handler may read it,
// or take its bytes (readBody) instead of copying them again.
type wholeBody struct {
	b   []byte
	off int
}

func (wb *wholeBody) Read(p []byte) (int, error) {
	if wb.off >= len(wb.b) {
		return 0, io.EOF
	}
	n := copy(p, wb.b[wb.off:])
	wb.off += n
	return n, nil
}

func (wb *wholeBody) Close() error { return nil }

// take returns the whole body when none of it was read yet and it is at
// most limit bytes long (then it counts as read).
func (wb *wholeBody) take(limit int64) ([]byte, bool) {
	if wb.off != 0 || int64(len(wb.b)) > limit {
		return nil, false
	}
	wb.off = len(wb.b)
	return wb.b, true
}

// writeRaw writes a JSON body that is already encoded.
func writeRaw(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}
