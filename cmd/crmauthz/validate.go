package main

import (
	"fmt"
	"maps"
	"math"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/net/http/httpguts"

	"github.com/crmauthz/crmauthz/internal/cliflags"
	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/natssource"
)

// exitUsage is the exit code of a command line (or environment) that is
// refused before anything starts: a flag that does not parse or a value out
// of its range (docs/operations.md, "Flag ranges").
const exitUsage = 2

// usageError is a refused command line: exit code 2.
func usageError(err error) error { return &cliflags.UsageError{Err: err} }

// flagUsageError makes cobra's "flag does not parse" errors usage errors.
func flagUsageError(_ *cobra.Command, err error) error { return usageError(err) }

// validateServe checks every flag of serve before anything starts. An
// environment twin sets its flag (cliflags.ApplyEnv), so it is checked the same way.
// Every problem is reported, each naming the flag, its twin and the range.
func validateServe(fs *pflag.FlagSet, o *serveOptions) error {
	return cliflags.Validate(fs, serveRules(o))
}

// serveRules is the rule of every flag of serve, by name.
func serveRules(o *serveOptions) map[string]cliflags.Rule {
	none := func() string { return "" } // any value is meaningful
	rules := map[string]cliflags.Rule{
		// listeners
		"addr":       func() string { return cliflags.ListenAddr(o.addr, false) },
		"admin-addr": func() string { return cliflags.ListenAddr(o.adminAddr, false) },
		"grpc-addr":  func() string { return cliflags.ListenAddr(o.gw.grpcAddr, true) },

		// files and directories (their contents are checked when read)
		"config":                 func() string { return cliflags.BlankOrPath(o.configFile) },
		"data-dir":               func() string { return cliflags.NonBlank(o.dataDir, "a directory") },
		"policies":               func() string { return cliflags.BlankOrPath(o.policiesDir) },
		"policies-require-tests": none,
		"replication-token-file": func() string { return cliflags.BlankOrPath(o.tokenFile) },
		"load-snapshot":          func() string { return cliflags.RegularFile(o.loadSnapshot, "snapshot file") }, // read only into an empty index
		"filter-mapping":         func() string { return mappingFile(o.filterMapping) },
		"jwt-hs256-secret-file":  func() string { return cliflags.BlankOrPath(o.gw.hs256File) },
		"jwt-jwks-file":          func() string { return cliflags.BlankOrPath(o.gw.jwksFile) },

		// timeouts: 0 would switch a protection off (or silently mean a default)
		"read-header-timeout": func() string {
			if w := cliflags.DurationIn(o.readHeaderTO, time.Millisecond, 5*time.Minute); w != "" {
				return w
			}
			if o.readHeaderTO > o.readTO && cliflags.DurationIn(o.readTO, time.Millisecond, time.Hour) == "" {
				return "want at most --read-timeout (" + o.readTO.String() + ")"
			}
			return ""
		},
		"read-timeout":       func() string { return cliflags.DurationIn(o.readTO, time.Millisecond, time.Hour) }, // see read-header-timeout
		"snapshot-timeout":   func() string { return cliflags.DurationIn(o.snapshotTimeout, time.Second, 24*time.Hour) },
		"consistency-wait":   func() string { return cliflags.DurationIn(o.consistencyWait, time.Millisecond, time.Minute) },
		"index-lock-timeout": func() string { return cliflags.DurationIn(o.indexLockTimeout, time.Millisecond, time.Hour) },
		"eval-timeout":       func() string { return cliflags.DurationIn(o.evalTimeout, time.Millisecond, 5*time.Minute) },
		"body-timeout":       func() string { return cliflags.DurationIn(o.bodyTimeout, time.Millisecond, time.Hour) },
		"shutdown-timeout":   func() string { return cliflags.DurationIn(o.shutdownTimeout, 0, time.Hour) },
		"jwt-leeway":         func() string { return cliflags.DurationIn(o.gw.leeway, 0, 10*time.Minute) },
		"nats-batch-wait":    func() string { return cliflags.DurationIn(o.nats.batchWait, time.Microsecond, time.Second) },

		// sizes and counts
		"max-decision-bytes":  func() string { return cliflags.BytesIn(o.maxDecisionBytes, cliflags.KiB, 64*cliflags.MiB) },
		"max-batch-bytes":     func() string { return cliflags.BytesIn(o.maxBatchBytes, cliflags.KiB, cliflags.GiB) },
		"index-merge-bytes":   func() string { return cliflags.BytesIn(o.indexMergeBytes, cliflags.MiB, cliflags.GiB) },
		"max-snapshot-bytes":  func() string { return cliflags.BytesIn(o.maxSnapshotBytes, cliflags.KiB, 1024*cliflags.GiB) },
		"max-batch-events":    func() string { return cliflags.IntIn(int64(o.maxBatchEvents), 1, 1_000_000) },
		"max-in-flight":       func() string { return cliflags.InFlight(o.maxInFlight) },
		"admin-max-in-flight": func() string { return cliflags.InFlight(o.adminMaxInFlight) },
		"decision-cache-slots": func() string {
			if o.decisionCacheSlots > 1<<24 {
				return "want 0 (65536 slots), a negative number (no cache) or at most 16777216"
			}
			return ""
		},
		"decision-log-buffer": func() string { return cliflags.IntIn(int64(o.decisionLogBuffer), 1, 1_000_000) },
		"nats-batch-max":      func() string { return cliflags.IntIn(int64(o.nats.batchMax), 1, natssource.MaxBatchLimit) },
		"ready-min-seq":       none,
		"pprof":               none, // a bool: pflag refuses what does not parse
		"index-populate":      none, // a bool
		"adaptive-procs":      none, // a bool
		"memory-limit": func() string {
			if o.mem.limit < 0 || (o.mem.limit > 0 && o.mem.limit < 64*cliflags.MiB) {
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
		"log-level":        func() string { return cliflags.OneOf(o.logLevel, "debug", "info", "warn", "error") },
		"policy-evaluator": func() string { return cliflags.OneOf(o.policyEvaluator, "auto", "ir", "topdown") },
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
		"subject-claim": func() string { return cliflags.NonBlank(o.gw.subjectClaim, "a claim name, e.g. sub") },
		"jwt-issuer":    func() string { return cliflags.Trimmed(o.gw.issuer) },
		"jwt-audience":  func() string { return cliflags.Trimmed(o.gw.audience) },

		// NATS
		"replication-source": func() string { return natsURLs(o.nats.source) },
		"nats-stream": func() string {
			return cliflags.Matches(o.nats.stream, natsName, "a stream name (letters, digits, - and _)")
		},
		"nats-subject": func() string { return natsSubject(o.nats.subject) },
		"nats-snapshot-bucket": func() string {
			return cliflags.BlankOr(o.nats.bucket, natsName, "a bucket name (letters, digits, - and _)")
		},
	}
	// NATS credentials and TLS: the rules every NATS client command shares (natsflags.go)
	maps.Copy(rules, o.nats.natsAuthOptions.rules())
	// OpenTelemetry: the rules every traced command shares (tracingflags.go)
	maps.Copy(rules, o.tracing.rules())
	return rules
}

var natsName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

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
