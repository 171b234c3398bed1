package main

import (
	"net/url"
	"regexp"
	"time"

	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/cliflags"
)

// hlID is the shape of HighLevel's company and location ids (and of the demo's).
var hlID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// highLevelRules is the rule of every flag of `connect highlevel` (daemon) and of its sync, by
// name (docs/highlevel.md, flags table), in the style of serve's (validate.go).
func highLevelRules(o *highLevelOptions) map[string]cliflags.Rule {
	none := func() string { return "" }
	oneToken := func() string {
		if (o.tokenFile == "") == (o.tokenDir == "") {
			return "want exactly one of --token-file and --token-dir"
		}
		return ""
	}
	rules := map[string]cliflags.Rule{
		"api-url": func() string {
			u, err := url.Parse(o.apiURL)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.User != nil {
				return "want http(s)://HOST[:PORT][/PATH]"
			}
			return ""
		},
		"token-file": func() string {
			if w := cliflags.BlankOrPath(o.tokenFile); w != "" {
				return w
			}
			return oneToken()
		},
		"token-dir": func() string {
			if w := cliflags.BlankOrPath(o.tokenDir); w != "" {
				return w
			}
			return oneToken()
		},
		"company-id": func() string {
			if o.companyID != "" && !hlID.MatchString(o.companyID) {
				return "want a HighLevel company id (letters, digits, - and _), or nothing"
			}
			return ""
		},
		"location-ids": func() string {
			const want = "want one or more HighLevel location ids (letters, digits, - and _), comma-separated, each once"
			if len(o.locationIDs) == 0 {
				return want
			}
			seen := map[string]bool{}
			for _, l := range o.locationIDs {
				if !hlID.MatchString(l) || seen[l] {
					return want
				}
				seen[l] = true
			}
			return ""
		},
		"webhook-public-key-file": func() string { return cliflags.BlankOrPath(o.publicKeyFile) },
		"webhook-legacy-key-file": func() string { return cliflags.BlankOrPath(o.legacyKeyFile) },
		"webhook-legacy-rsa":      none,
		"reconcile-interval":      func() string { return cliflags.DurationIn(o.reconcileInterval, time.Minute, 24*time.Hour) },
		"max-pending":             func() string { return cliflags.IntIn(int64(o.maxPending), 1, 10_000_000) },
		"daily-request-budget":    func() string { return cliflags.IntIn(int64(o.dailyBudget), 0, 100_000_000) },
		"state-dir":               func() string { return cliflags.NonBlank(o.stateDir, "a directory") },
		"webhook-addr":            func() string { return cliflags.ListenAddr(o.webhookAddr, false) },
		"admin-addr":              func() string { return cliflags.ListenAddr(o.adminAddr, false) },
		"log-level":               func() string { return cliflags.OneOf(o.logLevel, "debug", "info", "warn", "error") },
	}
	for name, rule := range sinkRules(&o.sink) {
		rules[name] = rule
	}
	return rules
}

// validateHighLevel checks every flag before anything starts (cliflags.Validate).
func validateHighLevel(fs *pflag.FlagSet, o *highLevelOptions) error {
	return cliflags.Validate(fs, highLevelRules(o))
}
