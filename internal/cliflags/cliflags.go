// Package cliflags is where a command's flag values come from and the rules
// they pass, for every command of cmd/crmauthz (docs/design.md,
// "Configuration and defaults"): the command line, then each flag's
// CRMAUTHZ_* environment twin (ApplyEnv), then the --config YAML file
// (ApplyConfigFile), then the default; and Validate, which checks every flag
// with its Rule before anything starts. The rules of each command stay with
// the command; this package holds the reusable ones (rules.go).
//
// It knows pflag flag sets and nothing of crmauthz's components: it imports
// no package of this module.
package cliflags

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// UsageError is a refused command line, environment twin or configuration
// file: the command exits 2 without starting (docs/operations.md, "Flag
// ranges"). Every error of this package is one.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usage(err error) error { return &UsageError{Err: err} }

// EnvName is a flag's environment twin: CRMAUTHZ_ + upper case, '-' as '_'.
func EnvName(flag string) string {
	return "CRMAUTHZ_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ApplyEnv sets every flag not given on the command line from its
// environment twin, when that is set. The command line wins.
func ApplyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usage(fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, e))
			}
		}
	})
	return err
}
