package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/cliflags"
)

// oneShotCmd is publish or snapshot publish, with its rules over a fresh
// set of options, for the tests below.
type oneShotCmd struct {
	name  string
	cmd   func() *cobra.Command // the command to execute
	flags func() *pflag.FlagSet // its flags
	rules map[string]cliflags.Rule
	base  []string // arguments before the flag under test
	bad   []struct{ flag, value, want string }
}

// natsAuthBad: bad values of the credential flags every NATS command shares.
var natsAuthBad = []struct{ flag, value, want string }{
	{"nats-creds", " ", "want a path"},
	{"nats-user", "u", "want it with --nats-password-file"},
	{"nats-password-file", "p", "--nats-user"},
	{"nats-token-file", " ", "want a path"},
	{"nats-tls-ca", " ", "want a path"},
	{"nats-tls-cert", "c.pem", "--nats-tls-key"},
	{"nats-tls-key", "k.pem", "--nats-tls-cert"},
}

// tracingBad: one bad value of each tracing flag (tracingflags.go has the
// whole rule set; e2e_publish_tracing_test.go runs them through the binary).
var tracingBad = []struct{ flag, value, want string }{
	{"otlp-endpoint", "http://c:4317", "want HOST:PORT"},
	{"otlp-insecure", "true", "want it with --otlp-endpoint"},
	{"otlp-ca-file", "ca.pem", "want it with --otlp-endpoint"},
	{"trace-sampling-ratio", "2", "want a fraction from 0 to 1"},
}

func oneShotCmds(t testing.TB) []oneShotCmd {
	file := filepath.Join(t.TempDir(), "e.ndjson")
	if err := os.WriteFile(file, []byte("{\"seq\":0}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := oneShotCmd{
		name: "publish", cmd: newPublishCmd,
		flags: func() *pflag.FlagSet { return newPublishCmd().Flags() },
		rules: publishRules(&publishOptions{}),
		base:  []string{"publish", "--nats", "nats://127.0.0.1:1", file},
		bad: []struct{ flag, value, want string }{
			{"nats", "", "want nats://HOST:PORT"},
			{"nats", "http://127.0.0.1:4222", "want nats://HOST:PORT"},
			{"stream", "a.b", "a stream name"},
			{"subject", "a..b", "want a NATS subject"},
			{"max-msgs", "-1", "want a number of 0 (no limit) or more"},
			{"max-age", "-1s", "want a duration of 0 (no limit) or more"},
			{"replicas", "0", "want a number from 1 to 5"},
			{"replicas", "6", "want a number from 1 to 5"},
		},
	}
	snap := oneShotCmd{
		name: "snapshot publish", cmd: newSnapshotCmd,
		flags: func() *pflag.FlagSet {
			c, _, err := newSnapshotCmd().Find([]string{"publish"})
			if err != nil {
				t.Fatal(err)
			}
			return c.Flags()
		},
		rules: snapshotPublishRules(&snapshotPublishOptions{}),
		base:  []string{"publish", "--nats", "nats://127.0.0.1:1", "--bucket", "B", file},
		bad: []struct{ flag, value, want string }{
			{"nats", "", "want nats://HOST:PORT"},
			{"bucket", "a b", "a bucket name"},
			{"name", " ", "want an object name"},
		},
	}
	cmds := []oneShotCmd{pub, snap}
	for i := range cmds {
		cmds[i].bad = append(append(cmds[i].bad, natsAuthBad...), tracingBad...)
	}
	return cmds
}

// execute runs c with args (publish's own name dropped: the command is its
// root here) and returns its error.
func (c oneShotCmd) execute(args []string) error {
	cmd := c.cmd()
	if c.name == "publish" {
		args = args[1:]
	}
	cmd.SetArgs(args)
	cmd.SetOut(new(strings.Builder))
	cmd.SetErr(new(strings.Builder))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	return cmd.Execute()
}

// checkRefused: err refuses --flag=value as a usage error (exit 2), naming the flag and its
// environment twin, and saying want.
func checkRefused(tb testing.TB, err error, flag, value, want string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("--%s=%q accepted", flag, value)
	}
	if exitCode(err) != exitUsage {
		tb.Fatalf("exit code %d (%v), want %d", exitCode(err), err, exitUsage)
	}
	msg := err.Error()
	if !strings.Contains(msg, "--"+flag+"=") || !strings.Contains(msg, cliflags.EnvName(flag)) || !strings.Contains(msg, want) {
		tb.Errorf("message %q; want it to name --%s, %s and say %q", msg, flag, cliflags.EnvName(flag), want)
	}
}

// TestOneShotFlagsRefused: a bad value of any flag of publish or snapshot
// publish exits 2, naming the flag, its environment twin and what is
// wanted, before anything is connected to.
func TestOneShotFlagsRefused(t *testing.T) {
	for _, c := range oneShotCmds(t) {
		for _, tc := range c.bad {
			t.Run(c.name+"/"+tc.flag+"="+tc.value, func(t *testing.T) {
				args := append(append([]string{}, c.base[:len(c.base)-1]...), "--"+tc.flag+"="+tc.value, c.base[len(c.base)-1])
				checkRefused(t, c.execute(args), tc.flag, tc.value, tc.want)
			})
		}
	}
}

// TestOneShotFlagsAccepted: good values pass the rules; the command then
// fails only for want of a NATS server (exit 1, not 2).
func TestOneShotFlagsAccepted(t *testing.T) {
	extra := map[string][]string{
		"publish":          {"--stream", "S_1", "--subject", "crm.events", "--max-msgs", "0", "--max-age", "24h", "--replicas", "3", "--create"},
		"snapshot publish": {"--name", "snap-1", "--create", "--no-validate"},
	}
	for _, c := range oneShotCmds(t) {
		t.Run(c.name, func(t *testing.T) {
			last := len(c.base) - 1
			args := append(append(append([]string{}, c.base[:last]...), extra[c.name]...),
				"--nats-user", "u", "--nats-password-file", "p", c.base[last])
			err := c.execute(args)
			if err == nil || exitCode(err) == exitUsage {
				t.Fatalf("got %v (exit %d); want a connection error, exit 1", err, exitCode(err))
			}
		})
	}
}

// TestOneShotFlagRulesCoverEveryFlag: a flag added to publish or snapshot
// publish must get a rule and a bad value above (or take any value).
func TestOneShotFlagRulesCoverEveryFlag(t *testing.T) {
	anyValue := map[string]bool{"create": true, "dry-run": true, "no-validate": true, "help": true}
	for _, c := range oneShotCmds(t) {
		t.Run(c.name, func(t *testing.T) {
			tested := map[string]bool{}
			for _, tc := range c.bad {
				tested[tc.flag] = true
			}
			n := 0
			c.flags().VisitAll(func(f *pflag.Flag) {
				if f.Name == "help" {
					return
				}
				n++
				if c.rules[f.Name] == nil {
					t.Errorf("--%s has no rule", f.Name)
				}
				if !tested[f.Name] && !anyValue[f.Name] {
					t.Errorf("--%s has no bad value", f.Name)
				}
			})
			if len(c.rules) != n {
				t.Errorf("%d rules for %d flags: a rule names no flag", len(c.rules), n)
			}
		})
	}
}
