package server

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/refmodel"
	"github.com/crmauthz/crmauthz/policies"
)

type filterReply struct {
	Kind *string `json:"kind"`
	SQL  *struct {
		Where string `json:"where"`
		Args  []any  `json:"args"`
	} `json:"sql"`
	UCAST          map[string]any `json:"ucast"`
	PolicyRevision string         `json:"policy_revision"`
	AppliedSeq     *uint64        `json:"applied_seq"`
	Error          *struct {
		Code       string  `json:"code"`
		Message    string  `json:"message"`
		AppliedSeq *uint64 `json:"applied_seq"`
	} `json:"error"`
}

func getFilter(tb testing.TB, h http.Handler, subject, query string) (int, filterReply) {
	tb.Helper()
	rec := serve(h, http.MethodGet, "/v1/subjects/"+url.PathEscape(subject)+"/filter?"+query, "", nil)
	var r filterReply
	dec := json.NewDecoder(strings.NewReader(rec.Body.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		tb.Fatalf("GET %s/filter?%s: %d, %v: %s", subject, query, rec.Code, err, rec.Body)
	}
	return rec.Code, r
}

const filterSnapshot = `{"seq": 7}
{"user": {"id": "admin", "role": "admin", "location_ids": ["loc-1"]}}
{"user": {"id": "free", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": false}}
{"user": {"id": "u' OR 1=1 --", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}}
{"user": {"id": "nocontacts", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true, "contacts_enabled": false}}
{"record": {"type": "contact", "id": "c-1", "location_id": "loc-1", "owner": "u' OR 1=1 --", "followers": []}}
`

func TestSubjectFilterReplies(t *testing.T) {
	cfg := newConfig(t, strings.NewReader(filterSnapshot))
	h := mustNew(t, cfg).DecisionHandler()
	rev := cfg.Engine.Revision()
	const hostile = "u' OR 1=1 --"
	tests := []struct {
		name, subject, query string
		kind                 string
		where                string // for conditional: the exact SQL
		args                 []any
	}{
		{"admin", "admin", "type=contact&location_id=loc-1", "all", "", nil},
		{"unrestricted", "free", "type=opportunity&location_id=loc-1", "all", "", nil},
		{"another location", "admin", "type=contact&location_id=loc-2", "none", "", nil},
		{"module off", "nocontacts", "type=contact&location_id=loc-1", "none", "", nil},
		{"unknown subject", "ghost", "type=contact&location_id=loc-1", "none", "", nil},
		{"an id the index cannot hold", "a\x00b", "type=contact&location_id=loc-1", "none", "", nil},
		{"postgresql", hostile, "type=contact&location_id=loc-1", "conditional",
			`("crm_contacts"."owner_id" = $1 OR (("crm_contacts"."owner_id" IS NULL OR "crm_contacts"."owner_id" <> $2) AND "crm_contacts"."id" = ANY(ARRAY(SELECT crmauthz_f."record_id" FROM "crm_record_followers" crmauthz_f WHERE crmauthz_f."record_type" = $3 AND crmauthz_f."user_id" = $4))))`,
			[]any{hostile, hostile, "contact", hostile}},
		{"mysql", hostile, "type=opportunity&location_id=loc-1&dialect=mysql", "conditional",
			"((`crm_opportunities`.`owner_id` = ? AND CONVERT(`crm_opportunities`.`owner_id` USING utf8mb4) = CAST(? AS BINARY)) OR ((`crm_opportunities`.`owner_id` IS NULL OR CONVERT(`crm_opportunities`.`owner_id` USING utf8mb4) <> CAST(? AS BINARY)) AND EXISTS (SELECT 1 FROM `crm_record_followers` crmauthz_f WHERE (crmauthz_f.`record_type` = ? AND CONVERT(crmauthz_f.`record_type` USING utf8mb4) = CAST(? AS BINARY)) AND crmauthz_f.`record_id` = `crm_opportunities`.`id` AND (crmauthz_f.`user_id` = ? AND CONVERT(crmauthz_f.`user_id` USING utf8mb4) = CAST(? AS BINARY)))))",
			[]any{hostile, hostile, hostile, "opportunity", "opportunity", hostile, hostile}},
		{"sqlserver", hostile, "type=contact&location_id=loc-1&dialect=sqlserver", "conditional",
			`([crm_contacts].[owner_id] = @p1 OR (([crm_contacts].[owner_id] IS NULL OR [crm_contacts].[owner_id] <> @p2) AND EXISTS (SELECT 1 FROM [crm_record_followers] crmauthz_f WHERE crmauthz_f.[record_type] = @p3 AND crmauthz_f.[record_id] = [crm_contacts].[id] AND crmauthz_f.[user_id] = @p4)))`,
			[]any{hostile, hostile, "contact", hostile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, r := getFilter(t, h, tt.subject, tt.query)
			if code != 200 || r.Kind == nil || *r.Kind != tt.kind || r.PolicyRevision != rev || r.AppliedSeq == nil || *r.AppliedSeq != 7 {
				t.Fatalf("%d %+v, want kind %s at revision %s, seq 7", code, r, tt.kind, rev)
			}
			if tt.kind != "conditional" {
				if r.SQL != nil || r.UCAST != nil {
					t.Fatalf("%+v: a %s filter has no condition", r, tt.kind)
				}
				return
			}
			if r.SQL == nil || r.SQL.Where != tt.where || fmt.Sprint(r.SQL.Args) != fmt.Sprint(tt.args) {
				t.Fatalf("sql %+v\nwant %s %q", r.SQL, tt.where, tt.args)
			}
			if strings.Contains(r.SQL.Where, "1=1") || strings.Contains(r.SQL.Where, "'") {
				t.Fatalf("a value is in the SQL text: %s", r.SQL.Where)
			}
		})
	}
	t.Run("ucast", func(t *testing.T) {
		code, r := getFilter(t, h, hostile, "type=contact&location_id=loc-1&dialect=ucast")
		if code != 200 || r.Kind == nil || *r.Kind != "conditional" || r.SQL != nil || r.UCAST == nil {
			t.Fatalf("%d %+v", code, r)
		}
		b, _ := json.Marshal(r.UCAST)
		for _, want := range []string{`"operator":"or"`, `"field":"crm_contacts.owner_id"`, `"operator":"exists"`, `"field":"crm_record_followers"`,
			`"value":{"field":"crm_contacts.id"}`, `"value":"u' OR 1=1 --"`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("ucast %s has no %s", b, want)
			}
		}
	})
}

