package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/strictjson"
)

// errorReply is the error body of docs/reference.md §2.6.
type errorReply struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Index   *int   `json:"index"`
		Line    *int   `json:"line"`
	} `json:"error"`
}

func decodeError(tb testing.TB, body []byte) errorReply {
	tb.Helper()
	var e errorReply
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" {
		tb.Fatalf("not an error body: %q (%v)", body, err)
	}
	return e
}

// TestStrictDecisionBodies: a decision body with a key given twice
// (encoding/json keeps the last) or spelt in another case (encoding/json
// matches any case) is 400 invalid_request naming the key, on every decision
// endpoint; the Data API refuses a key given twice in its input too.
func TestStrictDecisionBodies(t *testing.T) {
	ts := newTestServer(t, nil)
	cases := []struct {
		name, path, body, want string
	}{
		{"subject twice", "/v1/decision", `{"subject":"u-1","subject":"u-admin","action":"view","resource":{"type":"contact","id":"c-1"}}`, `the key "subject" is given twice`},
		{"subject in upper case", "/v1/decision", `{"SUBJECT":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}`, `the key "SUBJECT" must be spelt "subject"`},
		{"resource id twice", "/v1/decision", `{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1","id":"c-2"}}`, `the key "id" is given twice in resource`},
		{"escaped key twice", "/v1/decision", `{"subject":"u-1","subj\u0065ct":"u-2","action":"view","resource":{"type":"contact","id":"c-1"}}`, `the key "subject" is given twice`},
		{"checks twice", "/v1/decisions", `{"subject":"u-1","checks":[],"checks":[{"action":"view","resource":{"type":"contact","id":"c-1"}}]}`, `the key "checks" is given twice`},
		{"a check's key in another case", "/v1/decisions", `{"subject":"u-1","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"}},{"Action":"view","resource":{"type":"contact","id":"c-1"}}]}`, `the key "Action" in checks[1] must be spelt "action"`},
		{"input twice", "/v1/data/crmauthz/decision", `{"input":{},"input":{"subject":"u-1"}}`, `the key "input" is given twice`},
		{"input in upper case", "/v1/data/crmauthz/decision", `{"INPUT":{"subject":"u-1"}}`, `the key "INPUT" must be spelt "input"`},
		{"a key twice in the input", "/v1/data/crmauthz/decision", `{"input":{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1","id":"c-2"}}}`, `the key "id" is given twice in input.resource`},
		{"min_seq negative", "/v1/decision", `{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":-1}`, `min_seq must be a non-negative integer, not -1`},
		{"min_seq a fraction", "/v1/decisions", `{"subject":"u-1","checks":[],"min_seq":2.5}`, `min_seq must be a non-negative integer, not 2.5`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(ts.decision, http.MethodPost, tc.path, tc.body, nil)
			e := decodeError(t, rec.Body.Bytes())
			if rec.Code != 400 || e.Error.Code != "invalid_request" || !strings.Contains(e.Error.Message, tc.want) {
				t.Fatalf("%d %s, want 400 invalid_request with %q", rec.Code, rec.Body, tc.want)
			}
		})
	}
	t.Run("keys in another case are not a duplicate in a free-form input", func(t *testing.T) {
		rec := serve(ts.decision, http.MethodPost, "/v1/data/crmauthz/decision", `{"input":{"subject":"u-1","Subject":"u-2","action":"view","resource":{"type":"contact","id":"c-1"}}}`, nil)
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	})
}

