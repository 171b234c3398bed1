package cliflags

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// TestRules: each helper accepts what it should and names what it wants
// otherwise.
func TestRules(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`^[a-z]+$`)
	for _, tc := range []struct {
		name string
		got  string
		want string // "" for accepted, else a part of the message
	}{
		{"duration in", DurationIn(time.Second, time.Millisecond, time.Minute), ""},
		{"duration low", DurationIn(0, time.Millisecond, time.Minute), "want a duration from 1ms to 1m0s"},
		{"duration high", DurationIn(time.Hour, time.Millisecond, time.Minute), "want a duration from 1ms to 1m0s"},
		{"int in", IntIn(1, 1, 10), ""},
		{"int out", IntIn(11, 1, 10), "want a number from 1 to 10"},
		{"bytes in", BytesIn(KiB, KiB, GiB), ""},
		{"bytes out", BytesIn(0, KiB, 64*MiB), "want from 1024 to 67108864 bytes (1 KiB to 64 MiB)"},
		{"bytes odd bounds", BytesIn(0, 1000, 1024*GiB), "(1000 bytes to 1024 GiB)"},
		{"in flight none", InFlight(0), ""},
		{"in flight negative", InFlight(-1), "want 0 (no limit) or a number from 1 to 1000000"},
		{"in flight high", InFlight(maxInFlightLimit + 1), "want 0 (no limit)"},
		{"one of", OneOf("b", "a", "b"), ""},
		{"not one of", OneOf("B", "a", "b"), "want one of a, b"},
		{"non-blank", NonBlank("x", "a name"), ""},
		{"blank", NonBlank(" ", "a name"), "want a name (not blank"},
		{"padded", NonBlank(" x", "a name"), "no surrounding white space"},
		{"trimmed", Trimmed(""), ""},
		{"not trimmed", Trimmed("x\n"), "without surrounding white space"},
		{"no path", BlankOrPath(""), ""},
		{"white path", BlankOrPath("\t"), "want a path, or nothing"},
		{"paired", PairedPath("a", "b", "--b"), ""},
		{"unpaired", PairedPath("a", "", "--b"), "want it with --b"},
		{"paired white", PairedPath(" ", "b", "--b"), "want a path"},
		{"no file", RegularFile("", "key file"), ""},
		{"file", RegularFile(file, "key file"), ""},
		{"missing file", RegularFile(file+".none", "key file"), "want an existing key file: "},
		{"directory", RegularFile(filepath.Dir(file), "key file"), "want a file, not a d"},
		{"addr", ListenAddr("127.0.0.1:8181", false), ""},
		{"addr any", ListenAddr(":0", false), ""},
		{"addr name", ListenAddr("crmauthz.ns.svc:1", false), ""},
		{"addr zone", ListenAddr("[fe80::1%eth0]:1", false), ""},
		{"addr off", ListenAddr("", true), ""},
		{"addr required", ListenAddr("", false), "want HOST:PORT"},
		{"addr no port", ListenAddr("8181", false), "want HOST:PORT"},
		{"addr big port", ListenAddr("127.0.0.1:65536", false), "port from 0 to 65535"},
		{"addr bad host", ListenAddr("bad host:1", false), "want HOST:PORT"},
		{"addr v4 zone", ListenAddr("[10.0.0.1%eth0]:1", false), "want HOST:PORT"},
		{"matches", Matches("abc", name, "a word"), ""},
		{"no match", Matches("a c", name, "a word"), "want a word"},
		{"blank or", BlankOr("", name, "a word"), ""},
		{"blank or no match", BlankOr("A", name, "a word"), "want a word, or nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if (tc.want == "") != (tc.got == "") || !strings.Contains(tc.got, tc.want) {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

// TestValidate: every refused flag is reported, naming the flag and its
// environment twin, or the file's key; the error is a UsageError.
func TestValidate(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var s string
	var n int
	fs.StringVar(&s, "a-name", "", "")
	fs.IntVar(&n, "count", 0, "")
	rules := map[string]Rule{
		"a-name": func() string { return NonBlank(s, "a name") },
		"count":  func() string { return IntIn(int64(n), 1, 9) },
	}
	if err := fs.Parse([]string{"--a-name= x", "--count=3"}); err != nil {
		t.Fatal(err)
	}
	err := Validate(fs, rules)
	var u *UsageError
	if !errors.As(err, &u) || err.Error() != `--a-name=" x" (or CRMAUTHZ_A_NAME): want a name (not blank, no surrounding white space)` {
		t.Fatalf("err %v", err)
	}
	if err := fs.Set("a-name", "x"); err != nil {
		t.Fatal(err)
	}
	if err := Validate(fs, rules); err != nil {
		t.Fatal(err)
	}
	fs.Lookup("count").Annotations = map[string][]string{sourceAnnotation: {"c.yaml"}}
	if err := fs.Set("count", "0"); err != nil {
		t.Fatal(err)
	}
	if err := Validate(fs, rules); err == nil || err.Error() != `c.yaml: key "count" = 0: want a number from 1 to 9` {
		t.Fatalf("err %v", err)
	}
}

// TestApplyEnv: a twin sets a flag the command line did not; the command
// line wins; a twin that does not parse is a UsageError naming it.
func TestApplyEnv(t *testing.T) {
	t.Setenv("CRMAUTHZ_MAX_BYTES", "7")
	t.Setenv("CRMAUTHZ_LEVEL", "debug")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	n := fs.Int("max-bytes", 1, "")
	level := fs.String("level", "info", "")
	if err := fs.Parse([]string{"--level=warn"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyEnv(fs); err != nil || *n != 7 || *level != "warn" {
		t.Fatalf("err %v, max-bytes %d, level %q", err, *n, *level)
	}
	t.Setenv("CRMAUTHZ_MAX_BYTES", "many")
	fs = pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Int("max-bytes", 1, "")
	err := ApplyEnv(fs)
	var u *UsageError
	if !errors.As(err, &u) || !strings.HasPrefix(err.Error(), `CRMAUTHZ_MAX_BYTES="many": `) {
		t.Fatalf("err %v", err)
	}
}
