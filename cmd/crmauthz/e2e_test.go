package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EGoldenDecisions loads the golden fixture through the snapshot API
// and checks every case through /v1/decision, /v1/decisions and the Data API.
func TestE2EGoldenDecisions(t *testing.T) {
	f := loadFixture(t)
	p := startServer(t, t.TempDir())
	putSnapshot(t, p, f.snapshot(42))

	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			in := c.Input
			if in.Subject == "" || in.Action == "" {
				// The policy denies these (the golden reason); over HTTP an empty
				// required field is refused before the policy sees it.
				req := map[string]any{"subject": in.Subject, "action": in.Action, "resource": in.Resource}
				code, body := call(t, http.MethodPost, p.base+"/v1/decision", req, nil)
				if code != http.StatusBadRequest || errCode(body) != "invalid_request" || c.Allow {
					t.Fatalf("empty subject or action: %d %v (golden allow %v)", code, body, c.Allow)
				}
				return
			}
			allow, reason := decide(t, p, in.Subject, in.Action, in.Resource["type"], in.Resource["id"], in.Target)
			if allow != c.Allow || reason != c.Reason {
				t.Errorf("/v1/decision = %v %q, want %v %q", allow, reason, c.Allow, c.Reason)
			}

			code, body := call(t, http.MethodPost, p.base+"/v1/data/crmauthz/decision", map[string]any{"input": in}, nil)
			if code != http.StatusOK {
				t.Fatalf("data API: %d %v", code, body)
			}
			res, _ := body["result"].(map[string]any)
			if res["allow"] != c.Allow || res["reason"] != c.Reason {
				t.Errorf("/v1/data/crmauthz/decision = %v, want %v %q", res, c.Allow, c.Reason)
			}
			if id, _ := body["decision_id"].(string); id == "" {
				t.Errorf("data API reply has no decision_id: %v", body)
			}
		})
	}

	// The same cases as batches, one per subject, in order.
	bySubject := map[string][]int{}
	for i, c := range f.Cases {
		if c.Input.Subject != "" && c.Input.Action != "" {
			bySubject[c.Input.Subject] = append(bySubject[c.Input.Subject], i)
		}
	}
	for subject, idx := range bySubject {
		t.Run("batch/"+subject, func(t *testing.T) {
			checks := make([]map[string]any, len(idx))
			for j, i := range idx {
				in := f.Cases[i].Input
				ch := map[string]any{"action": in.Action, "resource": in.Resource}
				if in.Target != nil {
					ch["target"] = *in.Target
				}
				checks[j] = ch
			}
			code, body := call(t, http.MethodPost, p.base+"/v1/decisions", map[string]any{"subject": subject, "checks": checks}, nil)
			if code != http.StatusOK {
				t.Fatalf("%d %v", code, body)
			}
			results, _ := body["results"].([]any)
			if len(results) != len(idx) {
				t.Fatalf("%d results for %d checks", len(results), len(idx))
			}
			for j, i := range idx {
				r := results[j].(map[string]any)
				if r["allow"] != f.Cases[i].Allow || r["reason"] != f.Cases[i].Reason {
					t.Errorf("check %d (%s) = %v, want %v %q", j, f.Cases[i].Name, r, f.Cases[i].Allow, f.Cases[i].Reason)
				}
			}
			if body["applied_seq"] != float64(42) || body["policy_revision"] == "" || body["decision_id"] == "" {
				t.Errorf("batch reply lacks applied_seq/policy_revision/decision_id: %v", body)
			}
		})
	}

	// Every reason of docs/reference.md §1 appears among the golden cases.
	seen := map[string]bool{}
	for _, c := range f.Cases {
		seen[c.Reason] = true
	}
	for _, r := range []string{"unknown_action", "unknown_subject", "record_not_found", "cross_location",
		"module_disabled", "unknown_target", "target_cross_location", "follower_limit_reached", "admin",
		"unrestricted", "owner", "follower", "follower_unfollow", "followers_cannot_change_owner",
		"follower_not_permitted", "not_assigned"} {
		if !seen[r] {
			t.Errorf("no golden case has the reason %q", r)
		}
	}
}

