package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/cliflags"
)

// serveFlags returns serve's flags, parsed from args, and the options they set.
func serveFlags(t testing.TB, args ...string) (*pflag.FlagSet, *serveOptions) {
	t.Helper()
	o := &serveOptions{}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	o.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return fs, o
}

// badServeFlags: for every flag of serve, values that must be refused, each
// with what the message must say (issue 15, item 10: they were accepted, and
// some switched a protection off). A flag with no bad value is listed in
// anyServeValue.
var badServeFlags = []struct {
	flag, value, want string
}{
	{"addr", "", "want HOST:PORT"},
	{"addr", "8181", "want HOST:PORT"},
	{"addr", "127.0.0.1:http", "port from 0 to 65535"},
	{"addr", "127.0.0.1:65536", "port from 0 to 65535"},
	{"addr", "bad host:1", "want HOST:PORT"},
	{"admin-addr", "", "want HOST:PORT"},
	{"admin-addr", "[::1:8282", "want HOST:PORT"},
	{"admin-addr", "[10.0.0.1%eth0]:8282", "want HOST:PORT"},
	{"grpc-addr", "9191", "want HOST:PORT"},
	{"data-dir", "", "want a directory"},
	{"data-dir", " ", "want a directory"},
	{"policies", " ", "want a path"},
	{"replication-token-file", "  ", "want a path"},
	{"load-snapshot", "/nonexistent/snap.ndjson", "want an existing snapshot file"},
	{"load-snapshot", os.TempDir(), "want a file, not a d"},
	{"filter-mapping", "/nonexistent/mapping.yaml", "want a table mapping file"},
	{"jwt-hs256-secret-file", " ", "want a path"},
	{"jwt-jwks-file", "\t", "want a path"},
	{"nats-creds", " ", "want a path"},
	{"config", " ", "want a path"},
	{"nats-password-file", " ", "want a path"},
	{"nats-token-file", " ", "want a path"},
	{"nats-tls-ca", " ", "want a path"},
	{"nats-password-file", "pw", "want it with --nats-user"},
	{"nats-tls-cert", "cert.pem", "want it with --nats-tls-key"},
	{"nats-tls-key", " ", "want a path"},
	{"nats-tls-key", "key.pem", "want it with --nats-tls-cert"},
	{"read-header-timeout", "-1s", "want a duration from 1ms to 5m0s"},
	{"eval-timeout", "0", "want a duration from 1ms to 5m0s"},
	{"eval-timeout", "-1s", "want a duration from 1ms to 5m0s"},
	{"body-timeout", "0", "want a duration from 1ms to 1h0m0s"},
	{"memory-limit", "-1", "want 0"},
	{"memory-limit", "1000", "at least 67108864"},
	{"gc-percent", "5", "want 0 (GOGC, else 200), -1"},
	{"gc-percent", "-2", "want 0 (GOGC, else 200), -1"},
	{"read-header-timeout", "0", "want a duration from 1ms to 5m0s"},
	{"read-header-timeout", "10m", "want a duration from 1ms to 5m0s"},
	{"read-header-timeout", "31s", "want at most --read-timeout (30s)"},
	{"read-timeout", "0", "want a duration from 1ms to 1h0m0s"},
	{"read-timeout", "-5s", "want a duration from 1ms to 1h0m0s"},
	{"snapshot-timeout", "0", "want a duration from 1s to 24h0m0s"},
	{"snapshot-timeout", "48h", "want a duration from 1s to 24h0m0s"},
	{"consistency-wait", "-1s", "want a duration from 1ms to 1m0s"},
	{"consistency-wait", "0", "want a duration from 1ms to 1m0s"},
	{"index-lock-timeout", "0", "want a duration from 1ms to 1h0m0s"},
	{"shutdown-timeout", "-1s", "want a duration from 0s to 1h0m0s"},
	{"jwt-leeway", "-1s", "want a duration from 0s to 10m0s"},
	{"jwt-leeway", "1h", "want a duration from 0s to 10m0s"},
	{"nats-batch-wait", "0", "want a duration from 1µs to 1s"},
	{"nats-batch-wait", "2s", "want a duration from 1µs to 1s"},
	{"max-decision-bytes", "0", "want from 1024 to 67108864 bytes (1 KiB to 64 MiB)"},
	{"max-decision-bytes", "-1", "want from 1024 to 67108864 bytes"},
	{"max-decision-bytes", "1073741824", "want from 1024 to 67108864 bytes"},
	{"max-batch-bytes", "0", "want from 1024 to 1073741824 bytes (1 KiB to 1 GiB)"},
	{"index-merge-bytes", "1000", "want from 1048576 to 1073741824 bytes (1 MiB to 1 GiB)"},
	{"max-snapshot-bytes", "-1", "want from 1024 to 1099511627776 bytes (1 KiB to 1024 GiB)"},
	{"max-batch-events", "0", "want a number from 1 to 1000000"},
	{"max-in-flight", "-1", "want 0 (no limit) or a number from 1 to 1000000"},
	{"max-in-flight", "2000000", "want 0 (no limit) or a number from 1 to 1000000"},
	{"admin-max-in-flight", "-1", "want 0 (no limit) or a number from 1 to 1000000"},
	{"decision-cache-slots", "100000000", "at most 16777216"},
	{"decision-log-buffer", "0", "want a number from 1 to 1000000"},
	{"decision-log-buffer", "-5", "want a number from 1 to 1000000"},
	{"nats-batch-max", "0", "want a number from 1 to 10000"},
	{"nats-batch-max", "10001", "want a number from 1 to 10000"},
	{"log-level", "verbose", "want one of debug, info, warn, error"},
	{"log-level", "INFO+2", "want one of debug, info, warn, error"},
	{"policy-evaluator", "wasm", "want one of auto, ir, topdown"},
	{"decision-log", "", "want off, stdout or a file"},
	{"decision-log-sample", "1.5", "want a fraction from 0 to 1"},
	{"decision-log-sample", "-0.1", "want a fraction from 0 to 1"},
	{"decision-log-sample", "NaN", "want a fraction from 0 to 1"},
	{"decision-log-mask", "input.", "want fields such as input.subject"},
	{"decision-log-mask", "input.subject,,input.target", "want fields such as input.subject"},
	{"decision-log-erase", "subject", "want fields such as input.subject"},
	{"decision-log-mask", "input.subject, input.target", "want fields such as input.subject"}, // New refused " input.target" after the check let it through
	{"data-api-paths", "crmauthz/decision,,crmauthz/allow", `"*" for all, or nothing (--data-api-paths=) for none`},
	{"data-api-paths", "/", `"*" for all, or nothing`},
	{"subject-header", "", "want a header name"},
	{"subject-header", "X User", "want a header name"},
	{"subject-header", "X-User-Id:", "want a header name"},
	{"subject-claim", "", "want a claim name"},
	{"subject-claim", " sub", "want a claim name"},
	{"jwt-issuer", " https://idp ", "without surrounding white space"},
	{"jwt-audience", "crm\n", "without surrounding white space"},
	{"replication-source", "http://127.0.0.1:4222", "want nats://HOST:PORT or tls://HOST:PORT"},
	{"replication-source", "nats://", "want nats://HOST:PORT"},
	{"replication-source", "nats://a:4222,", "want nats://HOST:PORT"},
	{"nats-stream", "", "want a stream name"},
	{"nats-stream", "CRM.AUTHZ", "want a stream name"},
	{"nats-subject", "", "want a NATS subject"},
	{"nats-subject", "crmauthz..events", "want a NATS subject"},
	{"nats-subject", "crm authz", "want a NATS subject"},
	{"nats-subject", "crmauthz.>.x", "want a NATS subject"},
	{"nats-snapshot-bucket", "snap shots", "want a bucket name"},
	{"nats-user", "crm", "want it with --nats-password-file"},
	{"otlp-endpoint", "http://collector:4317", "want HOST:PORT of an OTLP/gRPC receiver"},
	{"otlp-endpoint", "collector", "want HOST:PORT of an OTLP/gRPC receiver"},
	{"otlp-endpoint", "collector:0", "want HOST:PORT of an OTLP/gRPC receiver"},
	{"otlp-insecure", "true", "want it with --otlp-endpoint"},
	{"otlp-ca-file", " ", "want a path"},
	{"otlp-ca-file", "ca.pem", "want it with --otlp-endpoint"},
	{"trace-sampling-ratio", "1.5", "want a fraction from 0 to 1"},
	{"trace-sampling-ratio", "-0.5", "want a fraction from 0 to 1"},
	{"trace-sampling-ratio", "NaN", "want a fraction from 0 to 1"},
}

