package main

import (
	"maps"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/crmauthz/crmauthz/internal/cliflags"
)

// sinkRules are the rules of the sink flags every connector shares (docs/connectors.md "Sink"),
// in the style of serve's (validate.go).
func sinkRules(o *sinkOptions) map[string]cliflags.Rule {
	rules := map[string]cliflags.Rule{
		"sink": func() string {
			const want = "want http://HOST:PORT (a crmauthz's admin listener) or nats://HOST:PORT (tls://, comma-separated for a cluster)"
			if strings.HasPrefix(o.url, "http://") || strings.HasPrefix(o.url, "https://") {
				if u, err := url.Parse(o.url); err != nil || u.Host == "" || u.RawQuery != "" {
					return want
				}
				return ""
			}
			if o.url == "" || natsURLs(o.url) != "" {
				return want
			}
			return ""
		},
		"sink-token-file": func() string { return cliflags.BlankOrPath(o.tokenFile) },
		"sink-stream":     func() string { return cliflags.Matches(o.stream, natsName, "a stream name (letters, digits, - and _)") },
		"sink-subject":    func() string { return natsSubject(o.subject) },
		"sink-snapshot-bucket": func() string {
			return cliflags.Matches(o.bucket, natsName, "a bucket name (letters, digits, - and _)")
		},
		"config": func() string { return cliflags.BlankOrPath(o.configFile) },
	}
	maps.Copy(rules, o.natsAuthOptions.rules()) // natsflags.go
	// OpenTelemetry: the rules every traced command shares (tracingflags.go)
	maps.Copy(rules, o.tracing.rules())
	return rules
}

// pgName is a slot or publication name as PostgreSQL accepts it unquoted (docs/postgres.md).
var pgName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// postgresRules is the rule of every flag of `connect postgres` (docs/postgres.md).
func postgresRules(o *connectPostgresOptions) map[string]cliflags.Rule {
	rules := map[string]cliflags.Rule{
		"dsn": func() string {
			if _, err := pgx.ParseConfig(o.dsn); err != nil || !strings.HasPrefix(o.dsn, "postgres") {
				return "want a PostgreSQL URL, postgres://USER@HOST:PORT/DB"
			}
			return ""
		},
		"mapping": func() string { return mappingFile(o.mappingFile) },
		"slot": func() string {
			return cliflags.Matches(o.slot, pgName, "a slot name (lower-case letters, digits and _, at most 63)")
		},
		"publication": func() string {
			return cliflags.Matches(o.publication, pgName, "a publication name (lower-case letters, digits and _, at most 63)")
		},
		"state-dir":  func() string { return cliflags.NonBlank(o.stateDir, "a directory") },
		"admin-addr": func() string { return cliflags.ListenAddr(o.adminAddr, false) },
		"log-level":  func() string { return cliflags.OneOf(o.logLevel, "debug", "info", "warn", "error") },
	}
	for name, rule := range sinkRules(&o.sink) {
		rules[name] = rule
	}
	return rules
}
