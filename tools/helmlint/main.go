// Command helmlint is `helm lint --strict` for machines without the helm CLI: it lints each chart
// directory given with the Helm SDK, once per scenario file ci/*-values.yaml (once with the
// chart's defaults when it has none), and exits 1 if any lint reports a warning or an error.
// With -template it prints the manifests instead, as `helm template` (lookup finds nothing).
//
//	cd tools && go run ./helmlint ../charts/crmauthz ../charts/examples/app-with-sidecar
//	cd tools && go run ./helmlint -template -f ../charts/crmauthz/ci/standalone-full-values.yaml ../charts/crmauthz
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/crmauthz/crmauthz/tools/chart"
)

func main() {
	template := flag.Bool("template", false, "print the rendered manifests (and NOTES) instead of linting")
	values := flag.String("f", "", "values file for -template")
	release := flag.String("name", "crmauthz", "release name for -template")
	namespace := flag.String("namespace", "default", "namespace for -template")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: helmlint [-template [-f values.yaml] [-name NAME] [-namespace NS]] CHART_DIR...")
		os.Exit(2)
	}
	if *template {
		for _, dir := range flag.Args() {
			if err := render(dir, *values, *release, *namespace); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		return
	}
	linted, failed := 0, 0
	for _, dir := range flag.Args() {
		scenarios, err := chart.Scenarios(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if len(scenarios) == 0 {
			scenarios = []string{""}
		}
		for _, values := range scenarios {
			linted++
			name := dir
			if values != "" {
				name += " -f " + filepath.ToSlash(values)
			}
			fmt.Printf("==> Linting %s\n", name)
			msgs, errs, err := chart.Lint(dir, values)
			if err != nil {
				errs = append(errs, err)
			}
			chart.PrintMessages(os.Stdout, msgs)
			if len(msgs) == 0 {
				for _, e := range errs {
					fmt.Printf("[ERROR] %v\n", e)
				}
			}
			if len(errs) > 0 {
				failed++
			}
			fmt.Println()
		}
	}
	fmt.Printf("%d chart(s) linted, %d chart(s) failed\n", linted, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

func render(dir, values, release, namespace string) error {
	ch, err := chart.Load(dir)
	if err != nil {
		return err
	}
	vals, err := chart.ReadValues(values)
	if err != nil {
		return err
	}
	rel, err := chart.Render(ch, vals, release, namespace)
	if err != nil {
		return err
	}
	fmt.Print(rel.Manifest)
	fmt.Printf("\n# NOTES.txt\n# ---------\n%s\n", rel.Info.Notes)
	return nil
}