// anyServeValue are the flags every value of which is meaningful.
var anyServeValue = map[string]bool{"policies-require-tests": true, "ready-min-seq": true, "pprof": true, "index-populate": true, "adaptive-procs": true}

func TestServeFlagsRefuseBadValues(t *testing.T) {
	for _, tc := range badServeFlags {
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			fs, o := serveFlags(t, "--"+tc.flag+"="+tc.value)
			err := validateServe(fs, o)
			if err == nil {
				t.Fatalf("--%s=%q accepted", tc.flag, tc.value)
			}
			if exitCode(err) != exitUsage {
				t.Errorf("exit code %d, want %d", exitCode(err), exitUsage)
			}
			msg := err.Error()
			if strings.Count(msg, "\n") != 0 {
				t.Errorf("more than this flag refused: %s", msg)
			}
			if !strings.HasPrefix(msg, "--"+tc.flag+"=") || !strings.Contains(msg, cliflags.EnvName(tc.flag)) || !strings.Contains(msg, tc.want) {
				t.Errorf("message %q; want it to name --%s, %s and say %q", msg, tc.flag, cliflags.EnvName(tc.flag), tc.want)
			}
		})
	}
}

// TestServeFlagRulesCoverEveryFlag: a flag added to serve must get a rule
// and a bad value in badServeFlags (or be listed in anyServeValue).
func TestServeFlagRulesCoverEveryFlag(t *testing.T) {
	fs, o := serveFlags(t)
	rules := serveRules(o)
	tested := map[string]bool{}
	for _, tc := range badServeFlags {
		tested[tc.flag] = true
	}
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		n++
		if rules[f.Name] == nil {
			t.Errorf("--%s has no rule in serveRules", f.Name)
		}
		if !tested[f.Name] && !anyServeValue[f.Name] {
			t.Errorf("--%s has no bad value in badServeFlags", f.Name)
		}
	})
	if len(rules) != n {
		t.Errorf("%d rules for %d flags: a rule names no flag", len(rules), n)
	}
}

