package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/net/http/httpguts"

	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/natssource"
)

// exitUsage is the exit code of a command line (or environment) that is
// refused before anything starts: a flag that does not parse or a value out
// of its range (docs/operations.md, "Flag ranges").
const exitUsage = 2

// usageError is a refused command line: exit code 2.
func usageError(err error) error {
	return &exitError{code: exitUsage, msg: err.Error(), err: err}
}

// flagUsageError makes cobra's "flag does not parse" errors usage errors.
func flagUsageError(_ *cobra.Command, err error) error { return usageError(err) }

// flagRule checks one flag's value; it returns what is wanted instead, or
// "" when the value is fine.
type flagRule func() string

// validateServe checks every flag of serve before anything starts. An
// environment twin sets its flag (applyEnv), so it is checked the same way.
// Every problem is reported, each naming the flag, its twin and the range.
func validateServe(fs *pflag.FlagSet, o *serveOptions) error {
	return validateFlags(fs, serveRules(o))
}

// validateFlags checks every flag of fs with its rule before anything
// starts: exit 2, each problem naming the flag and its environment twin (or
// the configuration file's key) and what is wanted.
func validateFlags(fs *pflag.FlagSet, rules map[string]flagRule) error {
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
			errs = append(errs, fmt.Errorf("--%s=%s (or %s): %s", f.Name, shownValue(f), envName(f.Name), want))
		}
	})
	if len(errs) > 0 {
		return usageError(errors.Join(errs...))
	}
	return nil
}

func shownValue(f *pflag.Flag) string {
	if f.Value.Type() == "string" {
		return strconv.Quote(f.Value.String())
	}
	return f.Value.String()
}

// Limits shared by several flags.
const (
	maxInFlightLimit = 1_000_000
	kib              = 1 << 10
	mib              = 1 << 20
	gib              = 1 << 30
)

