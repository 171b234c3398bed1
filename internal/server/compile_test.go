package server

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/policies"
)

// ownedRego is a rule OPA's translation can express: a column equal to a
// value of the input, the unknowns declared in its METADATA.
const ownedRego = `package crmauthz

# METADATA
# compile:
#   unknowns: [input.contacts]
owned if input.contacts.owner_id == input.subject

owned if {
	subject.role == "admin"
	input.contacts.location_id in subject.location_ids
}

# METADATA
# compile:
#   unknowns: [input.contacts]
viewable if {
	is_admin(subject)
	input.location_id in subject.location_ids
}

viewable if {
	not is_admin(subject)
	input.subject in input.contacts.followers
}
`

func TestCompileAPI(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"authz.rego", "config.rego"} {
		b, err := policies.FS.ReadFile("crmauthz/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "owned.rego"), []byte(ownedRego), 0o644); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.New(policy.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cfg := newConfig(t, strings.NewReader(filterSnapshot))
	cfg.Engine = eng
	cfg.DataPaths = []string{"crmauthz/owned", "crmauthz/viewable"}
	h := mustNew(t, cfg).DecisionHandler()
	const pg = "application/vnd.opa.sql.postgresql+json"
	tests := []struct {
		name, path, accept, body string
		code                     int
		want                     string // the whole body, or for errors its code
	}{
		{"postgresql", "crmauthz/owned", pg, `{"input": {"subject": "u-1"}}`, 200,
			`{"result":{"query":"WHERE contacts.owner_id = E'u-1'"}}`},
		{"the facts are read", "crmauthz/owned", pg, `{"input": {"subject": "admin"}}`, 200,
			`{"result":{"query":"WHERE (contacts.owner_id = E'admin' OR contacts.location_id IN (E'loc-1'))"}}`},
		{"quotes are escaped as OPA does", "crmauthz/owned", "application/vnd.opa.sql.mysql+json", `{"input": {"subject": "u' OR 1=1 --"}}`, 200,
			`{"result":{"query":"WHERE contacts.owner_id = 'u\\' OR 1=1 --'"}}`},
		{"unknowns in the request", "crmauthz/owned", "application/vnd.opa.sql.sqlite+json", `{"input": {"subject": "u-1"}, "unknowns": ["input.contacts"]}`, 200,
			`{"result":{"query":"WHERE contacts.owner_id = 'u-1'"}}`},
		{"mappings", "crmauthz/owned", pg, `{"input": {"subject": "u-1"}, "options": {"targetSQLTableMappings": {"postgresql": {"contacts": {"$self": "crm_contacts"}}}}}`, 200,
			`{"result":{"query":"WHERE crm_contacts.owner_id = E'u-1'"}}`},
		{"ucast", "crmauthz/owned", "application/vnd.opa.ucast.all+json", `{"input": {"subject": "u-1"}}`, 200,
			`{"result":{"query":{"field":"contacts.owner_id","operator":"eq","type":"field","value":"u-1"}}}`},
		{"multitarget", "crmauthz/owned", multiTarget, `{"input": {"subject": "u-1"}, "options": {"targetDialects": ["sql+sqlserver", "ucast+minimal"]}}`, 200,
			`{"result":{"sqlserver":{"query":"WHERE contacts.owner_id = N'u-1'"},"ucast":{"query":{"field":"contacts.owner_id","operator":"eq","type":"field","value":"u-1"}}}}`},
		{"always: an admin", "crmauthz/viewable", pg, `{"input": {"subject": "admin", "location_id": "loc-1"}}`, 200,
			`{"result":{"query":""}}`},
		{"never: another location", "crmauthz/viewable", pg, `{"input": {"subject": "admin", "location_id": "loc-2"}}`, 200,
			`{}`},
		{"following is beyond OPA's translation", "crmauthz/viewable", pg, `{"input": {"subject": "u' OR 1=1 --", "location_id": "loc-1"}}`, 400,
			"compile_error"},
		{"path not allowed", "crmauthz/decision", pg, `{}`, 403, "path_not_allowed"},
		{"no Accept", "crmauthz/owned", "", `{}`, 406, "invalid_request"},
		{"unknown field", "crmauthz/owned", pg, `{"inputs": {}}`, 400, "invalid_request"},
		{"bad unknown", "crmauthz/owned", pg, `{"unknowns": ["x.y"]}`, 400, "invalid_request"},
		{"multitarget without targets", "crmauthz/owned", multiTarget, `{}`, 400, "invalid_request"},
		{"bad mappings", "crmauthz/owned", pg, `{"input": {"subject": "u-1"}, "options": {"targetSQLTableMappings": {"contacts": {"$self": 5}}}}`, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.accept != "" {
				hdr["Accept"] = tt.accept
			}
			rec := serve(h, http.MethodPost, "/v1/compile/"+tt.path, tt.body, hdr)
			body := strings.TrimSpace(rec.Body.String())
			if rec.Code != tt.code {
				t.Fatalf("%d %s, want %d", rec.Code, body, tt.code)
			}
			if tt.code == 200 {
				if body != tt.want || rec.Header().Get("Content-Type") != tt.accept {
					t.Fatalf("%s (%s)\nwant %s", body, rec.Header().Get("Content-Type"), tt.want)
				}
				return
			}
			if !strings.Contains(body, `"code":"`+tt.want+`"`) {
				t.Fatalf("%s, want code %s", body, tt.want)
			}
		})
	}
}