func TestServeFlagsAcceptGoodValues(t *testing.T) {
	snap := filepath.Join(t.TempDir(), "snap.ndjson")
	if err := os.WriteFile(snap, []byte("{\"seq\":0}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		nil, // the defaults
		{"--addr=:8181", "--admin-addr=[::1]:0", "--grpc-addr=localhost:9191"},
		{"--addr=0.0.0.0:8181", "--admin-addr=[fe80::1%eth0]:8282", "--grpc-addr=crmauthz.ns.svc:9191"},
		{"--max-in-flight=0", "--admin-max-in-flight=1", "--decision-cache-slots=-1", "--shutdown-timeout=0", "--jwt-leeway=0"},
		{"--read-header-timeout=30s", "--read-timeout=30s", "--consistency-wait=1m", "--snapshot-timeout=24h"},
		{"--max-decision-bytes=1024", "--max-batch-bytes=1073741824", "--max-snapshot-bytes=1099511627776"},
		{"--data-api-paths=", "--data-api-paths=*", "--log-level=debug", "--policy-evaluator=topdown"},
		{"--decision-log=stdout", "--decision-log-sample=0", "--decision-log-mask=input.subject,/input/target", "--decision-log-erase=input.body"},
		{"--subject-header=X-Forwarded-User", "--subject-claim=email", "--jwt-issuer=https://idp.test", "--jwt-audience=crm"},
		{"--replication-source=nats://a:4222,tls://b:4222", "--nats-stream=CRM_AUTHZ-1", "--nats-subject=crm.>", "--nats-snapshot-bucket=snaps"},
		{"--nats-user=crm", "--nats-password-file=pw", "--nats-tls-cert=c.pem", "--nats-tls-key=k.pem", "--nats-batch-wait=1s", "--nats-batch-max=10000"},
		{"--load-snapshot=" + snap},
		{"--otlp-endpoint=otel-collector.monitoring:4317", "--otlp-ca-file=ca.pem", "--trace-sampling-ratio=0.01"},
		{"--otlp-endpoint=127.0.0.1:4317", "--otlp-insecure", "--trace-sampling-ratio=0"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			fs, o := serveFlags(t, args...)
			if err := validateServe(fs, o); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestServeEnvTwinsAreValidated: an environment twin sets its flag, so a bad
// value there is refused the same way, naming the variable.
func TestServeEnvTwinsAreValidated(t *testing.T) {
	t.Setenv("CRMAUTHZ_MAX_IN_FLIGHT", "-1")
	t.Setenv("CRMAUTHZ_READ_TIMEOUT", "0s")
	fs, o := serveFlags(t)
	if err := cliflags.ApplyEnv(fs); err != nil {
		t.Fatal(err)
	}
	err := validateServe(fs, o)
	if err == nil || exitCode(err) != exitUsage {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{"--max-in-flight=-1 (or CRMAUTHZ_MAX_IN_FLIGHT)", "--read-timeout=0s (or CRMAUTHZ_READ_TIMEOUT)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}

// TestExitCode: the code of an exitError is found through wrapping (it was a
// type assertion, which gave 1 for a wrapped usage error).
func TestExitCode(t *testing.T) {
	usage := usageError(errors.New("--addr: want HOST:PORT"))
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"usage", usage, exitUsage},
		{"wrapped usage", fmt.Errorf("serve: %w", usage), exitUsage},
		{"answer", &exitError{code: 1, msg: "policy tests failed"}, 1},
		{"plain", errors.New("boom"), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

// TestExitErrorUnwrap: a usage error keeps its cause for errors.Is/As.
func TestExitErrorUnwrap(t *testing.T) {
	cause := errors.New("--addr: want HOST:PORT")
	if err := usageError(cause); !errors.Is(err, cause) {
		t.Errorf("usageError(%v) does not unwrap to its cause", cause)
	}
}

// TestServeWarnsOfUnusedNATSFlags: NATS credentials, TLS files or a snapshot bucket given to serve
// without --replication-source do nothing; serve names them in a warning (they were ignored
// silently), and names none with a source, or with only the stream's defaults.
func TestServeWarnsOfUnusedNATSFlags(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{nil, nil},
		{[]string{"--nats-stream=S", "--nats-subject=s.x", "--nats-batch-max=10"}, nil},
		{[]string{"--nats-creds=c", "--nats-tls-ca=ca.pem", "--nats-snapshot-bucket=B"}, []string{"--nats-creds", "--nats-tls-ca", "--nats-snapshot-bucket"}},
		{[]string{"--nats-user=u", "--nats-password-file=p", "--nats-token-file=t", "--nats-tls-cert=c", "--nats-tls-key=k"},
			[]string{"--nats-user", "--nats-password-file", "--nats-token-file", "--nats-tls-cert", "--nats-tls-key"}},
		{[]string{"--replication-source=nats://n:4222", "--nats-creds=c", "--nats-snapshot-bucket=B"}, nil},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, o := serveFlags(t, tc.args...)
			if got := o.nats.unusedFlags(); !slices.Equal(got, tc.want) {
				t.Errorf("unusedFlags() = %v, want %v", got, tc.want)
			}
		})
	}
}