// serveRules is the rule of every flag of serve, by name.
func serveRules(o *serveOptions) map[string]flagRule {
	none := func() string { return "" } // any value is meaningful
	return map[string]flagRule{
		// listeners
		"addr":       func() string { return listenAddr(o.addr, false) },
		"admin-addr": func() string { return listenAddr(o.adminAddr, false) },
		"grpc-addr":  func() string { return listenAddr(o.gw.grpcAddr, true) },

		// files and directories (their contents are checked when read)
		"config":                 func() string { return blankOrPath(o.configFile) },
		"data-dir":               func() string { return nonBlank(o.dataDir, "a directory") },
		"policies":               func() string { return blankOrPath(o.policiesDir) },
		"policies-require-tests": none,
		"replication-token-file": func() string { return blankOrPath(o.tokenFile) },
		"load-snapshot":          func() string { return regularFile(o.loadSnapshot) },
		"filter-mapping":         func() string { return mappingFile(o.filterMapping) },
		"jwt-hs256-secret-file":  func() string { return blankOrPath(o.gw.hs256File) },
		"jwt-jwks-file":          func() string { return blankOrPath(o.gw.jwksFile) },
		"nats-creds":             func() string { return blankOrPath(o.nats.creds) },
		"nats-password-file":     func() string { return pairedPath(o.nats.passwordFile, o.nats.user, "--nats-user") },
		"nats-token-file":        func() string { return blankOrPath(o.nats.tokenFile) },
		"nats-tls-ca":            func() string { return blankOrPath(o.nats.tlsCA) },
		"nats-tls-cert":          func() string { return pairedPath(o.nats.tlsCert, o.nats.tlsKey, "--nats-tls-key") },
		"nats-tls-key":           func() string { return pairedPath(o.nats.tlsKey, o.nats.tlsCert, "--nats-tls-cert") },

		// timeouts: 0 would switch a protection off (or silently mean a default)
		"read-header-timeout": func() string {
			if w := durationIn(o.readHeaderTO, time.Millisecond, 5*time.Minute); w != "" {
				return w
			}
			if o.readHeaderTO > o.readTO && durationIn(o.readTO, time.Millisecond, time.Hour) == "" {
				return "want at most --read-timeout (" + o.readTO.String() + ")"
			}
			return ""
		},
		"read-timeout":       func() string { return durationIn(o.readTO, time.Millisecond, time.Hour) }, // see read-header-timeout
		"snapshot-timeout":   func() string { return durationIn(o.snapshotTimeout, time.Second, 24*time.Hour) },
		"consistency-wait":   func() string { return durationIn(o.consistencyWait, time.Millisecond, time.Minute) },
		"index-lock-timeout": func() string { return durationIn(o.indexLockTimeout, time.Millisecond, time.Hour) },
		"eval-timeout":       func() string { return durationIn(o.evalTimeout, time.Millisecond, 5*time.Minute) },
		"body-timeout":       func() string { return durationIn(o.bodyTimeout, time.Millisecond, time.Hour) },
		"shutdown-timeout":   func() string { return durationIn(o.shutdownTimeout, 0, time.Hour) },
		"jwt-leeway":         func() string { return durationIn(o.gw.leeway, 0, 10*time.Minute) },
		"nats-batch-wait":    func() string { return durationIn(o.nats.batchWait, time.Microsecond, time.Second) },

		// sizes and counts
		"max-decision-bytes":  func() string { return bytesIn(o.maxDecisionBytes, kib, 64*mib) },
		"max-batch-bytes":     func() string { return bytesIn(o.maxBatchBytes, kib, gib) },
		"max-snapshot-bytes":  func() string { return bytesIn(o.maxSnapshotBytes, kib, 1024*gib) },
		"max-batch-events":    func() string { return intIn(int64(o.maxBatchEvents), 1, 1_000_000) },
		"max-in-flight":       func() string { return inFlight(o.maxInFlight) },
		"admin-max-in-flight": func() string { return inFlight(o.adminMaxInFlight) },
		"decision-cache-slots": func() string {
			if o.decisionCacheSlots > 1<<24 {
				return "want 0 (65536 slots), a negative number (no cache) or at most 16777216"
			}
			return ""
		},
		"decision-log-buffer": func() string { return intIn(int64(o.decisionLogBuffer), 1, 1_000_000) },
		"nats-batch-max":      func() string { return intIn(int64(o.nats.batchMax), 1, natssource.MaxBatchLimit) },
		"ready-min-seq":       none,
		"memory-limit": func() string {
			if o.mem.limit < 0 || (o.mem.limit > 0 && o.mem.limit < 64*mib) {
				return "want 0 (GOMEMLIMIT, else 90% of the cgroup's limit) or at least 67108864 bytes"
			}
			return ""
		},
		"gc-percent": func() string {
			if p := o.mem.gcPercent; p != 0 && p != -1 && (p < minGCPercent || p > maxGCPercent) {
				return fmt.Sprintf("want 0 (GOGC, else %d), -1 (only with a memory limit) or %d to %d", defaultGCPercent, minGCPercent, maxGCPercent)
			}
			return ""
		},

		// enumerations and lists
		"log-level":        func() string { return oneOf(o.logLevel, "debug", "info", "warn", "error") },
		"policy-evaluator": func() string { return oneOf(o.policyEvaluator, "auto", "ir", "topdown") },
		"decision-log": func() string {
			if strings.TrimSpace(o.decisionLog) == "" {
				return `want off, stdout or a file`
			}
			return ""
		},
		"decision-log-sample": func() string {
			if s := o.decisionLogSample; !(s >= 0 && s <= 1) || math.IsNaN(s) {
				return "want a fraction from 0 to 1"
			}
			return ""
		},
		"decision-log-mask":  func() string { return logFields(o.decisionLogMask) },
		"decision-log-erase": func() string { return logFields(o.decisionLogErase) },
		"data-api-paths": func() string {
			for _, p := range o.dataAPIPaths {
				if strings.Trim(strings.TrimSpace(p), "/") == "" {
					return `want data paths such as crmauthz/decision, separated by commas, "*" for all, or nothing (--data-api-paths=) for none`
				}
			}
			return ""
		},

		// identity
		"subject-header": func() string {
			if !httpguts.ValidHeaderFieldName(o.gw.subjectHeader) {
				return "want a header name (an HTTP token, e.g. X-User-Id)"
			}
			return ""
		},
		"subject-claim": func() string { return nonBlank(o.gw.subjectClaim, "a claim name, e.g. sub") },
		"jwt-issuer":    func() string { return trimmed(o.gw.issuer) },
		"jwt-audience":  func() string { return trimmed(o.gw.audience) },

		// OpenTelemetry (tracingflags.go)
		"otlp-endpoint":        o.tracing.endpointRule,
		"otlp-insecure":        o.tracing.insecureRule,
		"otlp-ca-file":         o.tracing.caFileRule,
		"trace-sampling-ratio": o.tracing.ratioRule,

		// NATS
		"replication-source":   func() string { return natsURLs(o.nats.source) },
		"nats-stream":          func() string { return matches(o.nats.stream, natsName, "a stream name (letters, digits, - and _)") },
		"nats-subject":         func() string { return natsSubject(o.nats.subject) },
		"nats-snapshot-bucket": func() string { return blankOr(o.nats.bucket, natsName, "a bucket name (letters, digits, - and _)") },
		"nats-user": func() string {
			if o.nats.user != "" && o.nats.passwordFile == "" {
				return "want it with --nats-password-file"
			}
			return trimmed(o.nats.user)
		},
	}
}

func durationIn(d, lo, hi time.Duration) string {
	if d < lo || d > hi {
		return fmt.Sprintf("want a duration from %s to %s", lo, hi)
	}
	return ""
}

