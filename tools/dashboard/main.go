// Command dashboard writes crmauthz's Grafana dashboard, built with the Grafana Foundation SDK,
// to charts/crmauthz/dashboards/crmauthz.json (make dashboard). The chart ships it in a
// ConfigMap for the Grafana sidecar (metrics.grafanaDashboard); docs/operations.md describes it.
package main

//go:generate go run . -o ../../charts/crmauthz/dashboards/crmauthz.json

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	out := flag.String("o", "../charts/crmauthz/dashboards/crmauthz.json", "the file to write")
	flag.Parse()
	js, err := build()
	if err == nil {
		err = os.WriteFile(*out, js, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}
