package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/strictjson"
)

// decisionBodies are request bodies of every kind: the plain shape the
// hand-written parser takes, and everything it must leave to encoding/json.
var decisionBodies = []string{
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}`,
	` { "subject" : "u-1" , "action" : "edit" , "resource" : { "id" : "c-1" , "type" : "contact" } , "target" : "u-2" , "min_seq" : 42 } ` + "\n",
	`{"resource":{"type":"contact","id":"c-1"},"subject":"u-é","action":"view"}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":0}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":18446744073709551615}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":18446744073709551616}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":01}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":1.0}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":1e3}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":-1}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":"1"}`,
	`{}`,
	``,
	`   `,
	`null`,
	`[]`,
	`"x"`,
	`{"subject": "u-1",`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}} x`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}{}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"admin":true}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1","x":1}}`,
	`{"Subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}`,
	`{"SUBJECT":"u-1","ACTION":"view","resource":{"TYPE":"contact","Id":"c-1"}}`,
	`{"subject":"u-1","subject":"u-2","action":"view","resource":{"type":"contact","id":"c-1"}}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"resource":{"type":"opportunity","id":"o-1"}}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","type":"opportunity","id":"c-1"}}`,
	`{"subject":7,"action":"view","resource":{"type":"contact","id":"c-1"}}`,
	`{"subject":null,"action":"view","resource":null,"target":null}`,
	`{"subject":"u-1","action":"view","resource":"c-1"}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"target":""}`,
	`{"subject":"u-\u0031","action":"view","resource":{"type":"contact","id":"c-1"}}`,
	`{"subject":"u-\"1","action":"view","resource":{"type":"contact","id":"c-1"}}`,
	"{\"subject\":\"u-\x01\",\"action\":\"view\",\"resource\":{\"type\":\"contact\",\"id\":\"c-1\"}}",
	"{\"subject\":\"u-\xff\",\"action\":\"view\",\"resource\":{\"type\":\"contact\",\"id\":\"c-1\"}}",
	"\xef\xbb\xbf{\"subject\":\"u-1\"}",
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},}`,
	`{"subject":"u-1" "action":"view"}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}]`,
	`{"su\bject":"u-1"}`,
	`{"subject":"u-1","action":true}`,
}

var batchBodies = []string{
	`{"subject":"u-1","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"}},{"action":"edit","resource":{"type":"opportunity","id":"o-1"},"target":"u-2"}]}`,
	`{"checks":[],"subject":"u-1","min_seq":3}`,
	`{"subject":"u-1"}`,
	`{"subject":"u-1","checks":null}`,
	`{"subject":"u-1","checks":{}}`,
	`{"subject":"u-1","checks":[{"resource":{"type":"contact","id":"c-1"}}]}`,
	`{"subject":"u-1","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"},"subject":"u-2"}]}`,
	`{"subject":"u-1","checks":[{"action":"view","action":"edit"}]}`,
	`{"subject":"u-1","checks":[1,2]}`,
	`{"subject":"u-1","checks":[{"action":"view"},]}`,
	`{"subject":"u-1","checks":[{"action":"view"}],"checks":[]}`,
	`{"subject":"u-1","checks":[{"action":"view"}]} {}`,
	`{"subject":"u-1","checks":[{"Action":"view"}]}`,
}

// strictErr describes an error by its type and message.
func strictErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%T: %v", err, err)
}

// TestDecodeDecisionBodyLikeEncodingJSON: for every body, the hand-written
// path gives the struct and the error the strict decoder alone gives.
func TestDecodeDecisionBodyLikeEncodingJSON(t *testing.T) {
	for _, body := range decisionBodies {
		checkDecisionBody(t, []byte(body))
	}
	for _, body := range batchBodies {
		checkBatchBody(t, []byte(body))
	}
}

func checkDecisionBody(t *testing.T, body []byte) {
	t.Helper()
	var got, want decisionRequest
	gotErr := decodeDecisionBody(body, nil, &got)
	wantErr := strictjson.Unmarshal(body, &want)
	if strictErr(gotErr) != strictErr(wantErr) || !reflect.DeepEqual(got, want) {
		t.Errorf("body %q:\n got %+v %s\nwant %+v %s", body, got, strictErr(gotErr), want, strictErr(wantErr))
	}
}

func checkBatchBody(t *testing.T, body []byte) {
	t.Helper()
	var got, want batchRequest
	gotErr := decodeBatchBody(body, nil, &got)
	wantErr := strictjson.Unmarshal(body, &want)
	if strictErr(gotErr) != strictErr(wantErr) || !reflect.DeepEqual(got, want) {
		t.Errorf("body %q:\n got %+v %s\nwant %+v %s", body, got, strictErr(gotErr), want, strictErr(wantErr))
	}
}

// TestDecodeOverLimit: a body over the limit is 413 when it is well-formed up
// to the limit, and a syntax error before the limit wins, as when the
// decoder read the body itself.
func TestDecodeOverLimit(t *testing.T) {
	mbe := &http.MaxBytesError{Limit: 64}
	for _, tc := range []struct {
		prefix string
		kind   error
		status int
		code   string
	}{
		{`{"subject":"` + strings.Repeat("u", 60), strictjson.ErrTooLarge, 413, "payload_too_large"},
		{`{"subject":"u","subject":"` + strings.Repeat("u", 40), strictjson.ErrTooLarge, 413, "payload_too_large"},
		{`{"subject": 7 x` + strings.Repeat(" ", 60), strictjson.ErrSyntax, 400, "malformed_json"},
	} {
		var req decisionRequest
		err := decodeDecisionBody([]byte(tc.prefix), mbe, &req)
		if !errors.Is(err, tc.kind) {
			t.Errorf("%q: %v, want %v", tc.prefix, err, tc.kind)
		}
		if ae := toAPIError(err); ae.Status != tc.status || ae.Code != tc.code {
			t.Errorf("%q: answered %d %s, want %d %s", tc.prefix, ae.Status, ae.Code, tc.status, tc.code)
		}
	}
}

