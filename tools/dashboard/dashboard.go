package main

import (
	"encoding/json"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// UID is the dashboard's uid: stable, so that links to it survive regenerations.
const UID = "crmauthz-overview"

// Selectors of the dashboard's variables: crmauthz pods (sidecars and standalone), and
// connectors (which have no crmauthz_ready, so only the namespace selects them).
const (
	sel     = `namespace=~"$namespace", pod=~"$pod"`
	connSel = `namespace=~"$namespace"`
	rate    = `[$__rate_interval]`
)

// query is one PromQL expression of a panel and its legend.
type query struct{ expr, legend string }

// panel is one time series panel.
type panel struct {
	title, desc, unit string
	queries           []query
}

// row is a titled row of panels, as docs/operations.md ("Dashboard and alerts") describes them.
type row struct {
	title  string
	panels []panel
}

func q(expr, legend string) query { return query{expr, legend} }

// rows is the dashboard's content. Every expression is evaluated against a real Prometheus
// scraping crmauthz and both connectors by cmd/crmauthz TestDashboardQueries.
var rows = []row{
	{"Decisions", []panel{
		{"Decisions/s by result", "Decisions answered per second, allowed and denied.", "reqps", []query{
			q(`sum by (allow) (rate(crmauthz_decisions_total{`+sel+`}`+rate+`))`, "allow={{allow}}")}},
		{"Decisions/s by reason", "The policy's reason for each answer; error is a failed evaluation (denied).", "reqps", []query{
			q(`sum by (reason) (rate(crmauthz_decisions_total{`+sel+`}`+rate+`))`, "{{reason}}")}},
		{"Decision errors (share)", "Share of decisions whose evaluation failed (each a deny); alert CrmauthzDecisionErrors above 1%.", "percentunit", []query{
			q(`(sum by (pod) (rate(crmauthz_decisions_total{`+sel+`, reason="error"}`+rate+`)) or sum by (pod) (rate(crmauthz_decisions_total{`+sel+`}`+rate+`)) * 0) / sum by (pod) (rate(crmauthz_decisions_total{`+sel+`}`+rate+`))`, "{{pod}}")}},
		{"HTTP requests/s by status", "Every HTTP request, both listeners; 503 is overload or read-only, 507 a full disk.", "reqps", []query{
			q(`sum by (listener, code) (rate(crmauthz_http_requests_total{`+sel+`}`+rate+`))`, "{{listener}} {{code}}")}},
	}},
	{"Latency", []panel{
		{"Decision latency percentiles", "Time to handle one decision request (parse, evaluate, write), from the histogram.", "s", []query{
			q(`histogram_quantile(0.5, sum by (le) (rate(crmauthz_decision_duration_seconds_bucket{`+sel+`}`+rate+`)))`, "p50"),
			q(`histogram_quantile(0.9, sum by (le) (rate(crmauthz_decision_duration_seconds_bucket{`+sel+`}`+rate+`)))`, "p90"),
			q(`histogram_quantile(0.99, sum by (le) (rate(crmauthz_decision_duration_seconds_bucket{`+sel+`}`+rate+`)))`, "p99")}},
		{"p99 latency by endpoint", "The 99th percentile per endpoint (decision, decisions, forward_auth, ext_authz_*).", "s", []query{
			q(`histogram_quantile(0.99, sum by (endpoint, le) (rate(crmauthz_decision_duration_seconds_bucket{`+sel+`}`+rate+`)))`, "{{endpoint}}")}},
	}},
	{"Decision cache", []panel{
		{"Decision cache hit ratio", "Lookups answered from the exact decision cache, per pod.", "percentunit", []query{
			q(`sum by (pod) (rate(crmauthz_decision_cache_lookups_total{`+sel+`, result="hit"}`+rate+`)) / sum by (pod) (rate(crmauthz_decision_cache_lookups_total{`+sel+`}`+rate+`))`, "{{pod}}")}},
		{"Decision cache lookups/s", "Hits and misses (evaluations).", "ops", []query{
			q(`sum by (result) (rate(crmauthz_decision_cache_lookups_total{`+sel+`}`+rate+`))`, "{{result}}")}},
	}},
	{"Evaluator", []panel{
		{"Evaluator fallback", "1 while --policy-evaluator auto runs the revision in service with topdown (the IR interpreter cannot): slower decisions. Alert CrmauthzEvaluatorFallback.", "none", []query{
			q(`max by (pod) (crmauthz_policy_evaluator_fallback{`+sel+`})`, "{{pod}}")}},
		{"Evaluator in service", "Which evaluator decides, per pod.", "none", []query{
			q(`max by (pod, evaluator) (crmauthz_policy_evaluator{`+sel+`})`, "{{pod}} {{evaluator}}")}},
		{"Evaluations stopped/s", "Evaluations stopped by --eval-timeout or a built-in's size limit (denied).", "ops", []query{
			q(`sum by (bound) (rate(crmauthz_policy_evaluations_stopped_total{`+sel+`}`+rate+`))`, "{{bound}}")}},
	}},
	{"Policy", []panel{
		{"Policy revision", "The revision each pod serves (a line per revision).", "none", []query{
			q(`max by (pod, revision) (crmauthz_policy_info{`+sel+`})`, "{{pod}} {{revision}}")}},
		{"Last reload ok", "0 while a policy change that does not compile waits (the last good revision serves). Alert CrmauthzPolicyReloadFailing.", "none", []query{
			q(`min by (pod) (crmauthz_policy_last_reload_ok{`+sel+`})`, "{{pod}}")}},
		{"Policy reloads", "Loads and reloads per interval, by result.", "none", []query{
			q(`sum by (result) (increase(crmauthz_policy_reloads_total{`+sel+`}`+rate+`))`, "{{result}}")}},
	}},
	{"Replication", []panel{
		{"applied_seq per pod", "The last replication seq applied to each pod's index.", "none", []query{
			q(`max by (pod) (crmauthz_replication_applied_seq{`+sel+`})`, "{{pod}}")}},
		{"Replication lag (events)", "Events in the NATS stream not yet applied, per pod (--replication-source).", "none", []query{
			q(`max by (pod) (crmauthz_replication_lag_events{`+sel+`})`, "{{pod}}")}},
		{"Replication lag (seconds)", "Age of the oldest event not yet applied, per pod. Alert CrmauthzReplicationLagHigh above 60 s.", "s", []query{
			q(`max by (pod) (crmauthz_replication_lag_seconds{`+sel+`})`, "{{pod}}")}},
		{"Replication source up", "1 while the NATS source is connected and reads the stream's state.", "none", []query{
			q(`min by (pod) (crmauthz_replication_source_up{`+sel+`})`, "{{pod}}")}},
		{"Replication events/s", "Events received, by result (applied, skipped, rejected).", "ops", []query{
			q(`sum by (result) (rate(crmauthz_replication_events_total{`+sel+`}`+rate+`))`, "{{result}}")}},
		{"Ready", "1 while /health/ready answers 200. Alert CrmauthzNotReady.", "none", []query{
			q(`min by (pod) (crmauthz_ready{`+sel+`})`, "{{pod}}")}},
	}},
	{"Index", []panel{
		{"Index size", "Users and records by type (from the largest pod).", "short", []query{
			q(`max by (type) (crmauthz_index_records{`+sel+`})`, "{{type}}"),
			q(`max(crmauthz_index_users{`+sel+`})`, "users")}},
		{"Index file size", "Bytes of <data-dir>/index.db, per pod.", "bytes", []query{
			q(`max by (pod) (crmauthz_index_file_bytes{`+sel+`})`, "{{pod}}")}},
		{"Data directory free", "Share of the data directory's file system free, per pod. Alert CrmauthzDataDirAlmostFull below 10%.", "percentunit", []query{
			q(`min by (pod) (crmauthz_data_dir_free_bytes{`+sel+`} / crmauthz_data_dir_size_bytes{`+sel+`})`, "{{pod}}")}},
		{"Snapshot loads", "Whole-index replacements per interval, by source (http, file, nats) and result.", "none", []query{
			q(`sum by (source, result) (increase(crmauthz_snapshot_loads_total{`+sel+`}`+rate+`))`, "{{source}} {{result}}")}},
	}},
	{"Connectors", []panel{
		{"Events written/s", "Events each connector made durable in its sink, by op.", "ops", []query{
			q(`sum by (pod, op) (rate(crmauthz_connector_events_written_total{`+connSel+`}`+rate+`))`, "{{pod}} {{op}}")}},
		{"Pending work", "HighLevel: webhook work durable in the state dir, not yet written; PostgreSQL: events being written.", "short", []query{
			q(`max by (pod) (crmauthz_connector_pending_work{`+connSel+`}) or max by (pod) (crmauthz_connector_pending_events{`+connSel+`})`, "{{pod}}")}},
		{"Last sync age", "Seconds since the sink last held everything from the source (HighLevel: per location; PostgreSQL: per slot). Alert CrmauthzConnectorSyncStale above an hour.", "s", []query{
			q(`time() - max by (pod, location, slot) (crmauthz_connector_last_sync_timestamp_seconds{`+connSel+`})`, "{{pod}} {{location}}{{slot}}")}},
		{"Source errors/s", "Failed requests to the source (HighLevel) or interrupted sessions (PostgreSQL), by kind.", "ops", []query{
			q(`sum by (pod, kind) (rate(crmauthz_connector_source_errors_total{`+connSel+`}`+rate+`))`, "{{pod}} {{kind}}")}},
	}},
	{"Go runtime", []panel{
		{"Heap in use", "Bytes of allocated heap objects, per pod (crmauthz and connectors).", "bytes", []query{
			q(`max by (pod) (go_memstats_heap_alloc_bytes{`+sel+`})`, "{{pod}}")}},
		{"GC pause (average)", "Average stop-the-world pause of a garbage collection.", "s", []query{
			q(`max by (pod) (rate(go_gc_duration_seconds_sum{`+sel+`}`+rate+`) / rate(go_gc_duration_seconds_count{`+sel+`}`+rate+`))`, "{{pod}}")}},
		{"Goroutines", "Goroutines per pod: a steady climb is a leak.", "short", []query{
			q(`max by (pod) (go_goroutines{`+sel+`})`, "{{pod}}")}},
		{"Resident memory", "RSS per pod, against the container's limit (--memory-limit).", "bytes", []query{
			q(`max by (pod) (process_resident_memory_bytes{`+sel+`})`, "{{pod}}")}},
	}},
}

// all selects "All" of a variable at first.
var all = dashboard.VariableOption{
	Selected: cog.ToPtr(true),
	Text:     dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
	Value:    dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
}

var promDS = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// build returns the dashboard as indented JSON with a final newline.
func build() ([]byte, error) {
	// The classic dashboard model (schemaVersion 42), not dashboardv2: the Grafana sidecar and
	// every Grafana from 10 on load it; the v2 schema needs Grafana 12's new API.
	//lint:ignore SA1019 the v1 model is the one the Grafana sidecar loads everywhere
	b := dashboard.NewDashboardBuilder("crmauthz").
		Uid(UID).
		Description("crmauthz sidecars and connectors: decisions, latency, cache, evaluator, policy, replication, index, connectors, Go runtime (docs/operations.md).").
		Tags([]string{"crmauthz", "authorization"}).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone("browser").
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus")).
		WithVariable(dashboard.NewQueryVariableBuilder("namespace").Label("Namespace").
			Datasource(promDS).
			Query(dashboard.StringOrMap{String: cog.ToPtr(`label_values(crmauthz_ready, namespace)`)}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			Multi(true).IncludeAll(true).AllValue(".*").Current(all)).
		WithVariable(dashboard.NewQueryVariableBuilder("pod").Label("Pod").
			Datasource(promDS).
			Query(dashboard.StringOrMap{String: cog.ToPtr(`label_values(crmauthz_ready{namespace=~"$namespace"}, pod)`)}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			Multi(true).IncludeAll(true).AllValue(".*").Current(all))
	for _, r := range rows {
		b = b.WithRow(dashboard.NewRowBuilder(r.title))
		w := uint32(24 / min(len(r.panels), 4))
		for _, p := range r.panels {
			pb := timeseries.NewPanelBuilder().
				Title(p.title).Description(p.desc).Unit(p.unit).
				Datasource(promDS).Span(w).Height(8).FillOpacity(10).
				ShowPoints(common.VisibilityModeNever).
				Legend(common.NewVizLegendOptionsBuilder().ShowLegend(true).
					DisplayMode(common.LegendDisplayModeList).Placement(common.LegendPlacementBottom)).
				Tooltip(common.NewVizTooltipOptionsBuilder().
					Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending))
			for i, qq := range p.queries {
				pb = pb.WithTarget(prometheus.NewDataqueryBuilder().
					RefId(string(rune('A' + i))).Datasource(promDS).
					Expr(qq.expr).LegendFormat(qq.legend))
			}
			b = b.WithPanel(pb)
		}
	}
	d, err := b.Build()
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
