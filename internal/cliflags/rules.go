package cliflags

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Sizes, for BytesIn's bounds.
const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
)

// maxInFlightLimit bounds InFlight.
const maxInFlightLimit = 1_000_000

// Rule checks one flag's value; it returns what is wanted instead, or
// "" when the value is fine.
type Rule func() string

// Validate checks every flag of fs with its rule before anything
// starts: exit 2, each problem naming the flag and its environment twin (or
// the configuration file's key) and what is wanted.
func Validate(fs *pflag.FlagSet, rules map[string]Rule) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		rule, ok := rules[f.Name]
		if !ok {
			return // help; the tests keep every other flag ruled
		}
		if want := rule(); want != "" {
			if src := flagSource(f); src != "--"+f.Name {
				errs = append(errs, fmt.Errorf("%s = %s: %s", src, shownValue(f), want))
				return
			}
			errs = append(errs, fmt.Errorf("--%s=%s (or %s): %s", f.Name, shownValue(f), EnvName(f.Name), want))
		}
	})
	if len(errs) > 0 {
		return usage(errors.Join(errs...))
	}
	return nil
}

func shownValue(f *pflag.Flag) string {
	if f.Value.Type() == "string" {
		return strconv.Quote(f.Value.String())
	}
	return f.Value.String()
}

// The rules below return what is wanted instead of v, or "" when v is fine;
// a command's Rule calls them with its field and bounds.

// DurationIn: from lo to hi.
func DurationIn(d, lo, hi time.Duration) string {
	if d < lo || d > hi {
		return fmt.Sprintf("want a duration from %s to %s", lo, hi)
	}
	return ""
}

// IntIn: from lo to hi.
func IntIn(n, lo, hi int64) string {
	if n < lo || n > hi {
		return fmt.Sprintf("want a number from %d to %d", lo, hi)
	}
	return ""
}

// BytesIn: a size from lo to hi bytes; the message gives both in KiB, MiB
// or GiB too.
func BytesIn(n, lo, hi int64) string {
	if n < lo || n > hi {
		return fmt.Sprintf("want from %d to %d bytes (%s to %s)", lo, hi, sizeName(lo), sizeName(hi))
	}
	return ""
}

func sizeName(n int64) string {
	switch {
	case n >= GiB && n%GiB == 0:
		return fmt.Sprintf("%d GiB", n/GiB)
	case n >= MiB && n%MiB == 0:
		return fmt.Sprintf("%d MiB", n/MiB)
	case n >= KiB && n%KiB == 0:
		return fmt.Sprintf("%d KiB", n/KiB)
	}
	return fmt.Sprintf("%d bytes", n)
}

// InFlight: 0 is the documented "no limit"; a negative number is not.
func InFlight(n int) string {
	if n < 0 || n > maxInFlightLimit {
		return fmt.Sprintf("want 0 (no limit) or a number from 1 to %d", maxInFlightLimit)
	}
	return ""
}

// OneOf: one of set, exactly.
func OneOf(v string, set ...string) string {
	for _, s := range set {
		if v == s {
			return ""
		}
	}
	return "want one of " + strings.Join(set, ", ")
}

// NonBlank: a value, what the message calls it, without surrounding white space.
func NonBlank(v, what string) string {
	if strings.TrimSpace(v) == "" || strings.TrimSpace(v) != v {
		return "want " + what + " (not blank, no surrounding white space)"
	}
	return ""
}

// Trimmed: "" (not set) or a value without surrounding white space.
func Trimmed(v string) string {
	if strings.TrimSpace(v) != v {
		return "want a value without surrounding white space (empty: not set)"
	}
	return ""
}

// BlankOrPath: "" (not set) or a path that is not just white space.
func BlankOrPath(v string) string {
	if v != "" && strings.TrimSpace(v) == "" {
		return "want a path, or nothing"
	}
	return ""
}

// PairedPath: BlankOrPath, and when set, only with the other flag.
func PairedPath(v, other, otherFlag string) string {
	if w := BlankOrPath(v); w != "" {
		return w
	}
	if v != "" && other == "" {
		return "want it with " + otherFlag
	}
	return ""
}

// RegularFile: "" or an existing regular file, what the message calls it
// (for a file read only later, whose wrong path would otherwise go unnoticed).
func RegularFile(v, what string) string {
	if v == "" {
		return ""
	}
	st, err := os.Stat(v)
	if err != nil {
		return "want an existing " + what + ": " + err.Error()
	}
	if !st.Mode().IsRegular() {
		return "want a file, not a " + st.Mode().Type().String()
	}
	return ""
}

// ListenAddr: HOST:PORT with a numeric port; HOST may be empty (every
// interface), an IP address or a name. "" only where the listener is
// optional (off).
func ListenAddr(v string, optional bool) string {
	const want = "want HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:8181"
	if v == "" {
		if optional {
			return ""
		}
		return want
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return want
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return want
	}
	if ip, zone, ok := strings.Cut(host, "%"); ok { // fe80::1%eth0
		if net.ParseIP(ip).To16() == nil || net.ParseIP(ip).To4() != nil || zone == "" {
			return want
		}
		return ""
	}
	hostName := regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	if host != "" && net.ParseIP(host) == nil && !hostName.MatchString(host) {
		return want
	}
	return ""
}

// Matches: a value re matches, what the message calls it.
func Matches(v string, re *regexp.Regexp, what string) string {
	if !re.MatchString(v) {
		return "want " + what
	}
	return ""
}

// BlankOr: "" (not set) or Matches.
func BlankOr(v string, re *regexp.Regexp, what string) string {
	if v == "" {
		return ""
	}
	return Matches(v, re, what+", or nothing")
}