// demoEvents is a batch that builds a small world from nothing.
func demoEvents(first int) string {
	return fmt.Sprintf(`{"events": [
	  {"seq": %d, "op": "user.upsert", "user": {"id": "u-1", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}},
	  {"seq": %d, "op": "user.upsert", "user": {"id": "u-2", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}},
	  {"seq": %d, "op": "user.upsert", "user": {"id": "u-3", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}},
	  {"seq": %d, "op": "record.upsert", "record": {"type": "contact", "id": "c-1", "location_id": "loc-1", "owner": "u-1", "followers": ["u-2"]}}
	]}`, first, first+1, first+2, first+3)
}

func TestE2EReplication(t *testing.T) {
	p := startServer(t, t.TempDir())
	events := p.admin + "/v1/replication/events"

	code, body := call(t, http.MethodPost, events, demoEvents(1), authz)
	if code != 200 || body["applied_seq"] != float64(4) || body["applied"] != float64(4) || body["skipped"] != float64(0) {
		t.Fatalf("first batch: %d %v", code, body)
	}
	if a, r := decide(t, p, "u-2", "edit", "contact", "c-1", nil); !a || r != "follower" {
		t.Fatalf("u-2 edit c-1 = %v %s, want follower allow", a, r)
	}

	// Redelivery is skipped; overlap applies only what is new.
	code, body = call(t, http.MethodPost, events, demoEvents(1), authz)
	if code != 200 || body["applied"] != float64(0) || body["skipped"] != float64(4) || body["applied_seq"] != float64(4) {
		t.Fatalf("redelivery: %d %v", code, body)
	}
	code, body = call(t, http.MethodPost, events, `{"events": [
	  {"seq": 4, "op": "record.delete", "type": "contact", "id": "c-1"},
	  {"seq": 5, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "u-3"}]}`, authz)
	if code != 200 || body["applied"] != float64(1) || body["skipped"] != float64(1) || body["applied_seq"] != float64(5) {
		t.Fatalf("overlap: %d %v", code, body)
	}
	if a, r := decide(t, p, "u-3", "view", "contact", "c-1", nil); !a || r != "follower" {
		t.Fatalf("u-3 view c-1 after follower.add = %v %s (the skipped record.delete must not apply)", a, r)
	}

	rejected := []struct {
		name   string
		body   string
		code   int
		errc   string
		field  string
		value  any
		hdr    map[string]string
		noAuth bool
	}{
		{name: "gap", body: `{"events": [{"seq": 7, "op": "user.delete", "user_id": "u-3"}]}`, code: 409, errc: "sequence_gap", field: "applied_seq", value: float64(5)},
		{name: "not consecutive", body: `{"events": [{"seq": 6, "op": "user.delete", "user_id": "u-3"}, {"seq": 8, "op": "user.delete", "user_id": "u-2"}]}`, code: 409, errc: "sequence_gap", field: "applied_seq", value: float64(5)},
		{name: "unknown op", body: `{"events": [{"seq": 6, "op": "user.delete", "user_id": "u-3"}, {"seq": 7, "op": "user.rename", "user_id": "u-2"}]}`, code: 422, errc: "invalid_event", field: "index", value: float64(1)},
		{name: "11th follower", body: `{"events": [{"seq": 6, "op": "record.upsert", "record": {"type": "contact", "id": "c-9", "location_id": "loc-1", "owner": "u-1", "followers": ["a","b","c","d","e","f","g","h","i","j","k"]}}]}`, code: 422, errc: "invalid_event", field: "index", value: float64(0)},
		{name: "follower.add on a missing record", body: `{"events": [{"seq": 6, "op": "user.delete", "user_id": "u-3"}, {"seq": 7, "op": "follower.add", "type": "contact", "id": "nope", "user_id": "u-2"}]}`, code: 422, errc: "invalid_event", field: "index", value: float64(1)},
		{name: "owner.set on a missing record", body: `{"events": [{"seq": 6, "op": "owner.set", "type": "opportunity", "id": "nope", "user_id": "u-2"}]}`, code: 422, errc: "invalid_event", field: "index", value: float64(0)},
		{name: "bad type", body: `{"events": [{"seq": 6, "op": "follower.remove", "type": "lead", "id": "c-1", "user_id": "u-2"}]}`, code: 422, errc: "invalid_event", field: "index", value: float64(0)},
		{name: "missing field", body: `{"events": [{"seq": 6, "op": "user.upsert", "user": {"id": "u-9", "location_ids": []}}]}`, code: 422, errc: "invalid_event", field: "index", value: float64(0)},
		{name: "unknown event field", body: `{"events": [{"seq": 6, "op": "user.delete", "user_id": "u-3", "colour": "red"}]}`, code: 422, errc: "invalid_event", field: "index", value: float64(0)},
		{name: "mistyped field", body: `{"events": [{"seq": "6", "op": "user.delete", "user_id": "u-3"}]}`, code: 422, errc: "invalid_event", field: "index", value: float64(0)},
		{name: "malformed JSON", body: `{"events": [`, code: 400, errc: "malformed_json"},
		{name: "unknown top-level field", body: `{"events": [], "extra": 1}`, code: 400, errc: "invalid_request"},
		{name: "trailing data", body: `{"events": []} {}`, code: 400, errc: "malformed_json"},
		{name: "no token", body: demoEvents(6), code: 401, errc: "unauthorized", noAuth: true},
		{name: "wrong token", body: demoEvents(6), code: 401, errc: "unauthorized", hdr: map[string]string{"Authorization": "Bearer nope"}},
	}
	before := status(t, p)
	for _, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			hdr := authz
			if tc.noAuth {
				hdr = nil
			}
			if tc.hdr != nil {
				hdr = tc.hdr
			}
			code, body := call(t, http.MethodPost, events, tc.body, hdr)
			if code != tc.code || errCode(body) != tc.errc {
				t.Fatalf("got %d %v, want %d %s", code, body, tc.code, tc.errc)
			}
			if msg, _ := errField(body, "message").(string); msg == "" {
				t.Errorf("error without a message: %v", body)
			}
			if tc.field != "" && errField(body, tc.field) != tc.value {
				t.Errorf("error.%s = %v, want %v", tc.field, errField(body, tc.field), tc.value)
			}
			if after := status(t, p); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("the index changed: %v -> %v", before, after)
			}
		})
	}
	// Nothing of the rejected batches applied: u-3 still follows c-1.
	if a, r := decide(t, p, "u-3", "view", "contact", "c-1", nil); !a || r != "follower" {
		t.Fatalf("u-3 view c-1 = %v %s after rejected batches", a, r)
	}

	t.Run("oversize batch is 413", func(t *testing.T) {
		big := `{"events": [{"seq": 6, "op": "user.delete", "user_id": "` + strings.Repeat("x", 17<<20) + `"}]}`
		code, body := call(t, http.MethodPost, events, big, authz)
		if code != 413 || errCode(body) != "payload_too_large" {
			t.Fatalf("got %d %v", code, body)
		}
	})
	t.Run("too many events is 413", func(t *testing.T) {
		var b strings.Builder
		b.WriteString(`{"events": [`)
		for i := 0; i < 10_001; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"seq": %d, "op": "user.delete", "user_id": "x"}`, 6+i)
		}
		b.WriteString(`]}`)
		code, body := call(t, http.MethodPost, events, b.String(), authz)
		if code != 413 {
			t.Fatalf("got %d %v", code, body)
		}
	})

	// Semantics: owner.set makes a follower the owner; user.delete cleans up.
	code, body = call(t, http.MethodPost, events, `{"events": [
	  {"seq": 6, "op": "owner.set", "type": "contact", "id": "c-1", "user_id": "u-3"},
	  {"seq": 7, "op": "user.delete", "user_id": "u-2"},
	  {"seq": 8, "op": "user.upsert", "user": {"id": "u-2", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}}]}`, authz)
	if code != 200 || body["applied_seq"] != float64(8) {
		t.Fatalf("%d %v", code, body)
	}
	if a, r := decide(t, p, "u-3", "delete", "contact", "c-1", nil); !a || r != "owner" {
		t.Errorf("u-3 delete c-1 = %v %s, want owner", a, r)
	}
	if a, r := decide(t, p, "u-2", "view", "contact", "c-1", nil); a || r != "not_assigned" {
		t.Errorf("u-2 (deleted and re-created) view c-1 = %v %s, want not_assigned: user.delete must drop it from the followers", a, r)
	}
	if a, r := decide(t, p, "u-1", "view", "contact", "c-1", nil); a || r != "not_assigned" {
		t.Errorf("u-1 (old owner) view c-1 = %v %s, want not_assigned", a, r)
	}
	st := status(t, p)
	if st["applied_seq"] != float64(8) || st["users"] != float64(3) {
		t.Errorf("status = %v", st)
	}
}

func TestE2EDecisionBadInput(t *testing.T) {
	p := startServer(t, t.TempDir())
	putSnapshot(t, p, loadFixture(t).snapshot(1))
	cases := []struct {
		name, path, body string
		code             int
		errc             string
	}{
		{"malformed", "/v1/decision", `{"subject": "u-1",`, 400, "malformed_json"},
		{"empty body", "/v1/decision", ``, 400, "malformed_json"},
		{"unknown field", "/v1/decision", `{"subject": "u-1", "action": "view", "resource": {"type": "contact", "id": "c-1"}, "admin": true}`, 400, "invalid_request"},
		{"unknown resource field", "/v1/decision", `{"subject": "u-1", "action": "view", "resource": {"type": "contact", "id": "c-1", "x": 1}}`, 400, "invalid_request"},
		{"missing subject", "/v1/decision", `{"action": "view", "resource": {"type": "contact", "id": "c-1"}}`, 400, "invalid_request"},
		{"missing resource", "/v1/decision", `{"subject": "u-1", "action": "view"}`, 400, "invalid_request"},
		{"missing resource id", "/v1/decision", `{"subject": "u-1", "action": "view", "resource": {"type": "contact"}}`, 400, "invalid_request"},
		{"mistyped subject", "/v1/decision", `{"subject": 7, "action": "view", "resource": {"type": "contact", "id": "c-1"}}`, 400, "invalid_request"},
		{"empty target", "/v1/decision", `{"subject": "u-1", "action": "view", "resource": {"type": "contact", "id": "c-1"}, "target": ""}`, 400, "invalid_request"},
		{"trailing data", "/v1/decision", `{"subject": "u-1", "action": "view", "resource": {"type": "contact", "id": "c-1"}} x`, 400, "malformed_json"},
		{"oversize", "/v1/decision", `{"subject": "` + strings.Repeat("u", 1<<20) + `", "action": "view", "resource": {"type": "contact", "id": "c-1"}}`, 413, "payload_too_large"},
		{"batch without checks", "/v1/decisions", `{"subject": "u-1"}`, 400, "invalid_request"},
		{"batch check without action", "/v1/decisions", `{"subject": "u-1", "checks": [{"resource": {"type": "contact", "id": "c-1"}}]}`, 400, "invalid_request"},
		{"data API unknown field", "/v1/data/crmauthz/decision", `{"input": {}, "inptu": {}}`, 400, "invalid_request"},
		{"data API malformed", "/v1/data/crmauthz/decision", `{"input": `, 400, "malformed_json"},
		{"data API path not allowed", "/v1/data/crmauthz/subject", `{"input": {"subject": "admin-1"}}`, 403, "path_not_allowed"},
		{"data API no path", "/v1/data/", `{}`, 400, "invalid_request"},
		{"wrong method", "/v1/decision?x", ``, 405, "method_not_allowed"},
		{"no route", "/v2/decision", `{}`, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodPost
			if tc.code == 405 {
				method = http.MethodGet
			}
			code, body := call(t, method, p.base+tc.path, tc.body, nil)
			if code != tc.code || errCode(body) != tc.errc {
				t.Fatalf("got %d %v, want %d %s", code, body, tc.code, tc.errc)
			}
			if _, allowed := body["allow"]; allowed {
				t.Fatalf("an error reply carries an allow field: %v", body)
			}
		})
	}
	t.Run("more than 1000 checks", func(t *testing.T) {
		checks := make([]map[string]any, 1001)
		for i := range checks {
			checks[i] = map[string]any{"action": "view", "resource": map[string]string{"type": "contact", "id": "c-1"}}
		}
		code, body := call(t, http.MethodPost, p.base+"/v1/decisions", map[string]any{"subject": "u-1", "checks": checks}, nil)
		if code != 413 {
			t.Fatalf("got %d %v", code, body)
		}
	})
}

func TestE2ESnapshot(t *testing.T) {
	p := startServer(t, t.TempDir())
	f := loadFixture(t)
	putSnapshot(t, p, f.snapshot(10))
	before := status(t, p)

	bad := []struct {
		name string
		body string
		line float64
	}{
		{"no header", `{"user": {"id": "x", "role": "user", "location_ids": []}}` + "\n", 1},
		{"bad line", "{\"seq\": 11}\n{\"user\": {\"id\": \"x\", \"role\": \"user\", \"location_ids\": []}}\n{\"user\": {\"id\": \"y\", \"role\": \"boss\", \"location_ids\": []}}\n", 3},
		{"malformed line", "{\"seq\": 11}\n\n{\"record\": {\n", 3},
		{"unknown field", "{\"seq\": 11}\n{\"user\": {\"id\": \"x\", \"role\": \"user\", \"location_ids\": []}, \"extra\": 1}\n", 2},
		{"11 followers", "{\"seq\": 11}\n{\"record\": {\"type\": \"contact\", \"id\": \"c\", \"location_id\": \"l\", \"owner\": \"o\", \"followers\": [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\"]}}\n", 2},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(t, http.MethodPut, p.admin+"/v1/replication/snapshot", tc.body, authz)
			if code != 422 || errCode(body) != "invalid_snapshot" || errField(body, "line") != tc.line {
				t.Fatalf("got %d %v, want 422 invalid_snapshot at line %v", code, body, tc.line)
			}
			if after := status(t, p); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("the index changed: %v -> %v", before, after)
			}
		})
	}

	// Export and re-import: the same facts come back.
	code, raw := callRaw(t, http.MethodGet, p.admin+"/v1/replication/snapshot", nil, authz)
	if code != 200 {
		t.Fatalf("export: %d %s", code, raw)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if lines[0] != `{"seq":10}` {
		t.Fatalf("first line %q", lines[0])
	}
	if got, want := len(lines)-1, len(f.Users)+len(f.Records); got != want {
		t.Fatalf("exported %d facts, want %d", got, want)
	}
	q := startServer(t, t.TempDir())
	putSnapshot(t, q, string(raw))
	if a, b := status(t, p), status(t, q); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("re-imported status %v != %v", b, a)
	}
	_, raw2 := callRaw(t, http.MethodGet, q.admin+"/v1/replication/snapshot", nil, authz)
	if string(raw2) != string(raw) {
		t.Fatalf("export of the re-import differs")
	}
}

func TestE2ERestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	p := startServer(t, dir)
	if code, body := call(t, http.MethodPost, p.admin+"/v1/replication/events", demoEvents(1), authz); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	p.stop() // SIGTERM: drains and closes the index

	q := startServer(t, dir)
	if st := status(t, q); st["applied_seq"] != float64(4) || st["users"] != float64(3) {
		t.Fatalf("after SIGTERM restart: %v", st)
	}
	if code, body := call(t, http.MethodPost, q.admin+"/v1/replication/events", `{"events": [
	  {"seq": 5, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "u-3"}]}`, authz); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	q.kill() // SIGKILL right after the acknowledged batch

	r := startServer(t, dir)
	if st := status(t, r); st["applied_seq"] != float64(5) {
		t.Fatalf("after SIGKILL restart: %v", st)
	}
	if a, reason := decide(t, r, "u-3", "edit", "contact", "c-1", nil); !a || reason != "follower" {
		t.Fatalf("u-3 edit c-1 after SIGKILL restart = %v %s", a, reason)
	}
}

func TestE2EAdminEndpoints(t *testing.T) {
	p := startServer(t, t.TempDir(), "--ready-min-seq", "3")
	code, body := call(t, http.MethodGet, p.admin+"/health/live", nil, nil)
	if code != 200 {
		t.Fatalf("live: %d %v", code, body)
	}
	code, body = call(t, http.MethodGet, p.admin+"/health/ready", nil, nil)
	if code != 503 || errCode(body) != "not_ready" {
		t.Fatalf("ready before seq 3: %d %v", code, body)
	}
	call(t, http.MethodPost, p.admin+"/v1/replication/events", demoEvents(1), authz)
	if code, body = call(t, http.MethodGet, p.admin+"/health/ready", nil, nil); code != 200 {
		t.Fatalf("ready after seq 4: %d %v", code, body)
	}
	decide(t, p, "u-1", "view", "contact", "c-1", nil)

	code, body = call(t, http.MethodGet, p.admin+"/v1/status", nil, nil)
	pol, _ := body["policy"].(map[string]any)
	if code != 200 || body["applied_seq"] != float64(4) || pol["revision"] == "" || pol["last_error"] != nil {
		t.Fatalf("status: %d %v", code, body)
	}

	code, raw := callRaw(t, http.MethodGet, p.admin+"/metrics", nil, nil)
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`crmauthz_decisions_total{action="view",allow="true",endpoint="decision",reason="owner"} 1`,
		`crmauthz_decision_duration_seconds_bucket{endpoint="decision"`,
		`crmauthz_http_requests_total{code="200",listener="decision",route="/v1/decision"} 1`,
		`crmauthz_replication_applied_seq 4`,
		`crmauthz_replication_events_total{op="user.upsert",result="applied"} 3`,
		`crmauthz_index_records{type="contact"} 1`,
		`crmauthz_index_users 3`,
		`crmauthz_policy_reloads_total{result="ok"} 1`,
		`crmauthz_policy_info{revision="` + pol["revision"].(string) + `"} 1`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestE2EEnvironmentTwins(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(tokenFile, []byte("from-env"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startWith(t, dir, []string{"serve"}, []string{
		"CRMAUTHZ_ADDR=127.0.0.1:0", "CRMAUTHZ_ADMIN_ADDR=127.0.0.1:0", "CRMAUTHZ_DATA_DIR=" + dir,
		"CRMAUTHZ_REPLICATION_TOKEN_FILE=" + tokenFile,
	})
	if code, _ := call(t, http.MethodGet, p.admin+"/v1/replication/status", nil, map[string]string{"Authorization": "Bearer from-env"}); code != 200 {
		t.Fatalf("token from CRMAUTHZ_REPLICATION_TOKEN_FILE not used: %d", code)
	}
	if code, _ := call(t, http.MethodGet, p.admin+"/v1/replication/status", nil, authz); code != 401 {
		t.Fatalf("another token accepted: %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "index.db")); err != nil {
		t.Fatalf("CRMAUTHZ_DATA_DIR not used: %v", err)
	}
}

// TestE2EDemo checks the README's examples against examples/demo.ndjson.
func TestE2EDemo(t *testing.T) {
	p := startServer(t, t.TempDir(), "--load-snapshot", "../../examples/demo.ndjson")
	cases := []struct {
		subject, action, typ, id string
		target                   *string
		allow                    bool
		reason                   string
	}{
		{"u-bob", "delete", "contact", "c-1", nil, true, "owner"},
		{"u-carol", "edit", "contact", "c-1", nil, true, "follower"},
		{"u-carol", "change_owner", "contact", "c-1", strp("u-carol"), false, "followers_cannot_change_owner"},
		{"u-carol", "remove_follower", "contact", "c-1", strp("u-carol"), true, "follower_unfollow"},
		{"u-carol", "delete", "contact", "c-1", nil, false, "follower_not_permitted"},
		{"u-dave", "view", "contact", "c-1", nil, false, "not_assigned"},
		{"u-dave", "view", "opportunity", "o-1", nil, true, "follower"},
		{"u-alice", "edit", "contact", "c-2", nil, true, "unrestricted"},
		{"u-admin", "delete", "contact", "c-3", nil, true, "admin"},
		{"u-erin", "view", "contact", "c-1", nil, false, "cross_location"},
		{"u-frank", "view", "contact", "c-1", nil, false, "module_disabled"},
		{"u-bob", "add_follower", "contact", "c-full", strp("u-gina"), false, "follower_limit_reached"},
		{"u-admin", "add_follower", "contact", "c-full", strp("u-gina"), false, "follower_limit_reached"},
		{"u-bob", "add_follower", "contact", "c-1", strp("u-gina"), true, "owner"},
		{"u-bob", "add_follower", "contact", "c-1", strp("u-erin"), false, "target_cross_location"},
		{"u-bob", "add_follower", "contact", "c-1", strp("u-nobody"), false, "unknown_target"},
		{"u-nobody", "view", "contact", "c-1", nil, false, "unknown_subject"},
		{"u-bob", "view", "contact", "c-404", nil, false, "record_not_found"},
		{"u-bob", "share", "contact", "c-1", nil, false, "unknown_action"},
	}
	for _, c := range cases {
		name := c.subject + "/" + c.action + "/" + c.id
		t.Run(name, func(t *testing.T) {
			allow, reason := decide(t, p, c.subject, c.action, c.typ, c.id, c.target)
			if allow != c.allow || reason != c.reason {
				t.Errorf("got %v %s, want %v %s", allow, reason, c.allow, c.reason)
			}
		})
	}
	if st := status(t, p); st["applied_seq"] != float64(100) {
		t.Fatalf("demo applied_seq = %v", st)
	}
	// A restart on the same data dir keeps the index: --load-snapshot applies only to an empty one.
	call(t, http.MethodPost, p.admin+"/v1/replication/events",
		`{"events": [{"seq": 101, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "u-gina"}]}`, authz)
	p.stop()
	q := startServer(t, p.dataDir, "--load-snapshot", "../../examples/demo.ndjson")
	if allow, reason := decide(t, q, "u-gina", "view", "contact", "c-1", nil); !allow || reason != "follower" {
		t.Fatalf("after restart u-gina view c-1 = %v %s: the snapshot was loaded over the index", allow, reason)
	}
}

// TestE2EBackupRestore takes a hot backup over HTTP while the server runs,
// restores it into a new data directory and checks the restored server.
func TestE2EBackupRestore(t *testing.T) {
	p := startServer(t, t.TempDir())
	putSnapshot(t, p, loadFixture(t).snapshot(33))
	code, raw := callRaw(t, http.MethodGet, p.admin+"/v1/replication/backup", nil, authz)
	if code != 200 || len(raw) == 0 {
		t.Fatalf("backup: %d (%d bytes)", code, len(raw))
	}
	if code, _ := callRaw(t, http.MethodGet, p.admin+"/v1/replication/backup", nil, nil); code != 401 {
		t.Fatalf("backup without a token: %d", code)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.db"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	q := startServer(t, dir)
	if a, b := status(t, p), status(t, q); fmt.Sprint(a) != fmt.Sprint(b) || b["applied_seq"] != float64(33) {
		t.Fatalf("restored status %v, original %v", b, a)
	}
	_, exp1 := callRaw(t, http.MethodGet, p.admin+"/v1/replication/snapshot", nil, authz)
	_, exp2 := callRaw(t, http.MethodGet, q.admin+"/v1/replication/snapshot", nil, authz)
	if string(exp1) != string(exp2) {
		t.Fatal("the restored index exports differently")
	}
}
