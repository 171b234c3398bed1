package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// TestOPAPolicyMatchesDefault keeps bench/opa/authz.rego the default policy:
// the same rules in the same order, only the facts read from data.users and
// data.records instead of crm.user and crm.record.
func TestOPAPolicyMatchesDefault(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	rules := func(path string, subst ...string) string {
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, line := range strings.Split(string(b), "\n") {
			if l := strings.TrimSpace(line); l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			out = append(out, line)
		}
		return strings.NewReplacer(subst...).Replace(strings.Join(out, "\n"))
	}
	want := rules("policies/crmauthz/authz.rego",
		"crm.user(input.subject)", "data.users[input.subject]",
		"crm.record(input.resource.type, input.resource.id)", "data.records[input.resource.type][input.resource.id]",
		"crm.user(input.target)", "data.users[input.target]")
	got := rules("bench/opa/authz.rego")
	if got != want {
		t.Fatalf("bench/opa/authz.rego is not policies/crmauthz/authz.rego with the facts from data.users and data.records; update it:\n--- got\n%s\n--- want\n%s", got, want)
	}
	if strings.Contains(got, "crm.") {
		t.Fatal("bench/opa/authz.rego calls a crm.* built-in, which opa does not have")
	}
}

func TestOPAData(t *testing.T) {
	w := dataset.New(dataset.Config{Records: 50, Users: 60, Locations: 5})
	var b bytes.Buffer
	if err := writeOPAData(&b, w); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Users   map[string]map[string]any            `json:"users"`
		Records map[string]map[string]map[string]any `json:"records"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Users) != 60 || len(doc.Records["contact"])+len(doc.Records["opportunity"]) != 50 {
		t.Fatalf("%d users, %d+%d records", len(doc.Users), len(doc.Records["contact"]), len(doc.Records["opportunity"]))
	}
	r := w.RecordAt(5)
	got := doc.Records[r.Type][r.ID]
	if got["owner"] != r.Owner || got["location_id"] != r.Location || len(got["followers"].([]any)) != len(r.Followers) {
		t.Fatalf("record %s: %v, want %+v", r.ID, got, r)
	}
	if u := doc.Users["u-3"]; u["contacts_enabled"] != true || u["opportunities_enabled"] != true {
		t.Fatalf("user defaults not filled in: %v", u)
	}
}

// TestSmoke runs the whole benchmark on a tiny world with about a second of
// load: the real crmauthz and a real opa (built once from the module cache
// into .cache/opa/<version>; the first build takes minutes), the agreement
// check, and one fixed-rate and one saturation step, for both and for the
// floor server (this test binary as `floor`, see TestMain). It checks that
// all three answered every request (200 with a decision) and crmauthz and opa
// agreed, never how fast they were.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts opa and crmauthz")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	opa, err := opaBinary(t.Context(), root, filepath.Join(root, ".cache", "opa"), &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	crm, err := buildCrmauthz(t.Context(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("golden", func(t *testing.T) { testOPAGolden(t, root, opa) })

	rep, err := run(t.Context(), runConfig{
		Records: 3000, Users: 120, Locations: 5,
		Duration: 250 * time.Millisecond, Rates: []int{300}, SatWorkers: []int{4},
		Slices: 2, // each step in two interleaved slices, pooled (slices.go)
		Check:  300, Timeout: 10 * time.Second,
		Crmauthz: crm, OPA: opa, OPAPolicy: []string{"bench/opa/authz.rego", "policies/crmauthz/config.rego"},
		WorkDir: t.TempDir(), Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	var table bytes.Buffer
	if err := printReport(&table, rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s\n%s", log.String(), table.String())
	if rep.checked != 300 || rep.disagree != 0 {
		t.Fatalf("agreement: %d checked, %d disagree: %v", rep.checked, rep.disagree, rep.mismatches)
	}
	if len(rep.reasons) < 8 {
		t.Errorf("the checked sample reached only %d reasons: %v", len(rep.reasons), rep.reasons)
	}
	if len(rep.steps) != 2 {
		t.Fatalf("%d steps, want 2", len(rep.steps))
	}
	for _, runs := range rep.steps {
		if len(runs) != 1 {
			t.Fatalf("%d runs of a step, want 1", len(runs))
		}
		for _, r := range runs[0] {
			if r.ok == 0 || r.errs != 0 || r.sent != r.ok {
				t.Errorf("%s %s: sent %d, answered %d, errors %d (%s)", r.spec.name, r.side, r.sent, r.ok, r.errs, r.firstErr)
			}
		}
	}
	for _, runs := range rep.steps {
		pair := runs[0]
		for k, name := range []string{"crmauthz", "opa", "floor"} {
			if pair[k].side != name {
				t.Errorf("%s: side %d is %q, want %q", pair[k].spec.name, k, pair[k].side, name)
			}
		}
	}
	if !strings.Contains(table.String(), "crmauthz/floor") || !strings.Contains(table.String(), "crmauthz ÷ floor: p99 at 300/s ") {
		t.Errorf("the table has no ratios to the floor:\n%s", table.String())
	}
	if rep.floorReady <= 0 || rep.floorIdle.RSS <= 0 {
		t.Errorf("the floor's readiness or memory not measured: %v %+v", rep.floorReady, rep.floorIdle)
	}
	if rep.readyRestart <= 0 || rep.opaReady <= 0 || rep.crmauthzIdle.RSS <= 0 || rep.opaIdle.RSS <= 0 {
		t.Errorf("readiness or memory not measured: %+v", rep)
	}
}

// testOPAGolden serves the golden decision cases' facts from opa with
// bench/opa/authz.rego and checks every case's answer.
func testOPAGolden(t testing.TB, root, opaBin string) {
	b, err := os.ReadFile(filepath.Join(root, "internal", "policy", "testdata", "decisions.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Users   []map[string]any `json:"users"`
		Records []map[string]any `json:"records"`
		Cases   []struct {
			Name   string          `json:"name"`
			Input  json.RawMessage `json:"input"`
			Allow  bool            `json:"allow"`
			Reason string          `json:"reason"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	// The documents as the index stores them: defaults filled in.
	users, records := map[string]any{}, map[string]map[string]any{}
	for _, u := range g.Users {
		for k, v := range map[string]any{"assigned_data_only": false, "contacts_enabled": true, "opportunities_enabled": true} {
			if _, ok := u[k]; !ok {
				u[k] = v
			}
		}
		users[u["id"].(string)] = u
	}
	for _, r := range g.Records {
		if _, ok := r["followers"]; !ok {
			r["followers"] = []any{}
		}
		if _, ok := r["owner"]; !ok {
			r["owner"] = ""
		}
		typ := r["type"].(string)
		if records[typ] == nil {
			records[typ] = map[string]any{}
		}
		records[typ][r["id"].(string)] = r
	}
	data, err := json.Marshal(map[string]any{"users": users, "records": records})
	if err != nil {
		t.Fatal(err)
	}
	dataFile := filepath.Join(t.TempDir(), "data.json")
	if err := os.WriteFile(dataFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	p, s, err := startOPA(t.Context(), runConfig{OPA: opaBin, OPAPolicy: []string{"bench/opa/authz.rego", "policies/crmauthz/config.rego"}}, root, dataFile)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(5 * time.Second)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, c := range g.Cases {
		body := append(append([]byte(`{"input":`), c.Input...), '}')
		resp, err := client.Post(s.url, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Result *verdict `json:"result"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || got.Result == nil || got.Result.Allow != c.Allow || got.Result.Reason != c.Reason {
			t.Errorf("%s: opa answered %+v (%v), want %v %s", c.Name, got.Result, err, c.Allow, c.Reason)
		}
	}
}
