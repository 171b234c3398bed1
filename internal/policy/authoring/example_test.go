package authoring

import (
	"bytes"
	"context"
	"io/fs"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/policies"
)

// TestWorkedExampleFollowersCanDelete keeps the worked example of
// docs/policies.md ("let followers delete") true: the switch flipped alone
// fails the default tests (so --policies-require-tests refuses it), and with
// the test changes shown there the tests pass and followers may delete.
// When this test fails, update the example in docs/policies.md.
func TestWorkedExampleFollowersCanDelete(t *testing.T) {
	files := allDefaultFiles(t)
	replace := func(tb testing.TB, s, old, new string) string {
		tb.Helper()
		if !strings.Contains(s, old) {
			tb.Fatalf("the default policy changed: %q not found; update docs/policies.md", old)
		}
		return strings.Replace(s, old, new, 1)
	}
	files["config.rego"] = replace(t, files["config.rego"],
		"default followers_can_delete := false", "default followers_can_delete := true")

	dir := t.TempDir()
	writeFiles(t, dir, files)
	var out bytes.Buffer
	passed, err := Test(context.Background(), policy.Config{Dir: dir}, TestOptions{Out: &out})
	if err != nil || passed {
		t.Fatalf("the switch alone: Test = %v, %v; want failing tests\n%s", passed, err, out.String())
	}
	if _, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, Dir: dir, RequireTests: true}); err == nil {
		t.Fatal("the switch alone passed require-tests")
	}

	tests := files["authz_test.rego"]
	for _, r := range [][2]string{
		{"test_follower_not_permitted if {\n\tdecide(\"u-fol\", \"delete\", \"contact\", \"c-1\") == denied(\"follower_not_permitted\")\n",
			"test_follower_not_permitted if {\n"},
		{"\t\t\"delete\": denied(\"follower_not_permitted\"),\n", "\t\t\"delete\": allowed(\"follower\"),\n"},
		{"\tdecide(\"u-fol\", \"delete\", \"contact\", \"c-1\") == denied(\"follower_not_permitted\") with data.crmauthz.config.followers_can_manage_followers as true\n",
			"\tdecide(\"u-fol\", \"delete\", \"contact\", \"c-1\") == allowed(\"follower\") with data.crmauthz.config.followers_can_manage_followers as true\n"},
		{"test_switches_off_by_default if {\n\tnot data.crmauthz.config.followers_can_delete\n",
			"test_switches if {\n\tdata.crmauthz.config.followers_can_delete\n"},
		{"test_followers_can_delete if {",
			"test_followers_may_delete if {\n\tdecide(\"u-fol\", \"delete\", \"contact\", \"c-1\") == allowed(\"follower\")\n\tdecide(\"u-oppfol\", \"delete\", \"opportunity\", \"o-1\") == allowed(\"follower\")\n}\n\ntest_followers_can_delete if {"},
	} {
		tests = replace(t, tests, r[0], r[1])
	}
	files["authz_test.rego"] = tests
	if routes, ok := files["routes_test.rego"]; ok {
		files["routes_test.rego"] = replace(t, routes,
			`["u-fol", "DELETE", "/contacts/c-1", false, "follower_not_permitted"],`,
			`["u-fol", "DELETE", "/contacts/c-1", true, "follower"],`)
	}
	writeFiles(t, dir, files)
	out.Reset()
	passed, err = Test(context.Background(), policy.Config{Dir: dir}, TestOptions{Out: &out, Threshold: 95})
	if err != nil || !passed {
		t.Fatalf("with the test changes: Test = %v, %v\n%s", passed, err, out.String())
	}
	if got, err := Format(dir, FormatOptions{}); err != nil || len(got) != 0 {
		t.Errorf("the example is not formatted: %v %v", got, err)
	}
	e, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, Dir: dir, RequireTests: true})
	if err != nil {
		t.Fatal(err)
	}
	followerDelete := policy.Input{Subject: "u-fol", Action: "delete", ResourceType: "contact", ResourceID: "c-1"}
	if d, _, err := e.Decide(context.Background(), newMemFacts(t, loadGolden(t)), followerDelete); err != nil || !d.Allow || d.Reason != "follower" {
		t.Errorf("u-fol delete c-1 = %+v, %v; want allow:follower", d, err)
	}
}

// allDefaultFiles returns every file of the embedded default policy by base name.
func allDefaultFiles(tb testing.TB) map[string]string {
	tb.Helper()
	entries, err := fs.ReadDir(policies.FS, "crmauthz")
	if err != nil {
		tb.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		b, err := fs.ReadFile(policies.FS, "crmauthz/"+e.Name())
		if err != nil {
			tb.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return files
}
