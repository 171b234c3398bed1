package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/policy/authoring"
)

// evalArgs are a good eval command line: a decision from the demo snapshot.
var evalArgs = []string{"eval", "--snapshot", "../../examples/demo.ndjson", "--subject", "u-bob", "--action", "view", "--type", "contact", "--id", "c-1"}

// badEvalFlags are a bad value of each flag of eval that takes one, and what the refusal says.
var badEvalFlags = []struct{ flag, value, want string }{
	{"data-dir", "", "want a directory"},
	{"data-dir", " ", "want a directory"},
	{"snapshot", " ", "want a path"},
	{"policies", " ", "want a path"},
	{"index-lock-timeout", "0s", "want a duration from 1ms to 1h"},
	{"index-lock-timeout", "-5s", "want a duration from 1ms to 1h"},
	{"subject", "", "want a user id"},
	{"action", "", "want an action"},
	{"type", "", "want a record type"},
	{"id", "", "want a record id"},
}

// runCmd runs crmauthz with args in this process; its output.
func runCmd(tb testing.TB, args []string) (string, error) {
	tb.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(new(strings.Builder))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestEvalFlagsRefused: a bad value of a flag of eval exits 2, naming the flag, its environment
// twin and what is wanted, before any index or policy is opened (it was exit 1, an error of the
// index's Config, or an empty subject decided).
func TestEvalFlagsRefused(t *testing.T) {
	for _, tc := range badEvalFlags {
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			_, err := runCmd(t, append(append([]string{}, evalArgs...), "--"+tc.flag+"="+tc.value))
			checkRefused(t, err, tc.flag, tc.value, tc.want)
		})
	}
}

// TestEvalFlagsAccepted: good values pass the rules and eval decides.
func TestEvalFlagsAccepted(t *testing.T) {
	for _, extra := range [][]string{
		nil,
		{"--index-lock-timeout", "1ms", "--explain"},
		{"--index-lock-timeout", "1h", "--trace", "--data-dir", "elsewhere"},
	} {
		t.Run(strings.Join(extra, " "), func(t *testing.T) {
			out, err := runCmd(t, append(append([]string{}, evalArgs...), extra...))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(out, `{"allow":true,"reason":"owner"`) {
				t.Errorf("output %q", out)
			}
		})
	}
}

// TestEvalFlagRulesCoverEveryFlag: a flag added to eval must get a rule, and a bad value above
// unless any value is meaningful.
func TestEvalFlagRulesCoverEveryFlag(t *testing.T) {
	cmd := newEvalCmd()
	var o evalOptions
	rules := evalRules(&o)
	anyValue := map[string]bool{"target": true, "explain": true, "trace": true, "help": true}
	tested := map[string]bool{}
	for _, tc := range badEvalFlags {
		tested[tc.flag] = true
	}
	n := 0
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		n++
		if rules[f.Name] == nil && f.Name != "help" {
			t.Errorf("--%s has no rule in evalRules", f.Name)
		}
		if !tested[f.Name] && !anyValue[f.Name] {
			t.Errorf("--%s has no bad value in badEvalFlags", f.Name)
		}
	})
	if len(rules) != n && len(rules) != n-1 {
		t.Errorf("%d rules for %d flags: a rule names no flag", len(rules), n)
	}
}

// badPolicyTestFlags are a bad value of each flag of policy test that takes one.
var badPolicyTestFlags = []struct{ flag, value, want string }{
	{"run", "(", "want a regular expression"},
	{"format", "xml", "want one of pretty, json"},
	{"threshold", "NaN", "want a percentage from 0 to 100"},
	{"threshold", "101", "want a percentage from 0 to 100"},
	{"threshold", "-1", "want a percentage from 0 to 100"},
	{"timeout", "0s", "want a duration from 1ms to 24h"},
	{"timeout", "-1s", "want a duration from 1ms to 24h"},
}

// TestPolicyTestFlagsRefused: a bad flag of policy test exits 2, not 1 (which says the tests
// failed); a --threshold of NaN passed every run.
func TestPolicyTestFlagsRefused(t *testing.T) {
	for _, tc := range badPolicyTestFlags {
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			_, err := runCmd(t, []string{"policy", "test", "--" + tc.flag + "=" + tc.value, "../../policies"})
			checkRefused(t, err, tc.flag, tc.value, tc.want)
		})
	}
}

// TestPolicyTestFlagRulesCoverEveryFlag: a flag added to policy test must get a rule, and a bad
// value above unless any value is meaningful.
func TestPolicyTestFlagRulesCoverEveryFlag(t *testing.T) {
	cmd := newPolicyTestCmd()
	rules := policyTestRules(new(authoring.TestOptions))
	tested := map[string]bool{"verbose": true, "coverage": true, "help": true}
	for _, tc := range badPolicyTestFlags {
		tested[tc.flag] = true
	}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if rules[f.Name] == nil && f.Name != "help" {
			t.Errorf("--%s has no rule in policyTestRules", f.Name)
		}
		if !tested[f.Name] {
			t.Errorf("--%s has no bad value in badPolicyTestFlags", f.Name)
		}
	})
}
