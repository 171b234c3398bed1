// Command crmauthz is the authorization sidecar: `crmauthz serve` answers
// decisions over HTTP, `crmauthz policy test|check` helps policy authors.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/crmauthz/crmauthz/internal/cliflags"
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
	if u := (*cliflags.UsageError)(nil); errors.As(err, &u) {
		return exitUsage
	}
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
			// flag > CRMAUTHZ_* > --config file > default (internal/cliflags)
			if err := cliflags.ApplyEnv(cmd.Flags()); err != nil {
				return err
			}
			return cliflags.ApplyConfigFile(cmd.Flags())
		},
	}
	root.SetFlagErrorFunc(flagUsageError)
	root.AddCommand(newServeCmd(), newPolicyCmd(), newEvalCmd(), newVersionCmd())
	root.AddCommand(newPublishCmd(), newSnapshotCmd())
	root.AddCommand(newConnectCmd())
	return root
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
