package policy

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func httpFacts() *memFacts {
	return &memFacts{
		users: map[string][]byte{
			"u-owner": []byte(`{"id":"u-owner","role":"user","location_ids":["loc-1"],"assigned_data_only":true}`),
			"u-fol":   []byte(`{"id":"u-fol","role":"user","location_ids":["loc-1"],"assigned_data_only":true}`),
			"u-far":   []byte(`{"id":"u-far","role":"user","location_ids":["loc-2"],"assigned_data_only":true}`),
		},
		records: map[string][]byte{
			"contact\x00c-1": []byte(`{"type":"contact","id":"c-1","location_id":"loc-1","owner":"u-owner","followers":["u-fol"]}`),
		},
	}
}

func mustBody(tb testing.TB, s string) ast.Value {
	tb.Helper()
	v, err := ParseBody([]byte(s))
	if err != nil {
		tb.Fatalf("ParseBody(%s): %v", s, err)
	}
	return v
}

func TestDecideHTTP(t *testing.T) {
	e := newDefaultEngine(t)
	facts := httpFacts()
	cases := []struct {
		name string
		in   HTTPInput
		want HTTPDecision
	}{
		{"owner views", HTTPInput{Subject: "u-owner", Method: "GET", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"}},
			HTTPDecision{Allow: true, Reason: "owner", Action: "view", ResourceType: "contact", ResourceID: "c-1", Targets: []string{}}},
		{"follower edits", HTTPInput{Subject: "u-fol", Method: "PUT", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"},
			Body: mustBody(t, `{"firstName":"Ann"}`)},
			HTTPDecision{Allow: true, Reason: "follower", Action: "edit", ResourceType: "contact", ResourceID: "c-1", Targets: []string{}}},
		{"follower changes the owner", HTTPInput{Subject: "u-fol", Method: "PUT", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"},
			Body: mustBody(t, `{"assignedTo":"u-fol"}`)},
			HTTPDecision{Allow: false, Reason: "followers_cannot_change_owner", Action: "change_owner", ResourceType: "contact", ResourceID: "c-1", Targets: []string{"u-fol"}}},
		{"owner adds a follower of another location", HTTPInput{Subject: "u-owner", Method: "POST", Path: "/contacts/c-1/followers",
			Segments: []string{"contacts", "c-1", "followers"}, Body: mustBody(t, `{"followers":["u-far"]}`)},
			HTTPDecision{Allow: false, Reason: "target_cross_location", Action: "add_follower", ResourceType: "contact", ResourceID: "c-1", Targets: []string{"u-far"}}},
		{"unmapped", HTTPInput{Subject: "u-owner", Method: "GET", Path: "/users", Segments: []string{"users"}},
			HTTPDecision{Allow: false, Reason: "unmapped_route"}},
		{"invalid body", HTTPInput{Subject: "u-owner", Method: "PUT", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"},
			Body: mustBody(t, `[1]`)},
			HTTPDecision{Allow: false, Reason: "invalid_body", Message: "the body is not a JSON object"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, rev, err := e.DecideHTTP(context.Background(), facts, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if rev != e.Revision() {
				t.Errorf("revision %q, want %q", rev, e.Revision())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecideHTTPFailsClosed(t *testing.T) {
	readErr := errors.New("disk on fire")
	t.Run("facts read error", func(t *testing.T) {
		e := newDefaultEngine(t)
		_, _, err := e.DecideHTTP(context.Background(), &memFacts{err: readErr},
			HTTPInput{Subject: "u-owner", Method: "GET", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"}})
		if !errors.Is(err, readErr) && (err == nil || !strings.Contains(err.Error(), "disk on fire")) {
			t.Fatalf("err = %v, want the read error", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		e := newDefaultEngine(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := e.DecideHTTP(ctx, httpFacts(), HTTPInput{Subject: "u-owner", Method: "GET", Segments: []string{"contacts", "c-1"}}); err == nil {
			t.Fatal("no error for a canceled context")
		}
	})

	base := defaultPolicyFiles(t, false)
	shapes := []struct {
		name string
		rule string // "" leaves http_decision undefined (a policy without routes)
		want string
	}{
		{"no http_decision", "", "undefined"},
		{"not an object", `http_decision := true`, "want an object"},
		{"no allow", `http_decision := {"reason": "x"}`, `"allow"`},
		{"allow not a boolean", `http_decision := {"allow": "yes", "reason": "x"}`, `"allow"`},
		{"no reason", `http_decision := {"allow": true}`, `"reason"`},
		{"empty reason", `http_decision := {"allow": true, "reason": ""}`, `"reason"`},
		{"action not a string", `http_decision := {"allow": true, "reason": "x", "action": 1}`, `"action"`},
		{"resource not an object", `http_decision := {"allow": true, "reason": "x", "resource": "c-1"}`, `"resource"`},
		{"resource without id", `http_decision := {"allow": true, "reason": "x", "resource": {"type": "contact"}}`, `"resource"`},
		{"targets not a list", `http_decision := {"allow": true, "reason": "x", "targets": "u-1"}`, `"targets"`},
		{"targets of numbers", `http_decision := {"allow": true, "reason": "x", "targets": [1]}`, `"targets"`},
		{"message not a string", `http_decision := {"allow": false, "reason": "x", "message": 1}`, `"message"`},
		{"several results", "http_decision := {\"allow\": true, \"reason\": \"x\"} if input.method == \"GET\"\n\nhttp_decision := {\"allow\": false, \"reason\": \"y\"} if input.subject == \"u\"", "conflict"},
	}
	for _, tc := range shapes {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{}
			for k, v := range base {
				files[k] = v
			}
			if tc.rule != "" {
				files["http.rego"] = "package crmauthz\n\n" + tc.rule + "\n"
			}
			writeFiles(t, dir, files)
			e, err := New(Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			d, _, err := e.DecideHTTP(context.Background(), httpFacts(),
				HTTPInput{Subject: "u", Method: "GET", Path: "/contacts/c-1", Segments: []string{"contacts", "c-1"}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %+v, %v; want an error containing %q", d, err, tc.want)
			}
			if tc.rule == "" && !errors.Is(err, ErrUndefinedHTTPDecision) {
				t.Fatalf("err = %v, want ErrUndefinedHTTPDecision", err)
			}
		})
	}
}

func TestParseBody(t *testing.T) {
	deep := strings.Repeat("[", MaxBodyDepth+1) + strings.Repeat("]", MaxBodyDepth+1)
	okDeep := strings.Repeat("[", MaxBodyDepth) + strings.Repeat("]", MaxBodyDepth)
	cases := []struct {
		name string
		body string
		want string // "" for ok, else a part of the error
	}{
		{"object", `{"assignedTo":"u-1","n":1.5,"ok":true,"x":null}`, ""},
		{"nested objects with the same keys", `{"a":{"a":1},"b":[{"a":1},{"a":2}]}`, ""},
		{"array", `[1,"2",{"k":"v"}]`, ""},
		{"string", `"x"`, ""},
		{"deep but within the limit", okDeep, ""},
		{"duplicate key", `{"assignedTo":"u-1","assignedTo":"u-2"}`, "twice"},
		{"duplicate key after a nested value", `{"a":{"b":1},"c":[1,2],"a":3}`, "twice"},
		{"duplicate key in a nested object", `{"x":[{"k":1,"k":2}]}`, "twice"},
		{"duplicate key after escapes", `{"assignedTo":"u-1","assigned\u0054o":"u-2"}`, "twice"},
		{"not JSON", `assignedTo=u-1`, "not JSON"},
		{"trailing data", `{} {}`, "not JSON"},
		{"truncated", `{"assignedTo":"u-`, "not JSON"},
		{"not UTF-8", "{\"a\":\"\xff\"}", "UTF-8"},
		{"too deep", deep, "deeper"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseBody([]byte(tc.body))
			if tc.want == "" {
				if err != nil || v == nil {
					t.Fatalf("ParseBody = %v, %v", v, err)
				}
				want, perr := ast.ParseTerm(tc.body)
				if perr == nil && ast.Compare(v, want.Value) != 0 {
					t.Fatalf("ParseBody = %v, want %v", v, want.Value)
				}
				return
			}
			var be *BodyError
			if !errors.As(err, &be) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a *BodyError containing %q", err, tc.want)
			}
		})
	}
}
