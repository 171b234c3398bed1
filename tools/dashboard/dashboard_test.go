package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

const committed = "../../charts/crmauthz/dashboards/crmauthz.json"

// TestCommittedDashboardIsGenerated: the JSON in the chart is what the code builds
// (regenerate with `make dashboard`).
func TestCommittedDashboardIsGenerated(t *testing.T) {
	want, err := build()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what tools/dashboard builds: run make dashboard", committed)
	}
}

// TestEveryPanelSelects: every query of a crmauthz panel filters by both variables, every
// connector query by namespace, and every panel has a title, a description and a query.
func TestEveryPanelSelects(t *testing.T) {
	for _, r := range rows {
		for _, p := range r.panels {
			t.Run(r.title+"/"+p.title, func(t *testing.T) {
				if p.desc == "" || p.unit == "" || len(p.queries) == 0 {
					t.Fatalf("panel %+v lacks a description, a unit or a query", p)
				}
				for _, q := range p.queries {
					want := sel
					if r.title == "Connectors" {
						want = connSel
					}
					if !strings.Contains(q.expr, want) || q.legend == "" {
						t.Errorf("%q: want the selector %q and a legend", q.expr, want)
					}
				}
			})
		}
	}
}

// TestDashboardShape: the JSON has the rows in order, the variables, and a Prometheus
// target per query.
func TestDashboardShape(t *testing.T) {
	js, err := build()
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(js, &d); err != nil {
		t.Fatal(err)
	}
	var gotRows []string
	targets := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			gotRows = append(gotRows, p.Title)
		}
		targets += len(p.Targets)
	}
	var wantRows []string
	wantTargets := 0
	for _, r := range rows {
		wantRows = append(wantRows, r.title)
		for _, p := range r.panels {
			wantTargets += len(p.queries)
		}
	}
	if strings.Join(gotRows, ",") != strings.Join(wantRows, ",") || targets != wantTargets || d.UID != UID {
		t.Errorf("rows %v (want %v), %d targets (want %d), uid %q", gotRows, wantRows, targets, wantTargets, d.UID)
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	if strings.Join(vars, ",") != "datasource,namespace,pod" {
		t.Errorf("variables %v", vars)
	}
}
