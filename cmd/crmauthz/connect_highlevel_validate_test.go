package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func highLevelFlags(t testing.TB, daemon bool, args ...string) (*pflag.FlagSet, *highLevelOptions) {
	t.Helper()
	o := &highLevelOptions{}
	fs := pflag.NewFlagSet("highlevel", pflag.ContinueOnError)
	o.flags(fs, daemon)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return fs, o
}

// goodHighLevel are the flags every case starts from.
var goodHighLevel = []string{"--location-ids", "loc-1,loc-2", "--token-dir", "/run/tokens", "--sink", "http://127.0.0.1:8282"}

// badHighLevelFlags: values of each flag that must be refused, with what the message says.
var badHighLevelFlags = []struct{ flag, value, want string }{
	{"api-url", "ftp://x", "want http(s)://"},
	{"api-url", "https://", "want http(s)://"},
	{"api-url", "https://x/?a=1", "want http(s)://"},
	{"token-file", "/t", "exactly one of --token-file and --token-dir"},
	{"token-dir", " ", "want a path"},
	{"company-id", "a b", "company id"},
	{"location-ids", "loc-1,loc-1", "location ids"},
	{"location-ids", "loc/1", "location ids"},
	{"webhook-public-key-file", " ", "want a path"},
	{"webhook-legacy-key-file", "\t", "want a path"},
	{"reconcile-interval", "30s", "from 1m0s to 24h0m0s"},
	{"max-pending", "0", "from 1 to"},
	{"daily-request-budget", "-1", "from 0 to"},
	{"state-dir", "", "want a directory"},
	{"sink", "", "want http://HOST:PORT"},
	{"sink", "postgres://x", "want http://HOST:PORT"},
	{"sink", "http://", "want http://HOST:PORT"},
	{"sink-token-file", " ", "want a path"},
	{"sink-stream", "a.b", "a stream name"},
	{"sink-subject", "a b", "subject"},
	{"sink-snapshot-bucket", "", "a bucket name"},
	{"otlp-endpoint", "http://collector:4317", "want HOST:PORT of an OTLP/gRPC receiver"},
	{"otlp-insecure", "true", "want it with --otlp-endpoint"},
	{"otlp-ca-file", "ca.pem", "want it with --otlp-endpoint"},
	{"trace-sampling-ratio", "2", "want a fraction from 0 to 1"},
	{"nats-creds", " ", "want a path"},
	{"config", " ", "want a path"},
	{"nats-password-file", "pw", "want it with --nats-user"},
	{"nats-token-file", " ", "want a path"},
	{"nats-tls-ca", " ", "want a path"},
	{"nats-tls-cert", "c.pem", "want it with --nats-tls-key"},
	{"nats-tls-key", "k.pem", "want it with --nats-tls-cert"},
	{"webhook-addr", "8380", "want HOST:PORT"},
	{"admin-addr", "", "want HOST:PORT"},
	{"log-level", "loud", "want one of"},
}

// anyHighLevelValue lists the flags with no bad value.
var anyHighLevelValue = map[string]bool{"webhook-legacy-rsa": true, "nats-user": true}

func TestHighLevelFlagsRefused(t *testing.T) {
	for _, tc := range badHighLevelFlags {
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			fs, o := highLevelFlags(t, true, append(append([]string{}, goodHighLevel...), "--"+tc.flag+"="+tc.value)...)
			err := validateHighLevel(fs, o)
			if err == nil || !strings.Contains(err.Error(), "--"+tc.flag+"=") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming --%s and saying %q", err, tc.flag, tc.want)
			}
			if exitCode(err) != exitUsage {
				t.Fatalf("exit code %d, want %d", exitCode(err), exitUsage)
			}
		})
	}
}

func TestHighLevelFlagsAccepted(t *testing.T) {
	for _, args := range [][]string{
		goodHighLevel,
		{"--location-ids", "ve9EPM428h8vShlRW1KT", "--token-file", "/t", "--sink", "nats://a:4222,nats://b:4222", "--company-id", "5DP4iH6HLkQsiKESj6rh",
			"--reconcile-interval", "1m", "--daily-request-budget", "0", "--webhook-addr", ":8380", "--nats-user", "u", "--nats-password-file", "p"},
	} {
		fs, o := highLevelFlags(t, true, args...)
		if err := validateHighLevel(fs, o); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
}

// TestHighLevelFlagRulesCoverEveryFlag: a flag added to connect highlevel (or its sync) must get
// a rule and a bad value.
func TestHighLevelFlagRulesCoverEveryFlag(t *testing.T) {
	fs, o := highLevelFlags(t, true)
	rules := highLevelRules(o)
	tested := map[string]bool{}
	for _, tc := range badHighLevelFlags {
		tested[tc.flag] = true
	}
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		if rules[f.Name] == nil {
			t.Errorf("--%s has no rule", f.Name)
		}
		if !tested[f.Name] && !anyHighLevelValue[f.Name] {
			t.Errorf("--%s has no bad value", f.Name)
		}
	})
	if len(rules) != n {
		t.Errorf("%d rules for %d flags", len(rules), n)
	}
}
