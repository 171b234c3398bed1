// Command crmauthz is the authorization sidecar: `crmauthz serve` answers
// decisions over HTTP, `crmauthz policy test|check` helps policy authors.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "crmauthz:", err)
		stop()
		os.Exit(exitCode(err))
	}
}

// exitError carries an exit code for failures that are answers, not faults
// (a failing policy test is exit 1 without a usage message).
type exitError struct {
	code int
	msg  string
	err  error // the cause, or nil
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "crmauthz",
		Short:         "Authorization sidecar for CRM records: owner/follower rules in Rego over a bbolt index",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			// flag > CRMAUTHZ_* > --config file > default (configfile.go)
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			return applyConfigFile(cmd.Flags())
		},
	}
	root.SetFlagErrorFunc(flagUsageError)
	root.AddCommand(newServeCmd(), newPolicyCmd(), newEvalCmd(), newVersionCmd())
	root.AddCommand(newPublishCmd(), newSnapshotCmd())
	root.AddCommand(newConnectCmd())
	return root
}

// envName is a flag's environment twin: CRMAUTHZ_ + upper case, '-' as '_'.
func envName(flag string) string {
	return "CRMAUTHZ_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its
// environment twin, when that is set. The command line wins.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageError(fmt.Errorf("%s=%q: %w", envName(f.Name), v, e))
			}
		}
	})
	return err
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "crmauthz", version)
		},
	}
}
