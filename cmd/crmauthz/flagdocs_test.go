package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// docFlagRow is a flag named in the first cell of a table row of the docs, with the row's second
// cell (its default, as documented) and where it is.
type docFlagRow struct {
	dflt, where string
}

var (
	docFlagCell = regexp.MustCompile("`--([a-z0-9-]+)`")
	docDflt     = regexp.MustCompile("`([^`]*)`")
	onlyFlags   = regexp.MustCompile(`^[\s,/]*$`) // what else a cell of flag names holds
)

// docFlagRows reads the tables of file whose first cell names flags (`--a`, `--b`); a row of n
// flags whose second cell holds n values in backquotes gives each its own.
func docFlagRows(tb testing.TB, file string) map[string]docFlagRow {
	tb.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	rows := map[string]docFlagRow{}
	for i, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || cells[0] != "" {
			continue
		}
		names := docFlagCell.FindAllStringSubmatch(cells[1], -1)
		if len(names) == 0 || !onlyFlags.MatchString(docFlagCell.ReplaceAllString(cells[1], "")) {
			continue // not a row of flags, or one of flags with arguments (policy test's --run REGEX)
		}
		dflt := strings.TrimSpace(cells[2])
		vals := docDflt.FindAllStringSubmatch(dflt, -1)
		for j, n := range names {
			d := dflt
			if len(names) > 1 && len(vals) == len(names) {
				d = "`" + vals[j][1] + "`"
			}
			rows[n[1]] = docFlagRow{dflt: d, where: file + ":" + strconv.Itoa(i+1)}
		}
	}
	return rows
}

// sameDefault reports whether a flag's default is what a table documents: a value in backquotes
// (durations compared as durations, lists without their brackets), or a cell without one (empty,
// "off", "built in", "(required)") for a flag whose default is its type's zero value.
func sameDefault(f *pflag.Flag, doc string) bool {
	def := f.DefValue
	if f.Value.Type() == "stringSlice" {
		def = strings.Trim(def, "[]")
	}
	m := docDflt.FindStringSubmatch(doc)
	if m == nil || m[0] != doc {
		return slices.Contains([]string{"", "false", "0", "0s"}, def)
	}
	if f.Value.Type() == "duration" {
		a, errA := time.ParseDuration(def)
		b, errB := time.ParseDuration(m[1])
		return errA == nil && errB == nil && a == b
	}
	return def == m[1]
}

// subcommand finds the command of root at path ("connect postgres").
func subcommand(tb testing.TB, root *cobra.Command, path string) *cobra.Command {
	tb.Helper()
	cmd, rest, err := root.Find(strings.Fields(path))
	if err != nil || len(rest) > 0 || cmd == root {
		tb.Fatalf("no command %q: %v", path, err)
	}
	return cmd
}

// TestFlagsAreDocumented: every flag of every command is named in README.md or docs/*.md, and
// every flag of serve and the connectors is a row of the tables of its docs, with the default
// the flag has; every row of those tables is a flag the command has. So `--help` and the docs
// cannot drift apart.
func TestFlagsAreDocumented(t *testing.T) {
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, "../../README.md")
	var all strings.Builder
	for _, f := range docs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	text := all.String()
	root := newRootCmd()
	// the tables documenting each command's flags, most specific first
	tables := map[string][]string{
		"serve":             {"README.md", "docs/gateways.md", "docs/policies.md"},
		"connect postgres":  {"docs/postgres.md", "docs/connectors.md", "README.md"},
		"connect highlevel": {"docs/highlevel.md", "docs/connectors.md", "README.md"},
	}
	for _, path := range []string{"serve", "connect postgres", "connect highlevel", "publish", "snapshot publish",
		"eval", "policy test", "policy check", "policy fmt"} {
		cmd := subcommand(t, root, path)
		t.Run(path, func(t *testing.T) {
			var rows []map[string]docFlagRow
			for _, f := range tables[path] {
				rows = append(rows, docFlagRows(t, "../../"+f))
			}
			seen := map[string]bool{}
			cmd.Flags().VisitAll(func(f *pflag.Flag) {
				seen[f.Name] = true
				if f.Name == "help" {
					return
				}
				named := regexp.MustCompile(`--` + regexp.QuoteMeta(f.Name) + `\b[^-]`).MatchString(text)
				if !named && f.Shorthand != "" { // policy test's -v
					named = strings.Contains(text, "[-"+f.Shorthand+"]") || strings.Contains(text, "`-"+f.Shorthand+"`")
				}
				if !named {
					t.Errorf("--%s is in no doc (README.md, docs/*.md)", f.Name)
				}
				if len(rows) == 0 || f.Name == "config" { // --config: README's "Flags" and reference.md §2.1
					return
				}
				for _, r := range rows {
					if row, ok := r[f.Name]; ok {
						if !sameDefault(f, row.dflt) {
							t.Errorf("--%s: default %q, documented as %s (%s)", f.Name, f.DefValue, row.dflt, row.where)
						}
						return
					}
				}
				t.Errorf("--%s is not a row of the flag tables of %v", f.Name, tables[path])
			})
			if len(rows) > 0 {
				for name, row := range rows[0] {
					if !seen[name] {
						t.Errorf("%s documents --%s, which %s does not have", row.where, name, path)
					}
				}
			}
		})
	}
}