func TestSubjectFilterRefusals(t *testing.T) {
	cfg := newConfig(t, strings.NewReader(filterSnapshot))
	cfg.ConsistencyWait = 1
	h := mustNew(t, cfg).DecisionHandler()
	tests := []struct {
		name, subject, query string
		code                 int
		errCode              string
	}{
		{"no type", "admin", "location_id=loc-1", 400, "invalid_request"},
		{"bad type", "admin", "type=invoice&location_id=loc-1", 400, "invalid_request"},
		{"no location", "admin", "type=contact", 400, "invalid_request"},
		{"NUL location", "admin", "type=contact&location_id=a%00b", 400, "invalid_request"},
		{"bad dialect", "admin", "type=contact&location_id=loc-1&dialect=oracle", 400, "invalid_request"},
		{"unknown parameter", "admin", "type=contact&location_id=loc-1&limit=3", 400, "invalid_request"},
		{"repeated", "admin", "type=contact&type=contact&location_id=loc-1", 400, "invalid_request"},
		{"bad min_seq", "admin", "type=contact&location_id=loc-1&min_seq=x", 400, "invalid_request"},
		{"index behind", "admin", "type=contact&location_id=loc-1&min_seq=8", 503, "index_behind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, r := getFilter(t, h, tt.subject, tt.query)
			if code != tt.code || r.Error == nil || r.Error.Code != tt.errCode || r.Kind != nil {
				t.Fatalf("%d %+v, want %d %s", code, r, tt.code, tt.errCode)
			}
		})
	}
}

