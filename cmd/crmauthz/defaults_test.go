package main

import (
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel"
	"github.com/crmauthz/crmauthz/internal/connect/postgres"
	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/natspub"
	"github.com/crmauthz/crmauthz/internal/natssource"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/server"
)

// parsedDefaults registers flags on a new flag set and parses an empty command
// line, so every option holds its flag's default.
func parsedDefaults(tb testing.TB, add func(*pflag.FlagSet)) {
	tb.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	add(fs)
	if err := fs.Parse(nil); err != nil {
		tb.Fatal(err)
	}
}

// TestFlagDefaults: the configuration each command builds from its flags'
// defaults is the component's DefaultConfig, so a default lives in one place.
func TestFlagDefaults(t *testing.T) {
	var so serveOptions
	parsedDefaults(t, so.addFlags)
	var po connectPostgresOptions
	parsedDefaults(t, po.addFlags)
	var ho highLevelOptions
	parsedDefaults(t, func(f *pflag.FlagSet) { ho.flags(f, true) })
	pub := newPublishCmd().Flags()

	pcfg, err := so.policyConfig()
	if err != nil {
		t.Fatal(err)
	}
	pd := defaultPolicyConfig()
	idGot, idWant := so.gw.identityConfig(), identity.DefaultConfig()
	idWant.Now = nil // no flag: New's clock
	ixd := index.DefaultConfig()
	hd := highlevel.DefaultConfig()
	logNames := natspub.DefaultConfig()

	cases := []struct {
		name      string
		got, want any
	}{
		{"server", so.serverConfig(), server.DefaultConfig()},
		{"index", so.indexConfig(), index.Config{Dir: ixd.Dir, Timeout: ixd.Timeout, MergeBytes: ixd.MergeBytes}},
		{"replication", so.replicationConfig(), replication.Config{MaxEvents: replication.DefaultConfig().MaxEvents}},
		{"policy", []any{pcfg.Dir, pcfg.RequireTests, pcfg.DecisionCacheSlots, pcfg.Evaluator, pcfg.EvalTimeout},
			[]any{pd.Dir, pd.RequireTests, pd.DecisionCacheSlots, pd.Evaluator, pd.EvalTimeout}},
		{"decisionlog", so.decisionLogConfig(), decisionlog.DefaultConfig()},
		{"identity", idGot, idWant},
		{"natssource", so.nats.config(), natssource.DefaultConfig()},
		{"sink (postgres)", po.sink.config(), sink.DefaultConfig()},
		{"sink (highlevel)", ho.sink.config(), sink.DefaultConfig()},
		{"connect postgres", po.config(), postgres.DefaultConfig()},
		{"connect highlevel",
			[]any{ho.apiURL, ho.tokenFile, ho.tokenDir, ho.companyID, ho.locationIDs, ho.legacyRSA, ho.reconcileInterval,
				ho.maxPending, ho.dailyBudget, ho.stateDir, ho.webhookAddr, ho.adminAddr},
			[]any{hd.APIURL, hd.TokenFile, hd.TokenDir, hd.CompanyID, hd.LocationIDs, hd.LegacyRSA, hd.ReconcileInterval,
				hd.MaxPending, hd.DailyRequestBudget, hd.StateDir, hd.WebhookAddr, hd.AdminAddr}},
		{"publish", []string{pub.Lookup("stream").DefValue, pub.Lookup("subject").DefValue},
			[]string{logNames.Stream, logNames.Subject}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("from the flags' defaults:\n got %+v\nwant %+v", c.got, c.want)
			}
		})
	}
}