func intIn(n, lo, hi int64) string {
	if n < lo || n > hi {
		return fmt.Sprintf("want a number from %d to %d", lo, hi)
	}
	return ""
}

func bytesIn(n, lo, hi int64) string {
	if n < lo || n > hi {
		return fmt.Sprintf("want from %d to %d bytes (%s to %s)", lo, hi, sizeName(lo), sizeName(hi))
	}
	return ""
}

func sizeName(n int64) string {
	switch {
	case n >= gib && n%gib == 0:
		return fmt.Sprintf("%d GiB", n/gib)
	case n >= mib && n%mib == 0:
		return fmt.Sprintf("%d MiB", n/mib)
	case n >= kib && n%kib == 0:
		return fmt.Sprintf("%d KiB", n/kib)
	}
	return fmt.Sprintf("%d bytes", n)
}

// inFlight: 0 is the documented "no limit"; a negative number is not.
func inFlight(n int) string {
	if n < 0 || n > maxInFlightLimit {
		return fmt.Sprintf("want 0 (no limit) or a number from 1 to %d", maxInFlightLimit)
	}
	return ""
}

func oneOf(v string, set ...string) string {
	for _, s := range set {
		if v == s {
			return ""
		}
	}
	return "want one of " + strings.Join(set, ", ")
}

func nonBlank(v, what string) string {
	if strings.TrimSpace(v) == "" || strings.TrimSpace(v) != v {
		return "want " + what + " (not blank, no surrounding white space)"
	}
	return ""
}

func trimmed(v string) string {
	if strings.TrimSpace(v) != v {
		return "want a value without surrounding white space (empty: not set)"
	}
	return ""
}

// blankOrPath: "" (not set) or a path that is not just white space.
func blankOrPath(v string) string {
	if v != "" && strings.TrimSpace(v) == "" {
		return "want a path, or nothing"
	}
	return ""
}

// pairedPath: blankOrPath, and when set, only with the other flag.
func pairedPath(v, other, otherFlag string) string {
	if w := blankOrPath(v); w != "" {
		return w
	}
	if v != "" && other == "" {
		return "want it with " + otherFlag
	}
	return ""
}

// regularFile: "" or an existing regular file. --load-snapshot is read only
// when the index is empty, so a wrong path would otherwise go unnoticed.
func regularFile(v string) string {
	if v == "" {
		return ""
	}
	st, err := os.Stat(v)
	if err != nil {
		return "want an existing snapshot file: " + err.Error()
	}
	if !st.Mode().IsRegular() {
		return "want a file, not a " + st.Mode().Type().String()
	}
	return ""
}

// mappingFile: empty (the default schema) or a mapping file that parses
// (docs/filtering.md), so a bad mapping stops serve before it listens.
func mappingFile(v string) string {
	if v == "" {
		return ""
	}
	if _, err := mapping.Load(v); err != nil {
		return "want a table mapping file (docs/filtering.md): " + err.Error()
	}
	return ""
}

// listenAddr: HOST:PORT with a numeric port; HOST may be empty (every
// interface), an IP address or a name. "" only where the listener is
// optional (off).
func listenAddr(v string, optional bool) string {
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
	if host != "" && net.ParseIP(host) == nil && !hostName.MatchString(host) {
		return want
	}
	return ""
}

var (
	hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	natsName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

func matches(v string, re *regexp.Regexp, what string) string {
	if !re.MatchString(v) {
		return "want " + what
	}
	return ""
}

func blankOr(v string, re *regexp.Regexp, what string) string {
	if v == "" {
		return ""
	}
	return matches(v, re, what+", or nothing")
}

// natsSubject: dot-separated tokens, none empty, no white space; * and >
// only as whole tokens, > only last.
func natsSubject(v string) string {
	const want = "want a NATS subject such as crmauthz.events (dot-separated tokens, no white space)"
	toks := strings.Split(v, ".")
	for i, t := range toks {
		if t == "" || strings.ContainsAny(t, " \t\r\n") ||
			(strings.ContainsAny(t, "*>") && t != "*" && t != ">") || (t == ">" && i != len(toks)-1) {
			return want
		}
	}
	return ""
}

// natsURLs: "" (off) or comma-separated nats:// or tls:// URLs with a host.
func natsURLs(v string) string {
	if v == "" {
		return ""
	}
	for _, s := range strings.Split(v, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return "want nats://HOST:PORT or tls://HOST:PORT, comma-separated for a cluster, or nothing"
		}
	}
	return ""
}

func logFields(fields []string) string {
	for _, f := range fields {
		if decisionlog.CheckField(f) != nil {
			return "want fields such as input.subject or /input/target, separated by commas"
		}
	}
	return ""
}
