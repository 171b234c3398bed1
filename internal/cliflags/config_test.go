package cliflags

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestConfigValue(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		want string
		err  string
	}{
		{"string", "a b", "a b", ""},
		{"bool", true, "true", ""},
		{"int", 42, "42", ""},
		{"int64", int64(-3), "-3", ""},
		{"uint64", uint64(1 << 63), "9223372036854775808", ""},
		{"float", 0.25, "0.25", ""},
		{"list", []any{"a", 1, false}, "a,1,false", ""},
		{"empty list", []any{}, "", ""},
		{"nil", nil, "", "no value"},
		{"NaN", math.NaN(), "", "is not a value"},
		{"a comma in an item", []any{"a,b"}, "", "holds a comma"},
		{"a mapping", map[string]any{"a": 1}, "", "not a value"},
		{"a mapping in a list", []any{map[string]any{"a": 1}}, "", "not a value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := configValue(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want an error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestApplyConfigFile: the file sets what the command line (or the
// environment) did not, marks it for Validate's messages, and refuses an
// unknown key as a UsageError.
func TestApplyConfigFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("count: 5\nlevel: debug\nnames: [a, b]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var cfg string
	AddConfigFlag(fs, &cfg)
	n := fs.Int("count", 1, "")
	level := fs.String("level", "info", "")
	names := fs.StringSlice("names", nil, "")
	if err := fs.Parse([]string{"--config", p, "--level=warn"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyConfigFile(fs); err != nil {
		t.Fatal(err)
	}
	if *n != 5 || *level != "warn" || strings.Join(*names, "|") != "a|b" {
		t.Errorf("count %d, level %q, names %q", *n, *level, *names)
	}
	if got := flagSource(fs.Lookup("count")); got != p+`: key "count"` {
		t.Errorf("count's source %q", got)
	}
	if got := flagSource(fs.Lookup("level")); got != "--level" {
		t.Errorf("level's source %q", got)
	}

	if err := os.WriteFile(p, []byte("cuont: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := ApplyConfigFile(fs)
	var u *UsageError
	if !errors.As(err, &u) || !strings.Contains(err.Error(), `key "cuont": not a setting of this command`) {
		t.Fatalf("err %v", err)
	}
}
