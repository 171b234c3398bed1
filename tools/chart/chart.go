// Package chart loads, renders and lints the crmauthz Helm charts (charts/) with the Helm SDK,
// as the helm CLI would: it serves the chart tests and tools/helmlint (`make helm-lint`).
// The product does not import it.
package chart

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"helm.sh/helm/v3/pkg/action"
	helmchart "helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/release"
)

// KubeVersion is the Kubernetes version charts are rendered and linted for.
const KubeVersion = "v1.31.0"

// Load loads the chart in dir with its dependencies. A dependency whose repository is
// file://PATH and that charts/ does not hold is loaded from PATH (relative to dir): what
// `helm dependency build` would package into charts/.
func Load(dir string) (*helmchart.Chart, error) {
	var ch *helmchart.Chart
	var err error
	captureLog(func() { ch, err = loader.Load(dir) })
	if err != nil {
		return nil, err
	}
	if err := addFileDependencies(ch, dir); err != nil {
		return nil, err
	}
	return ch, nil
}

func addFileDependencies(ch *helmchart.Chart, dir string) error {
	have := map[string]bool{}
	for _, d := range ch.Dependencies() {
		have[d.Name()] = true
	}
	for _, dep := range ch.Metadata.Dependencies {
		path, ok := strings.CutPrefix(dep.Repository, "file://")
		if !ok || have[dep.Name] {
			continue
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		sub, err := Load(path)
		if err != nil {
			return fmt.Errorf("dependency %s (%s): %w", dep.Name, dep.Repository, err)
		}
		if sub.Name() != dep.Name {
			return fmt.Errorf("dependency %s: %s holds chart %s", dep.Name, dep.Repository, sub.Name())
		}
		ch.AddDependency(sub)
		have[dep.Name] = true
	}
	return nil
}

// ReadValues reads a values file ("" for none).
func ReadValues(file string) (map[string]any, error) {
	if file == "" {
		return map[string]any{}, nil
	}
	v, err := chartutil.ReadValuesFile(file)
	if err != nil {
		return nil, err
	}
	return v.AsMap(), nil
}

// Render renders ch with vals as `helm install --dry-run` without a cluster (`helm template`):
// values are checked against values.schema.json, and lookup finds nothing.
func Render(ch *helmchart.Chart, vals map[string]any, releaseName, namespace string) (*release.Release, error) {
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.ClientOnly = true
	inst.DryRun = true
	inst.Replace = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	kv, err := chartutil.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, err
	}
	inst.KubeVersion = kv
	return inst.Run(ch, vals)
}

// Scenarios returns the scenario files of the chart in dir, ci/*-values.yaml, sorted.
func Scenarios(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "ci", "*-values.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	return files, nil
}

// Lint lints the chart in dir as `helm lint --strict [-f valuesFile]`: any warning is an
// error. A chart with file:// dependencies is linted from a copy whose charts/ holds them
// packaged, as after `helm dependency build`. It returns every message, and the errors.
func Lint(dir, valuesFile string) ([]support.Message, []error, error) {
	vals, err := ReadValues(valuesFile)
	if err != nil {
		return nil, nil, err
	}
	lintDir, cleanup, err := withDependencies(dir)
	if err != nil {
		return nil, nil, err
	}
	defer cleanup()
	l := action.NewLint()
	l.Strict = true
	l.Namespace = "default"
	kv, err := chartutil.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, nil, err
	}
	l.KubeVersion = kv
	var res *action.LintResult
	fails := captureLog(func() { res = l.Run([]string{lintDir}, vals) })
	if res.TotalChartsLinted != 1 && len(res.Errors) == 0 {
		return res.Messages, nil, fmt.Errorf("%s: linted %d charts, want 1", dir, res.TotalChartsLinted)
	}
	errs := res.Errors
	for _, f := range fails {
		errs = append(errs, errors.New("template: "+f))
	}
	return res.Messages, errs, nil
}

var logMu sync.Mutex

// captureLog runs fn while collecting what the Helm SDK logs. helm lint only logs a template's
// `fail` ("[INFO] Fail: …") and passes; here it is returned, to be an error. The notice of each
// symbolic link followed (files/policies links to the built-in policy) is dropped; anything else
// goes on to the previous log output.
func captureLog(fn func()) (fails []string) {
	logMu.Lock()
	defer logMu.Unlock()
	prev, flags := log.Writer(), log.Flags()
	var buf bytes.Buffer
	log.SetOutput(&buf)
	log.SetFlags(0)
	defer func() {
		log.SetOutput(prev)
		log.SetFlags(flags)
	}()
	fn()
	for _, line := range strings.Split(buf.String(), "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "found symbolic link in path"):
		case strings.Contains(line, "Fail: "):
			_, msg, _ := strings.Cut(line, "Fail: ")
			fails = append(fails, msg)
		default:
			fmt.Fprintln(prev, line)
		}
	}
	return fails
}

// withDependencies returns dir itself when it has no file:// dependency missing from charts/,
// else a copy of it with those dependencies saved into charts/ as .tgz archives.
func withDependencies(dir string) (string, func(), error) {
	var ch *helmchart.Chart
	var err error
	captureLog(func() { ch, err = loader.Load(dir) })
	if err != nil {
		return "", nil, err
	}
	missing := len(ch.Dependencies()) < len(ch.Metadata.Dependencies)
	if !missing {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "crmauthz-helmlint-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	copyDir := filepath.Join(tmp, filepath.Base(dir))
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		cleanup()
		return "", nil, err
	}
	full, err := Load(dir)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	if err := os.MkdirAll(filepath.Join(copyDir, "charts"), 0o755); err != nil {
		cleanup()
		return "", nil, err
	}
	for _, d := range full.Dependencies() {
		if _, err := chartutil.Save(d, filepath.Join(copyDir, "charts")); err != nil {
			cleanup()
			return "", nil, err
		}
	}
	return copyDir, cleanup, nil
}

// PrintMessages writes lint messages as helm lint does, one a line.
func PrintMessages(w io.Writer, msgs []support.Message) {
	for _, m := range msgs {
		fmt.Fprintln(w, m.Error())
	}
}