// TestStrictReplicationBodies: over HTTP, a batch with a key given twice is
// 422 invalid_event with the event's index (a batch with user_id twice once
// deleted the wrong user), a snapshot line 422 with its line, and nothing is
// applied.
func TestStrictReplicationBodies(t *testing.T) {
	ts := newTestServer(t, nil)
	auth := map[string]string{"Authorization": "Bearer tok"}
	applyJSON(t, ts,
		`{"seq":1,"op":"user.upsert","user":{"id":"u-1","role":"user","location_ids":["l"]}}`,
		`{"seq":2,"op":"user.upsert","user":{"id":"u-2","role":"user","location_ids":["l"]}}`)

	rec := serve(ts.admin, http.MethodPost, "/v1/replication/events",
		`{"events":[{"seq":3,"op":"user.delete","user_id":"u-1","user_id":"u-2"}]}`, auth)
	e := decodeError(t, rec.Body.Bytes())
	if rec.Code != 422 || e.Error.Code != "invalid_event" || e.Error.Index == nil || *e.Error.Index != 0 ||
		!strings.Contains(e.Error.Message, `the key "user_id" is given twice`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	rec = serve(ts.admin, http.MethodPost, "/v1/replication/events",
		`{"events":[{"seq":3,"op":"user.delete","user_id":"u-9"},{"seq":4,"op":"user.delete","User_Id":"u-2"}]}`, auth)
	e = decodeError(t, rec.Body.Bytes())
	if rec.Code != 422 || e.Error.Index == nil || *e.Error.Index != 1 || !strings.Contains(e.Error.Message, `"User_Id" must be spelt "user_id"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}

	rec = serve(ts.admin, http.MethodPut, "/v1/replication/snapshot",
		"{\"seq\":9}\n{\"user\":{\"id\":\"u-1\",\"role\":\"user\",\"role\":\"admin\",\"location_ids\":[]}}\n", auth)
	e = decodeError(t, rec.Body.Bytes())
	if rec.Code != 422 || e.Error.Code != "invalid_snapshot" || e.Error.Line == nil || *e.Error.Line != 2 ||
		!strings.Contains(e.Error.Message, `the key "role" is given twice in user`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if seq := ts.ix.AppliedSeq(); seq != 2 {
		t.Fatalf("applied_seq %d, want 2: something was applied", seq)
	}
	if n := ts.ix.Counts().Users; n != 2 {
		t.Fatalf("%d users, want both still there", n)
	}
}

// rawRequest sends head and then body over a real TCP connection to srv,
// closes the sending side (the client is gone mid-upload when body is
// shorter than the Content-Length in head) and returns the response.
func rawRequest(tb testing.TB, srv *httptest.Server, head, body string) (int, []byte) {
	tb.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s\r\n\r\n%s", head, body); err != nil {
		tb.Fatal(err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		tb.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, []byte(b.String())
}

// TestTruncatedUploads: an upload cut off before its Content-Length is 400
// truncated (a snapshot was a 500 "unexpected EOF"), and the index is as it
// was.
func TestTruncatedUploads(t *testing.T) {
	ts := newTestServer(t, nil)
	applyJSON(t, ts, `{"seq":1,"op":"user.upsert","user":{"id":"u-1","role":"user","location_ids":["l"]}}`)
	srv := httptest.NewServer(ts.admin)
	defer srv.Close()
	snapshot := "{\"seq\":9}\n{\"user\":{\"id\":\"u-7\",\"role\":\"user\",\"location_ids\":[]}}\n{\"user\":{\"id\":\"u-"
	batch := `{"events":[{"seq":2,"op":"user.delete","user_id":"u-1"}`
	for _, tc := range []struct {
		name, method, path, body string
	}{
		{"snapshot", http.MethodPut, "/v1/replication/snapshot", snapshot},
		{"snapshot cut at a line's end", http.MethodPut, "/v1/replication/snapshot", "{\"seq\":9}\n"},
		{"batch", http.MethodPost, "/v1/replication/events", batch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: crmauthz\r\nAuthorization: Bearer tok\r\nContent-Length: %d", tc.method, tc.path, len(tc.body)+100)
			code, body := rawRequest(t, srv, head, tc.body)
			e := decodeError(t, body)
			if code != 400 || e.Error.Code != "truncated" {
				t.Fatalf("%d %s, want 400 truncated", code, body)
			}
			if seq, users := ts.ix.AppliedSeq(), ts.ix.Counts().Users; seq != 1 || users != 1 {
				t.Fatalf("applied_seq %d, %d users after a cut-off upload; want 1, 1", seq, users)
			}
		})
	}
	t.Run("whole upload", func(t *testing.T) {
		body := "{\"seq\":9}\n{\"user\":{\"id\":\"u-7\",\"role\":\"user\",\"location_ids\":[]}}\n"
		head := fmt.Sprintf("PUT /v1/replication/snapshot HTTP/1.1\r\nHost: crmauthz\r\nAuthorization: Bearer tok\r\nContent-Length: %d", len(body))
		if code, reply := rawRequest(t, srv, head, body); code != 200 || ts.ix.AppliedSeq() != 9 {
			t.Fatalf("%d %s", code, reply)
		}
	})
}

// BenchmarkDecisionBody is the decoding of a /v1/decision body: the plain
// shape the hand-written parser takes, and one it leaves to the strict
// decoder (an escape sequence in a string).
func BenchmarkDecisionBody(b *testing.B) {
	// strict: the plain body through internal/strictjson alone, to see what
	// the hand-written parser saves.
	b.Run("strict", func(b *testing.B) {
		body := []byte(`{"subject":"u-1","action":"edit","resource":{"type":"contact","id":"c-1"},"target":"u-2","min_seq":42}`)
		b.ReportAllocs()
		for b.Loop() {
			var req decisionRequest
			if err := strictjson.Unmarshal(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range []struct{ name, body string }{
		{"fast", `{"subject":"u-1","action":"edit","resource":{"type":"contact","id":"c-1"},"target":"u-2","min_seq":42}`},
		{"fallback", `{"subject":"u-\u0031","action":"edit","resource":{"type":"contact","id":"c-1"},"target":"u-2","min_seq":42}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := []byte(bc.body)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeDecisionBody(body, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
