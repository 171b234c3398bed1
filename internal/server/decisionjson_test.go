package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/policy"
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
	`{"subject":"u-1","action":"view","resource":{}}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact"},"target":"u-2"}`,
	`{"subject":"","action":"","resource":{"type":"","id":""},"target":""}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"target":null}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}` + "\t\r\n }",
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1",}}`,
	`{"subject":"u-1","action":"view","resource":{,"type":"contact"}}`,
	`{,"subject":"u-1"}`,
	`{"subject":"u-1",,"action":"view"}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"target":"u-2","target":"u-3"}`,
	`{"subject":"u-1","min_seq":1,"min_seq":2}`,
	`{"subject":"u-1" : "x"}`,
	`{"subject"}`,
	`{"subject":"u-1","action":"view","resource":{"x":}}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1","x":}}`,
	`{"subject":"u-1","action":"view","resource":{"type":"contact","x":,"id":"c-1"}}`,
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
	`{"subject":"u-1","checks":[{}]}`,
	`{"subject":"","checks":[]}`,
	`{"subject":"u-1","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"}},]}`,
	`{"subject":"u-1","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"}} {"action":"edit"}]}`,
	`{"subject":"u-1","checks":[{"action":"view","resource":{"type":"contact","id":"c-1","id":"c-2"}}]}`,
	`{"subject":"u-1","checks":[{"action":"view","target":"u-2","target":"u-3"}]}`,
	`{"subject":"u-1","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"},"target":""}],"min_seq":7}`,
	`{"subject":"u-1","checks":[,]}`,
	`{"subject":"u-1","checks":[{,}]}`,
	`{"subject":"u-1","checks":[{"action":"view","resource":{"x":}}]}`,
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

// checkDecisionBody: decodeDecisionBody gives the error the strict decoder
// alone gives, the fields of the struct it decodes, and the same input or
// 400 from them.
func checkDecisionBody(t testing.TB, body []byte) {
	t.Helper()
	got, gotErr := decodeDecisionBody(append([]byte(nil), body...), nil)
	var strict decisionRequest
	wantErr := strictjson.Unmarshal(body, &strict)
	want := decisionBody{subject: strict.Subject, check: fieldsOf(strict.Action, strict.Resource, strict.Target), minSeq: strict.MinSeq}
	if strictErr(gotErr) != strictErr(wantErr) || !reflect.DeepEqual(got, want) {
		t.Errorf("body %q:\n got %+v %s\nwant %+v %s", body, got, strictErr(gotErr), want, strictErr(wantErr))
	}
	if gotErr == nil {
		checkInput(t, body, got.subject, "", got.check, strict.Action, strict.Resource, strict.Target)
	}
}

func checkBatchBody(t testing.TB, body []byte) {
	t.Helper()
	got, gotErr := decodeBatchBody(append([]byte(nil), body...), nil)
	var strict batchRequest
	wantErr := strictjson.Unmarshal(body, &strict)
	if strictErr(gotErr) != strictErr(wantErr) || got.subject != strict.Subject || got.minSeq != strict.MinSeq ||
		(got.checks == nil) != (strict.Checks == nil) || len(got.checks) != len(strict.Checks) {
		t.Fatalf("body %q:\n got %+v %s\nwant %+v %s", body, got, strictErr(gotErr), strict, strictErr(wantErr))
	}
	for i, ch := range strict.Checks {
		if want := fieldsOf(ch.Action, ch.Resource, ch.Target); got.checks[i] != want {
			t.Errorf("body %q: check %d is %+v, want %+v", body, i, got.checks[i], want)
		}
		if gotErr == nil {
			checkInput(t, body, got.subject, "checks[0].", got.checks[i], ch.Action, ch.Resource, ch.Target)
		}
	}
}

// checkInput: the input (or the 400) made of c is the one the handler made
// of the strict decoder's fields before (toInputBefore).
func checkInput(t testing.TB, body []byte, subject, where string, c checkFields, action string, res *resourceRef, target *string) {
	t.Helper()
	got, gotErr := c.input(subject, where)
	want, wantErr := toInputBefore(subject, action, res, target, where)
	if got != want || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Errorf("body %q: input %+v %v, want %+v %v", body, got, gotErr, want, wantErr)
	}
}

// toInputBefore is how the handler checked a request's fields before they
// were read into checkFields (the strict decoder's types).
func toInputBefore(subject, action string, res *resourceRef, target *string, where string) (policy.Input, error) {
	switch {
	case subject == "":
		return policy.Input{}, invalid("subject is missing or empty")
	case action == "":
		return policy.Input{}, invalid("%saction is missing or empty", where)
	case res == nil:
		return policy.Input{}, invalid("%sresource is missing", where)
	case res.Type == "":
		return policy.Input{}, invalid("%sresource.type is missing or empty", where)
	case res.ID == "":
		return policy.Input{}, invalid("%sresource.id is missing or empty", where)
	case target != nil && *target == "":
		return policy.Input{}, invalid("%starget is empty (leave it out when there is none)", where)
	}
	in := policy.Input{Subject: subject, Action: action, ResourceType: res.Type, ResourceID: res.ID}
	if target != nil {
		in.Target, in.HasTarget = *target, true
	}
	return in, nil
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
		_, err := decodeDecisionBody([]byte(tc.prefix), mbe)
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

// TestDecodeBodyMutations: every body near the table's — a run of up to six
// bytes cut out, or a token put in, anywhere — decodes as the strict decoder
// alone decodes it (a systematic complement to the fuzz tests, which took
// `"resource":{"x":}` for long).
func TestDecodeBodyMutations(t *testing.T) {
	inserts := []string{`"`, `:`, `,`, `{`, `}`, `[`, `]`, `"x":`, `null`, `1`, ` `, `\`}
	mutations := func(body string, check func(testing.TB, []byte)) {
		for i := 0; i < len(body); i++ {
			for n := 1; n <= 6 && i+n <= len(body); n++ {
				check(t, []byte(body[:i]+body[i+n:]))
			}
			for _, in := range inserts {
				check(t, []byte(body[:i]+in+body[i:]))
			}
		}
	}
	for _, body := range decisionBodies {
		mutations(body, checkDecisionBody)
	}
	for _, body := range batchBodies {
		mutations(body, checkBatchBody)
	}
}
