package mapping

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    func(*Mapping)
		wantErr string
	}{
		{name: "empty is the default schema", yaml: "", want: func(*Mapping) {}},
		{name: "rename one table and column", yaml: "contacts: {table: app.people, owner: assignee}\n",
			want: func(m *Mapping) { m.Contacts.Table = "app.people"; m.Contacts.Owner = "assignee" }},
		{name: "followers renamed", yaml: "followers:\n  table: watchers\n  user_id: watcher\n",
			want: func(m *Mapping) { m.Followers.Table = "watchers"; m.Followers.UserID = "watcher" }},
		{name: "empty value keeps the default", yaml: "users: {table: \"\"}\n", want: func(*Mapping) {}},
		{name: "unknown top key", yaml: "leads: {table: x}\n", wantErr: "unknown field"},
		{name: "unknown column key", yaml: "users: {email: e}\n", wantErr: "unknown field"},
		{name: "sql text in a name", yaml: "contacts: {table: \"x; drop table y\"}\n", wantErr: "not a table name"},
		{name: "quote in a column", yaml: "contacts: {owner: \"a\\\"b\"}\n", wantErr: "not a plain identifier"},
		{name: "two dots", yaml: "contacts: {table: a.b.c}\n", wantErr: "not a table name"},
		{name: "same table twice", yaml: "opportunities: {table: crm_contacts}\n", wantErr: "also the table of"},
		{name: "same column twice", yaml: "contacts: {owner: id}\n", wantErr: "also contacts.id"},
		{name: "contact_id on contacts", yaml: "contacts: {contact_id: c}\n", wantErr: "only opportunities"},
		{name: "not yaml", yaml: "users: [\n", wantErr: "invalid mapping"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			tc.want(&want)
			if got != want {
				t.Fatalf("Parse =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestValidateErrorsWrapErrInvalid(t *testing.T) {
	m := Default()
	m.Users.Role = "1role"
	if err := m.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate = %v, want ErrInvalid", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(p, []byte("users: {table: people}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := Load(p)
	if err != nil || m.Users.Table != "people" {
		t.Fatalf("Load = %+v, %v", m.Users, err)
	}
	if m, err := Load(""); err != nil || m != Default() {
		t.Fatalf("Load(\"\") = %+v, %v", m, err)
	}
	if _, err := Load(filepath.Join(dir, "absent.yaml")); err == nil {
		t.Fatal("Load of an absent file succeeded")
	}
}

func TestRecordsAndSplit(t *testing.T) {
	m := Default()
	if r, ok := m.Records("opportunity"); !ok || r.ContactID != "contact_id" {
		t.Fatalf("Records(opportunity) = %+v, %v", r, ok)
	}
	if _, ok := m.Records("lead"); ok {
		t.Fatal("Records(lead) found a table")
	}
	if s, n := SplitTable("app.people"); s != "app" || n != "people" {
		t.Fatalf("SplitTable = %q, %q", s, n)
	}
	if s, n := SplitTable("people"); s != "" || n != "people" {
		t.Fatalf("SplitTable = %q, %q", s, n)
	}
}
