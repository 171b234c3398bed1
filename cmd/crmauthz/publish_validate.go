package main

import (
	"maps"

	"github.com/crmauthz/crmauthz/internal/cliflags"
)

// maxStreamReplicas is the most replicas a JetStream stream may have.
const maxStreamReplicas = 5

// natsURLRequired: one or more nats:// or tls:// URLs; the one-shot commands
// need a server (serve's --replication-source may be off).
func natsURLRequired(v string) string {
	if v == "" || natsURLs(v) != "" {
		return "want nats://HOST:PORT or tls://HOST:PORT, comma-separated for a cluster"
	}
	return ""
}

// publishRules is the rule of every flag of `crmauthz publish`, in the style
// of serve's (validate.go): a bad value exits 2 before anything is sent.
func publishRules(o *publishOptions) map[string]cliflags.Rule {
	none := func() string { return "" } // any value is meaningful
	rules := map[string]cliflags.Rule{
		"nats":     func() string { return natsURLRequired(o.url) },
		"stream":   func() string { return cliflags.Matches(o.stream, natsName, "a stream name (letters, digits, - and _)") },
		"subject":  func() string { return natsSubject(o.subject) },
		"create":   none,
		"dry-run":  none,
		"max-msgs": func() string { return notNegative(o.maxMsgs < 0, "a number") },
		"max-age":  func() string { return notNegative(o.maxAge < 0, "a duration") },
		"replicas": func() string { return cliflags.IntIn(int64(o.replicas), 1, maxStreamReplicas) },
	}
	maps.Copy(rules, o.natsAuthOptions.rules()) // natsflags.go
	maps.Copy(rules, o.tracing.rules())         // tracingflags.go
	return rules
}

// snapshotPublishRules is the rule of every flag of `crmauthz snapshot publish`.
func snapshotPublishRules(o *snapshotPublishOptions) map[string]cliflags.Rule {
	none := func() string { return "" }
	rules := map[string]cliflags.Rule{
		"nats":        func() string { return natsURLRequired(o.url) },
		"bucket":      func() string { return cliflags.Matches(o.bucket, natsName, "a bucket name (letters, digits, - and _)") },
		"name":        func() string { return cliflags.NonBlank(o.name, "an object name, e.g. snapshot") },
		"create":      none,
		"no-validate": none,
	}
	maps.Copy(rules, o.natsAuthOptions.rules())
	maps.Copy(rules, o.tracing.rules())
	return rules
}

// notNegative: the stream limits of --create, 0 for none.
func notNegative(negative bool, what string) string {
	if negative {
		return "want " + what + " of 0 (no limit) or more"
	}
	return ""
}
