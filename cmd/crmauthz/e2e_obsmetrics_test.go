package main

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"
)

// metricValue returns the value of the series (name and labels, as exposed) in a /metrics text.
func metricValue(t testing.TB, text, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("/metrics has no series %s", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestE2EObservabilityMetrics: the binary exports what the dashboard and the alerts read
// (docs/operations.md, "Dashboard and alerts"): the evaluator and its fallback for each
// --policy-evaluator, readiness, snapshot loads by source and result, and the index file and
// data directory sizes.
func TestE2EObservabilityMetrics(t *testing.T) {
	withPolicy := t.TempDir() // a policy the IR interpreter cannot run (`with`)
	writePolicyFiles(t, withPolicy, map[string]string{"p.rego": "package crmauthz\n\ninner := input.action\n\n" +
		`decision := {"allow": false, "reason": r} if r := inner with input.action as "x"` + "\n"})
	for _, tc := range []struct {
		name      string
		args      []string
		evaluator string
		fallback  float64
	}{
		{"auto, the built-in policy", []string{"--load-snapshot", "../../examples/demo.ndjson"}, "ir", 0},
		{"topdown by choice", []string{"--policy-evaluator", "topdown"}, "topdown", 0},
		{"auto, a policy with `with`", []string{"--policies", withPolicy}, "topdown", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startServer(t, t.TempDir(), tc.args...)
			m := metricsText(t, p)
			for series, want := range map[string]float64{
				`crmauthz_policy_evaluator{evaluator="` + tc.evaluator + `"}`: 1,
				`crmauthz_policy_evaluator_fallback`:                          tc.fallback,
				`crmauthz_ready`:                                              1,
				`crmauthz_policy_last_reload_ok`:                              1,
			} {
				if got := metricValue(t, m, series); got != want {
					t.Errorf("%s = %v, want %v", series, got, want)
				}
			}
			for _, series := range []string{"crmauthz_index_file_bytes", "crmauthz_data_dir_free_bytes", "crmauthz_data_dir_size_bytes"} {
				if v := metricValue(t, m, series); v <= 0 {
					t.Errorf("%s = %v, want > 0", series, v)
				}
			}
			if len(tc.args) == 0 || tc.args[0] != "--load-snapshot" {
				return
			}
			// Snapshot loads: the file at start, then a bad and a good PUT.
			if code, _ := call(t, http.MethodPut, p.admin+"/v1/replication/snapshot", "{\"seq\": 1}\nnot json\n", authz); code != http.StatusUnprocessableEntity {
				t.Fatalf("bad snapshot: %d", code)
			}
			putSnapshot(t, p, "{\"seq\": 7}\n")
			m = metricsText(t, p)
			for series, want := range map[string]float64{
				`crmauthz_snapshot_loads_total{result="ok",source="file"}`:    1,
				`crmauthz_snapshot_loads_total{result="error",source="http"}`: 1,
				`crmauthz_snapshot_loads_total{result="ok",source="http"}`:    1,
				`crmauthz_snapshot_loads_total{result="ok",source="nats"}`:    0,
			} {
				if got := metricValue(t, m, series); got != want {
					t.Errorf("%s = %v, want %v", series, got, want)
				}
			}
		})
	}
}
