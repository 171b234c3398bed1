package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/cliflags"
)

// writeConfig writes a configuration file and returns its path.
func writeConfig(tb testing.TB, text string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "crmauthz.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// loadServe parses serve's command line, applies env (as the root command
// does) and then the file --config names, and checks the flags.
func loadServe(tb testing.TB, env map[string]string, args ...string) (*serveOptions, error) {
	tb.Helper()
	for k, v := range env {
		tb.Setenv(k, v)
	}
	fs, o := serveFlags(tb, args...)
	if err := cliflags.ApplyEnv(fs); err != nil {
		return o, err
	}
	if err := cliflags.ApplyConfigFile(fs); err != nil {
		return o, err
	}
	return o, validateServe(fs, o)
}

// TestConfigFilePrecedence: flag > CRMAUTHZ_* > file > default.
func TestConfigFilePrecedence(t *testing.T) {
	cfg := writeConfig(t, `
addr: 127.0.0.1:9000            # a flag overrides it
consistency-wait: 1s            # the environment overrides it
max-batch-bytes: 2048           # the file sets it
policies-require-tests: true
decision-log-sample: 0.25
data-api-paths: [crmauthz/decision, crmauthz/list]
`)
	o, err := loadServe(t, map[string]string{"CRMAUTHZ_CONSISTENCY_WAIT": "3s"}, "--config", cfg, "--addr", "127.0.0.1:9001")
	if err != nil {
		t.Fatal(err)
	}
	d := server0()
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"addr (flag)", o.addr, "127.0.0.1:9001"},
		{"consistency-wait (env)", o.consistencyWait, 3 * time.Second},
		{"max-batch-bytes (file)", o.maxBatchBytes, int64(2048)},
		{"policies-require-tests (file)", o.policiesRequireTests, true},
		{"decision-log-sample (file)", o.decisionLogSample, 0.25},
		{"data-api-paths (file)", o.dataAPIPaths, []string{"crmauthz/decision", "crmauthz/list"}},
		{"admin-addr (default)", o.adminAddr, d.adminAddr},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

// server0 is serve's options with every flag at its default.
func server0() *serveOptions {
	o := &serveOptions{}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	o.addFlags(fs)
	_ = fs.Parse(nil)
	return o
}

// TestConfigFileRefusals: an unknown key, a value the flag does not parse and
// one its rule refuses are usage errors that name the file's key.
func TestConfigFileRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"unknown key", "max-batch-byte: 2048\n", []string{`key "max-batch-byte": not a setting of this command`}},
		{"a nested mapping", "nats:\n  stream: X\n", []string{`key "nats.stream": not a setting`}},
		{"the config key itself", "config: other.yaml\n", []string{`key "config": not a setting`}},
		{"does not parse", "read-timeout: soon\n", []string{`key "read-timeout"`, `invalid argument "soon"`}},
		{"no value", "read-timeout:\n", []string{`key "read-timeout": no value`}},
		{"a mapping as a value", "data-api-paths: [{a: b}]\n", []string{`key "data-api-paths"`, "not a value"}},
		{"out of range", "max-in-flight: -1\n", []string{`key "max-in-flight" = -1: want 0 (no limit)`}},
		{"several", "max-in-flight: -1\nread-timeout: 0s\n", []string{`key "max-in-flight"`, `key "read-timeout" = 0s: want a duration`}},
		{"not YAML", "addr: [\n", []string{"not a YAML mapping"}},
		{"not a mapping", "- addr\n", []string{"not a YAML mapping"}},
		{"a key given twice", "addr: 127.0.0.1:1\naddr: 127.0.0.1:2\n", []string{"not a YAML mapping", "already defined"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, tc.text)
			_, err := loadServe(t, nil, "--config", cfg)
			if err == nil {
				t.Fatalf("%q accepted", tc.text)
			}
			if exitCode(err) != exitUsage {
				t.Errorf("exit code %d, want %d", exitCode(err), exitUsage)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := loadServe(t, nil, "--config", filepath.Join(t.TempDir(), "none.yaml"))
		if err == nil || exitCode(err) != exitUsage || !strings.Contains(err.Error(), "--config") {
			t.Fatalf("err %v", err)
		}
	})
}

// TestConfigFileConnectors: the connectors read the same file shape.
func TestConfigFileConnectors(t *testing.T) {
	cfg := writeConfig(t, "slot: crm_slot\nsink: nats://127.0.0.1:4222\nsink-stream: LOG\n")
	var o connectPostgresOptions
	fs := pflag.NewFlagSet("postgres", pflag.ContinueOnError)
	o.addFlags(fs)
	if err := fs.Parse([]string{"--config", cfg, "--sink-stream", "MINE"}); err != nil {
		t.Fatal(err)
	}
	if err := cliflags.ApplyConfigFile(fs); err != nil {
		t.Fatal(err)
	}
	if o.slot != "crm_slot" || o.sink.url != "nats://127.0.0.1:4222" || o.sink.stream != "MINE" {
		t.Errorf("slot %q, sink %q, stream %q", o.slot, o.sink.url, o.sink.stream)
	}
	var h highLevelOptions
	fs = pflag.NewFlagSet("highlevel", pflag.ContinueOnError)
	h.flags(fs, false)
	cfg = writeConfig(t, "location-ids: [loc1, loc2]\nwebhook-addr: 127.0.0.1:1\n")
	if err := fs.Parse([]string{"--config", cfg}); err != nil {
		t.Fatal(err)
	}
	err := cliflags.ApplyConfigFile(fs)
	if err == nil || !strings.Contains(err.Error(), `key "webhook-addr": not a setting`) {
		t.Errorf("sync took webhook-addr, a flag of the daemon only: %v", err)
	}
}
