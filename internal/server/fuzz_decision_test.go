package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// FuzzDecisionRequest sends arbitrary bodies to POST /v1/decision. Whatever
// the input: no panic, no 5xx but 503 index_behind (min_seq); an error carries the error body of docs/reference.md §2.6 and no allow;
// a 200 comes only for a body that is one well-formed JSON object with the
// required fields and no unknown ones (checked here by an independent strict
// decode) and carries a boolean allow and a reason.
func FuzzDecisionRequest(f *testing.F) {
	for _, s := range []string{
		`{"subject":"u-3","action":"view","resource":{"type":"contact","id":"c-1"}}`,
		`{"subject":"u-3","action":"add_follower","resource":{"type":"opportunity","id":"o-0"},"target":"u-8","min_seq":1}`,
		`{"subject":"u-3","action":"view","resource":{"type":"contact","id":"c-1"},"admin":true}`,
		`{"subject":"u-3","action":"view","resource":{"type":"contact","id":"c-1"}} {}`,
		`{"subject":"u-3","action":"view","resource":{"type":"contact"}}`,
		`{"subject":7}`,
		`{"subject":"\u0000","action":"view","resource":{"type":"contact","id":"c-1"}}`,
		`[`, ``, `null`,
		`{"subject":"u-3","action":"view","resource":{"type":"contact","id":"c-1"},"subject":"u-0"}`,
		`{"SUBJECT":"u-3","action":"view","resource":{"type":"contact","id":"c-1"}}`,
		`{"subject":"u-3","action":"view","resource":{"type":"contact","id":"c-1","ID":"c-2"}}`,
	} {
		f.Add([]byte(s))
	}
	w := dataset.New(dataset.Config{Records: 50, Users: 60})
	ts := newTestServer(f, &w)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := serve(ts.decision, http.MethodPost, "/v1/decision", string(body), nil)
		var reply map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &reply); err != nil {
			t.Fatalf("%d: reply is not JSON: %q", rec.Code, rec.Body)
		}
		switch {
		case rec.Code == 200:
			if _, ok := reply["allow"].(bool); !ok {
				t.Fatalf("200 without a boolean allow: %v", reply)
			}
			if r, _ := reply["reason"].(string); r == "" {
				t.Fatalf("200 without a reason: %v", reply)
			}
			if !wellFormed(body) {
				t.Fatalf("200 for a body a strict decoder refuses: %q -> %v", body, reply)
			}
		case rec.Code >= 400 && rec.Code < 500,
			rec.Code == 503 && bytes.Contains(rec.Body.Bytes(), []byte(`"index_behind"`)): // a min_seq ahead of the index
			e, _ := reply["error"].(map[string]any)
			if c, _ := e["code"].(string); c == "" {
				t.Fatalf("%d without an error code: %v", rec.Code, reply)
			}
			if _, ok := reply["allow"]; ok {
				t.Fatalf("an error reply carries allow: %v", reply)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
	})
}

// wellFormed is an independent oracle for a valid decision request.
func wellFormed(body []byte) bool {
	var req struct {
		Subject  *string `json:"subject"`
		Action   *string `json:"action"`
		Resource *struct {
			Type *string `json:"type"`
			ID   *string `json:"id"`
		} `json:"resource"`
		Target *string `json:"target"`
		MinSeq *uint64 `json:"min_seq"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if dec.Decode(&req) != nil {
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return false
	}
	if !exactUniqueKeys(body, map[string]bool{"subject": true, "action": true, "resource": true, "target": true, "min_seq": true, "type": true, "id": true}) {
		return false
	}
	nonEmpty := func(s *string) bool { return s != nil && *s != "" }
	return nonEmpty(req.Subject) && nonEmpty(req.Action) && req.Resource != nil &&
		nonEmpty(req.Resource.Type) && nonEmpty(req.Resource.ID) && (req.Target == nil || *req.Target != "")
}

// exactUniqueKeys walks body with encoding/json's tokenizer: every key of
// every object is one of names, spelt exactly, and given once in its object
// (encoding/json alone keeps the last of two and matches any case).
func exactUniqueKeys(body []byte, names map[string]bool) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		keys   map[string]bool // nil for an array
		expect bool            // the next token is a key
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
		top := len(stack) - 1
		if k, ok := tok.(string); ok && top >= 0 && stack[top].keys != nil && stack[top].expect {
			if !names[k] || stack[top].keys[k] {
				return false
			}
			stack[top].keys[k] = true
			stack[top].expect = false
			continue
		}
		if top >= 0 && stack[top].keys != nil {
			stack[top].expect = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]bool{}, expect: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if n := len(stack) - 1; n >= 0 && stack[n].keys != nil {
				stack[n].expect = true
			}
		}
	}
}
