package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/cliflags"
)

// postgresFlags parses args into the flags of `connect postgres`, as its command does.
func postgresFlags(t testing.TB, args ...string) (*pflag.FlagSet, *connectPostgresOptions) {
	t.Helper()
	o := &connectPostgresOptions{}
	fs := pflag.NewFlagSet("postgres", pflag.ContinueOnError)
	o.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return fs, o
}

var goodPostgres = []string{"--dsn", "postgres://crmauthz@127.0.0.1:5432/crm", "--state-dir", "/var/lib/crmauthz-pg", "--sink", "http://127.0.0.1:8282"}

// badPostgresFlags: values of each flag of connect postgres that must be refused (issue 15 item 10
// for the connectors: every flag validated), with what the message says.
func badPostgresFlags(t testing.TB) []struct{ flag, value, want string } {
	badMapping := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(badMapping, []byte("contacts: {table: \"x; drop table y\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []struct{ flag, value, want string }{
		{"dsn", "", "want a PostgreSQL URL"},
		{"dsn", "mysql://x", "want a PostgreSQL URL"},
		{"mapping", "/nonexistent/m.yaml", "want a table mapping file"},
		{"mapping", badMapping, "not a table name"},
		{"slot", "Slot-1", "a slot name"},
		{"slot", "", "a slot name"},
		{"publication", "a;b", "a publication name"},
		{"state-dir", " ", "want a directory"},
		{"admin-addr", "8384", "want HOST:PORT"},
		{"log-level", "loud", "want one of"},
		{"sink", "", "want http://HOST:PORT"},
		{"sink", "ftp://x", "want http://HOST:PORT"},
		{"sink-token-file", " ", "want a path"},
		{"sink-stream", "a.b", "a stream name"},
		{"sink-subject", "a b", "subject"},
		{"sink-snapshot-bucket", "", "a bucket name"},
		{"nats-creds", " ", "want a path"},
		{"config", " ", "want a path"},
		{"nats-password-file", "pw", "want it with --nats-user"},
		{"nats-token-file", " ", "want a path"},
		{"nats-tls-ca", " ", "want a path"},
		{"nats-tls-cert", "c.pem", "want it with --nats-tls-key"},
		{"nats-tls-key", "k.pem", "want it with --nats-tls-cert"},
		{"otlp-endpoint", "http://collector:4317", "want HOST:PORT of an OTLP/gRPC receiver"},
		{"otlp-insecure", "true", "want it with --otlp-endpoint"},
		{"otlp-ca-file", "ca.pem", "want it with --otlp-endpoint"},
		{"trace-sampling-ratio", "2", "want a fraction from 0 to 1"},
	}
}

func TestPostgresFlagsRefused(t *testing.T) {
	for _, tc := range badPostgresFlags(t) {
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			fs, o := postgresFlags(t, append(append([]string{}, goodPostgres...), "--"+tc.flag+"="+tc.value)...)
			err := cliflags.Validate(fs, postgresRules(o))
			if err == nil || !strings.Contains(err.Error(), "--"+tc.flag+"=") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming --%s and saying %q", err, tc.flag, tc.want)
			}
			if exitCode(err) != exitUsage {
				t.Fatalf("exit code %d, want %d", exitCode(err), exitUsage)
			}
		})
	}
}

func TestPostgresFlagsAccepted(t *testing.T) {
	for _, args := range [][]string{
		goodPostgres,
		{"--dsn", "postgres://u@db:5432/crm?sslmode=require", "--state-dir", "s", "--sink", "nats://a:4222,nats://b:4222",
			"--slot", "crm_1", "--publication", "pub", "--nats-user", "u", "--nats-password-file", "p", "--admin-addr", ":8384"},
	} {
		fs, o := postgresFlags(t, args...)
		if err := cliflags.Validate(fs, postgresRules(o)); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
}

// TestPostgresFlagRulesCoverEveryFlag: a flag added to connect postgres must get a rule and a bad value.
func TestPostgresFlagRulesCoverEveryFlag(t *testing.T) {
	fs, o := postgresFlags(t, goodPostgres...)
	rules := postgresRules(o)
	tested := map[string]bool{"nats-user": true} // any user name is acceptable
	for _, tc := range badPostgresFlags(t) {
		tested[tc.flag] = true
	}
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		if rules[f.Name] == nil {
			t.Errorf("--%s has no rule", f.Name)
		}
		if !tested[f.Name] {
			t.Errorf("--%s has no bad value", f.Name)
		}
	})
	if len(rules) != n {
		t.Errorf("%d rules for %d flags", len(rules), n)
	}
}