// policyWith writes the default policy with authz.rego edited (old, new, …).
func policyWith(tb testing.TB, edit ...string) *policy.Engine {
	tb.Helper()
	dir := tb.TempDir()
	for _, name := range []string{"authz.rego", "config.rego"} {
		b, err := policies.FS.ReadFile("crmauthz/" + name)
		if err != nil {
			tb.Fatal(err)
		}
		s := string(b)
		if name == "authz.rego" {
			for i := 0; i+1 < len(edit); i += 2 {
				if !strings.Contains(s, edit[i]) {
					tb.Fatalf("authz.rego has no %q", edit[i])
				}
				s = strings.Replace(s, edit[i], edit[i+1], 1)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	eng, err := policy.New(policy.Config{Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	return eng
}

// A policy the filter cannot express is a 500 naming the construct, never a
// filter; so is a policy without the entry point (501).
func TestSubjectFilterUntranslatable(t *testing.T) {
	const hostile = "u' OR 1=1 --"
	tests := []struct {
		name     string
		edit     []string
		code     int
		errCode  string
		mentions string
	}{
		{"count of followers", []string{"follows(user_id, rec) if user_id in rec.followers",
			"follows(user_id, rec) if {\n\tuser_id in rec.followers\n\tcount(rec.followers) < 5\n}"}, 500, "filter_untranslatable", "count"},
		{"prefix of an id", []string{"owns(user_id, rec) if {", "owns(user_id, rec) if {\n\tstartswith(rec.id, \"c-\")"}, 500, "filter_untranslatable", "startswith"},
		{"an unmapped field", []string{"owns(user_id, rec) if {", "owns(user_id, rec) if {\n\trec.stage == \"won\""}, 500, "filter_untranslatable", "stage"},
		{"the record's id read from the input", []string{"owns(user_id, rec) if {", "owns(user_id, rec) if {\n\tinput.resource.id != \"c-secret\""}, 500, "filter_untranslatable", "input.resource.id"},
		// An else chain of the value of a branch whose conditions depend on
		// the record: partial evaluation saves it whole.
		{"a nested else chain on the record", []string{"\tinput.action in {\"view\", \"edit\"}\n}", "\tinput.action in {\"view\", \"edit\"}\n\trecord.owner != \"\"\n}"}, 500, "filter_untranslatable", "follower_decision"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := newConfig(t, strings.NewReader(filterSnapshot))
			cfg.Engine = policyWith(t, tt.edit...)
			h := mustNew(t, cfg).DecisionHandler()
			code, r := getFilter(t, h, hostile, "type=contact&location_id=loc-1")
			if code != tt.code || r.Error == nil || r.Error.Code != tt.errCode || !strings.Contains(r.Error.Message, tt.mentions) {
				t.Fatalf("%d %+v %+v, want %d %s naming %s", code, r, r.Error, tt.code, tt.errCode, tt.mentions)
			}
			t.Log(r.Error.Message)
			// An admin's filter does not depend on the record: still "all".
			if code, r := getFilter(t, h, "admin", "type=contact&location_id=loc-1"); code != 200 || *r.Kind != "all" {
				t.Fatalf("admin: %d %+v", code, r)
			}
		})
	}
	t.Run("a decision of two rules", func(t *testing.T) {
		cfg := newConfig(t, strings.NewReader(filterSnapshot))
		cfg.Engine = policyWith(t, "# allow is the boolean", "decision := {\"allow\": true, \"reason\": \"root\"} if input.subject == \"root\"\n\n# allow is the boolean")
		h := mustNew(t, cfg).DecisionHandler()
		if code, r := getFilter(t, h, "admin", "type=contact&location_id=loc-1"); code != 500 || r.Error == nil || r.Error.Code != "filter_untranslatable" || !strings.Contains(r.Error.Message, "2 rules") {
			t.Fatalf("%d %+v %+v", code, r, r.Error)
		}
	})
	t.Run("no entry point", func(t *testing.T) {
		cfg := newConfig(t, strings.NewReader(filterSnapshot))
		dir := t.TempDir()
		for _, name := range []string{"authz.rego", "config.rego"} {
			b, _ := policies.FS.ReadFile("crmauthz/" + name)
			// The decision's record under another name: nothing to derive
			// the filter from.
			b = []byte(strings.ReplaceAll(strings.ReplaceAll(string(b), "record", "rec0rd"), "crm.rec0rd", "crm.record"))
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		eng, err := policy.New(policy.Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Engine = eng
		h := mustNew(t, cfg).DecisionHandler()
		if code, r := getFilter(t, h, "admin", "type=contact&location_id=loc-1"); code != 501 || r.Error == nil || r.Error.Code != "filter_not_defined" {
			t.Fatalf("%d %+v", code, r)
		}
	})
}

// TestSubjectFilterOverHTTPAgainstSQLite asks the endpoint for every subject,
// type and location of the list tests' world, runs the filter on SQLite and
// compares with the view decisions of the same server.
func TestSubjectFilterOverHTTPAgainstSQLite(t *testing.T) {
	m := newListWorld(t, 11)
	ts := newTestServer(t, nil)
	if _, err := ts.repl.LoadSnapshot(strings.NewReader(m.Snapshot(1))); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "crm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, stmt := range []string{
		`CREATE TABLE crm_contacts (id text primary key, location_id text not null, owner_id text)`,
		`CREATE TABLE crm_opportunities (id text primary key, location_id text not null, owner_id text, contact_id text)`,
		`CREATE TABLE crm_record_followers (record_type text, record_id text, user_id text, primary key (record_type, record_id, user_id))`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range m.Keys() {
		r := m.Records[k]
		var owner any = r.Owner
		if r.Owner == "" {
			owner = nil
		}
		if _, err := db.Exec(`INSERT INTO crm_`+map[string]string{"contact": "contacts", "opportunity": "opportunities"}[k.Type]+` (id, location_id, owner_id) VALUES (?, ?, ?)`, r.ID, r.LocationID, owner); err != nil {
			t.Fatal(err)
		}
		for _, f := range r.Followers {
			if _, err := db.Exec(`INSERT INTO crm_record_followers VALUES (?, ?, ?)`, k.Type, r.ID, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	kinds := map[string]int{}
	for _, subject := range append(m.UserIDs(), "u-gone") {
		for _, typ := range []string{"contact", "opportunity"} {
			table := map[string]string{"contact": "crm_contacts", "opportunity": "crm_opportunities"}[typ]
			for _, loc := range append(listLocations(), "loc-9") {
				code, r := getFilter(t, ts.decision, subject, "dialect=sqlite&type="+typ+"&location_id="+loc)
				if code != 200 || r.Kind == nil {
					t.Fatalf("%s %s %s: %d %+v", subject, typ, loc, code, r)
				}
				kinds[*r.Kind]++
				stmt, args := `SELECT id FROM `+table+` WHERE location_id = ?`, []any{loc}
				switch *r.Kind {
				case "none":
					stmt += " AND 1 = 0"
				case "conditional":
					stmt += " AND (" + r.SQL.Where + ")"
					args = append(args, r.SQL.Args...)
				}
				rows, err := db.Query(stmt, args...)
				if err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
				got := []string{}
				for rows.Next() {
					var id string
					if err := rows.Scan(&id); err != nil {
						t.Fatal(err)
					}
					got = append(got, id)
				}
				rows.Close()
				slices.Sort(got)
				want := []string{}
				for _, k := range m.Keys() {
					if rec := m.Records[k]; k.Type == typ && rec.LocationID == loc && viewAllowed(t, ts, subject, k) {
						want = append(want, k.ID)
					}
				}
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("%s %s %s: the filter %+v selects %q, the decisions allow %q", subject, typ, loc, r, got, want)
				}
			}
		}
	}
	if kinds["all"] == 0 || kinds["none"] == 0 || kinds["conditional"] == 0 {
		t.Fatalf("kinds %v: the world tests too little", kinds)
	}
}

func viewAllowed(tb testing.TB, ts *testServer, subject string, k refmodel.Key) bool {
	tb.Helper()
	body := fmt.Sprintf(`{"subject": %q, "action": "view", "resource": {"type": %q, "id": %q}}`, subject, k.Type, k.ID)
	rec := serve(ts.decision, http.MethodPost, "/v1/decision", body, nil)
	var d struct{ Allow bool }
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &d) != nil {
		tb.Fatalf("decision %s: %d %s", body, rec.Code, rec.Body)
	}
	return d.Allow
}

// BenchmarkSubjectFilter measures GET /v1/subjects/{id}/filter through the
// handler: "mix" cycles through 4096 users of the benchmark world (1 in 100
// an admin, 1 in 10 unrestricted: "all"; the rest restricted: a condition),
// "restricted" asks for restricted users only, in every dialect. After the
// first round every partial evaluation is cached; "uncached" runs OPA's
// partial evaluation every time (the cache off, as --decision-cache-slots -1).
func BenchmarkSubjectFilter(b *testing.B) {
	w := dataset.New(dataset.Config{Records: 1000, Users: 10_000})
	ts := newTestServer(b, &w)
	uncached, err := policy.New(policy.Config{FS: policies.FS, DecisionCacheSlots: -1})
	if err != nil {
		b.Fatal(err)
	}
	cfg := ts.cfg
	cfg.Engine = uncached
	cfg.Metrics = metrics.New(metrics.Config{})
	off := mustNew(b, cfg).DecisionHandler()
	var mix, restricted []string
	for i := 0; i < 4096; i++ {
		u := w.UserAt(i)
		path := "/v1/subjects/" + u.ID + "/filter?type=contact&location_id=" + u.Location
		mix = append(mix, path)
		if u.AssignedDataOnly && u.Role == "user" {
			restricted = append(restricted, path+"&dialect="+[]string{"postgresql", "mysql", "sqlite", "sqlserver", "ucast"}[i%5])
		}
	}
	for _, bm := range []struct {
		name  string
		h     http.Handler
		paths []string
	}{{"mix", ts.decision, mix}, {"restricted", ts.decision, restricted}, {"uncached/mix", off, mix}, {"uncached/restricted", off, restricted}} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				req := httptest.NewRequest(http.MethodGet, bm.paths[i%len(bm.paths)], nil)
				rec := httptest.NewRecorder()
				bm.h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatal(rec.Body.String())
				}
			}
		})
	}
}