func FuzzDecodeDecisionBody(f *testing.F) {
	for _, b := range decisionBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkDecisionBody(t, body)
	})
}

func FuzzDecodeBatchBody(f *testing.F) {
	for _, b := range batchBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkBatchBody(t, body)
	})
}

// TestAppendString: the bytes json.Marshal writes for the string.
func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "owner", "not_assigned", `a"b`, `a\b`, "<x>&", "é", "\x00\x1f", "\xff", "\u2028", "tab\t"} {
		want, _ := json.Marshal(s)
		if got := appendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("appendString(%q) = %s, want x%s", s, got, want)
		}
	}
}

// TestDecisionReplyLikeEncodingJSON: the reply written by hand is the bytes
// json.Marshal of decisionResponse would be.
func TestDecisionReplyLikeEncodingJSON(t *testing.T) {
	ts := newTestServer(t, nil)
	rec := serve(ts.decision, http.MethodPost, "/v1/decision", `{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}`, nil)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	var d decisionResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(d)
	if rec.Body.String() != string(want) {
		t.Fatalf("reply %s, want %s", rec.Body, want)
	}
	if d.Allow || d.Reason != "unknown_subject" || d.DecisionID == "" || d.PolicyRevision == "" {
		t.Fatalf("%+v", d)
	}

	rec = serve(ts.decision, http.MethodPost, "/v1/decisions", `{"subject":"u-1","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"}},{"action":"x","resource":{"type":"contact","id":"c-1"}}]}`, nil)
	var br batchResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &br); err != nil || rec.Code != 200 {
		t.Fatalf("%d %s %v", rec.Code, rec.Body, err)
	}
	want, _ = json.Marshal(br)
	if rec.Body.String() != string(want) || len(br.Results) != 2 || br.Results[1].Reason != "unknown_action" {
		t.Fatalf("reply %s, want %s", rec.Body, want)
	}
}
