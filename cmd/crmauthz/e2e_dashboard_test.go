package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel/hlfake"
	"github.com/crmauthz/crmauthz/internal/natstest"
	"github.com/crmauthz/crmauthz/internal/promtest"
)

const (
	dashboardJSON = "../../charts/crmauthz/dashboards/crmauthz.json"
	alertRules    = "../../charts/crmauthz/files/prometheus/crmauthz-rules.yaml"
)

// TestDashboardQueries runs what the dashboard shows: two `crmauthz serve` reading a NATS
// stream that `connect highlevel` (against its fake) writes, a third fed over HTTP by
// `connect postgres` (a real PostgreSQL), decisions on all three, and a real Prometheus
// scraping the five every second with the labels a ServiceMonitor gives (namespace, pod). Every
// query of charts/crmauthz/dashboards/crmauthz.json (and of its variables) is evaluated through
// Prometheus's HTTP API with the variables at "All": each returns at least one series, and
// every metric it names, and every metric an alert rule names, is one the binaries export.
func TestDashboardQueries(t *testing.T) {
	promtest.Binary(t, "prometheus") // fail at once, before starting the rest, when it is missing
	exprs := dashboardExprs(t)

	// The NATS fleet of two, fed by the HighLevel connector.
	srv := natstest.Start(t, natstest.Options{})
	natsArgs := []string{"--replication-source", srv.URL(), "--nats-snapshot-bucket", "CRMAUTHZ_SNAPSHOTS"}
	fake, priv, flags := hlSetup(t, srv.URL())
	hl := startConnector(t, append([]string{"connect", "highlevel", "--webhook-addr", "127.0.0.1:0", "--reconcile-interval", "1h"}, flags...))
	fleet := []*proc{startServer(t, t.TempDir(), natsArgs...), startServer(t, t.TempDir(), natsArgs...)}
	want := hlFakeOwners(fake)
	for i, p := range fleet {
		eventually(t, fmt.Sprintf("sidecar %d to hold the fake's owners", i), func() bool {
			_, m := exported(t, p)
			return fmt.Sprint(owners(m)) == fmt.Sprint(want)
		})
	}

	// The HTTP-fed one, with the PostgreSQL connector.
	side := startServer(t, t.TempDir())
	pgAdmin := startPGConnector(t, crmPostgres(t), side.admin).admin
	eventually(t, "the PostgreSQL connector's copy", func() bool {
		allow, reason := decide(t, side, "u-1", "delete", "contact", "c-1", nil)
		return allow && reason == "owner"
	})

	prom := promtest.Start(t, []promtest.Target{
		{Addr: hostPort(fleet[0].admin), Labels: map[string]string{"namespace": "shop", "pod": "crmauthz-0"}},
		{Addr: hostPort(fleet[1].admin), Labels: map[string]string{"namespace": "shop", "pod": "crmauthz-1"}},
		{Addr: hostPort(side.admin), Labels: map[string]string{"namespace": "shop", "pod": "api-7d9f-x2"}},
		{Addr: hostPort(hl.admin), Labels: map[string]string{"namespace": "shop", "pod": "connect-highlevel-0"}},
		{Addr: pgAdmin, Labels: map[string]string{"namespace": "shop", "pod": "connect-postgres-0"}},
	})

	// Traffic while Prometheus scrapes: decisions (repeated, so the cache hits), webhooks that
	// the fleet applies from the stream, rows that the third one applies over HTTP.
	ids := make([]string, 0, len(want))
	for id, owner := range want {
		if owner != "" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	deadline := time.Now().Add(45 * time.Second) // a hang guard, not a speed limit
	var missing []string
	for round := 0; ; round++ {
		for _, p := range fleet {
			for _, id := range ids[:5] {
				decide(t, p, want[id], "view", "contact", id, nil)
				decide(t, p, "u-nobody", "view", "contact", id, nil)
			}
		}
		decide(t, side, "u-1", "view", "contact", "c-1", nil)
		if round%5 == 0 {
			id := ids[round/5%len(ids)]
			var loc string
			fake.Set(func(f *hlfake.Fake) {
				r := f.Records["contact"][id]
				loc = r.Location
				r.AssignedTo = fmt.Sprintf("u-%s-%02d", loc[len("loc-"):], round%10)
			})
			if code := signedWebhook(priv, hl.webhook, "ContactUpdate", loc, id, fmt.Sprintf("dash-%d", round)); code != 200 {
				t.Fatalf("webhook: %d", code)
			}
		}
		time.Sleep(200 * time.Millisecond)
		if round < 25 || round%5 != 0 { // at least 5 s of scrapes before looking
			continue
		}
		missing = missing[:0]
		for _, e := range exprs {
			if len(prom.Query(t, e.expr)) == 0 {
				missing = append(missing, e.String())
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, m := range missing {
		t.Errorf("no series: %s", m)
	}
	for url, health := range prom.Targets(t) {
		if health != "up" {
			t.Errorf("target %s is %s", url, health)
		}
	}

	// Every metric named by a query or an alert is one that the binaries export.
	exported := map[string]bool{}
	for _, n := range prom.Names(t) {
		exported[n] = true
	}
	for _, synthetic := range []string{"up", "scrape_duration_seconds", "scrape_samples_scraped",
		"scrape_samples_post_metric_relabeling", "scrape_series_added"} {
		delete(exported, synthetic) // Prometheus's own series of each scrape
	}
	named := map[string]string{}
	for _, e := range exprs {
		names := promtest.MetricNames(e.expr)
		if len(names) == 0 {
			t.Errorf("%s names no metric", e)
		}
		for _, n := range names {
			named[n] = e.String()
		}
	}
	for _, e := range alertExprs(t) {
		for _, n := range promtest.MetricNames(e) {
			named[n] = "alert: " + e
		}
	}
	for n, where := range named {
		if !exported[n] {
			t.Errorf("%s is not exported by serve or the connectors (%s)", n, where)
		}
	}
	t.Logf("%d dashboard queries, %d metric names checked against %d exported", len(exprs), len(named), len(exported))
}

// dashExpr is one query of the dashboard, with the variables replaced.
type dashExpr struct{ where, expr string }

func (e dashExpr) String() string { return e.where + ": " + e.expr }

// grafanaVars are the dashboard's variables at "All" (allValue .*) and Grafana's interval
// variables at values that suit a 1 s scrape interval.
var grafanaVars = strings.NewReplacer(
	"$namespace", ".*", "$pod", ".*", "${namespace}", ".*", "${pod}", ".*",
	"$__rate_interval", "10s", "$__interval", "2s", "$__range", "1m")

// dashboardExprs returns every expression of the dashboard: the targets of each panel, and the
// metric selector inside each label_values() variable query.
func dashboardExprs(t testing.TB) []dashExpr {
	t.Helper()
	raw, err := os.ReadFile(dashboardJSON)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	var out []dashExpr
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, dashExpr{p.Title, grafanaVars.Replace(tg.Expr)})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		inner, ok := strings.CutPrefix(q, "label_values(")
		i := strings.LastIndex(inner, ",")
		if !ok || i < 0 {
			t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, q)
		}
		out = append(out, dashExpr{"variable " + v.Name, grafanaVars.Replace(inner[:i])})
	}
	if len(out) < 30 {
		t.Fatalf("only %d queries in %s", len(out), dashboardJSON)
	}
	return out
}

// alertExprs returns the expression of every alert of the rule file.
func alertExprs(t testing.TB) []string {
	t.Helper()
	raw, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Expr string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no alerts in %s", alertRules)
	}
	return out
}

func hostPort(url string) string { return strings.TrimPrefix(url, "http://") }
