package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/crmauthz/crmauthz/policies"
)

// TestListScope: the default policy's list filters through ListScope, and
// the answers it refuses from other policies (fail closed: no list wider
// than the policy says).
func TestListScope(t *testing.T) {
	facts := &memFacts{users: map[string][]byte{
		"adm":  []byte(`{"id":"adm","role":"admin","location_ids":["l1"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":true}`),
		"free": []byte(`{"id":"free","role":"user","location_ids":["l1"],"assigned_data_only":false,"contacts_enabled":true,"opportunities_enabled":true}`),
		"ado":  []byte(`{"id":"ado","role":"user","location_ids":["l1"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":false}`),
	}}
	eng, err := New(Config{EvalTimeout: testEvalTimeout, FS: policies.FS})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in   ListInput
		want string
	}{
		{ListInput{"adm", "contact", "l1"}, ScopeAll},
		{ListInput{"free", "opportunity", "l1"}, ScopeAll},
		{ListInput{"ado", "contact", "l1"}, ScopeAssigned},
		{ListInput{"ado", "opportunity", "l1"}, ScopeNone},
		{ListInput{"adm", "contact", "l2"}, ScopeNone},
		{ListInput{"ghost", "contact", "l1"}, ScopeNone},
	}
	for _, tc := range cases {
		t.Run(tc.in.Subject+"/"+tc.in.Type+"/"+tc.in.LocationID, func(t *testing.T) {
			got, rev, err := eng.ListScope(context.Background(), facts, tc.in)
			if err != nil || got != tc.want || rev != eng.Revision() {
				t.Fatalf("ListScope = %q, %q, %v; want %q", got, rev, err, tc.want)
			}
		})
	}

	t.Run("read errors fail", func(t *testing.T) {
		if s, _, err := eng.ListScope(context.Background(), &memFacts{err: errors.New("disk")}, ListInput{"adm", "contact", "l1"}); err == nil {
			t.Fatalf("ListScope with a failing index = %q, nil", s)
		}
	})

	bad := []struct {
		name, rego, want string
	}{
		{"undefined", `package crmauthz
decision := {"allow": false, "reason": "x"}`, "undefined"},
		{"not a string", `package crmauthz
decision := {"allow": false, "reason": "x"}
list_scope := true`, "want a string"},
		{"another word", `package crmauthz
decision := {"allow": false, "reason": "x"}
list_scope := "everything"`, `"everything"`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(Config{EvalTimeout: testEvalTimeout, FS: fstest.MapFS{"p.rego": {Data: []byte(tc.rego)}}})
			if err != nil {
				t.Fatal(err)
			}
			s, _, err := e.ListScope(context.Background(), facts, ListInput{"adm", "contact", "l1"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ListScope = %q, %v; want an error with %q", s, err, tc.want)
			}
		})
	}
}
