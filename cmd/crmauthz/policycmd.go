package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/policies"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Work on Rego policies: test, check",
	}
	cmd.AddCommand(newPolicyTestCmd(), newPolicyCheckCmd())
	return cmd
}

// policyConfig is the directory given, or the built-in policies.
func policyConfig(args []string) policy.Config {
	if len(args) == 1 {
		return policy.Config{Dir: args[0]}
	}
	return policy.Config{FS: policies.FS}
}

func newPolicyTestCmd() *cobra.Command {
	var opts policy.TestOptions
	cmd := &cobra.Command{
		Use:   "test [DIR]",
		Short: "Run the policy's Rego tests (*_test.rego) with the crm.* built-ins registered",
		Long: "Run the Rego tests of DIR (default: the built-in policies) like `opa test`, with crm.user and\n" +
			"crm.record registered so that tests can mock them with `with crm.user as …`. Exit 1 on failure.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Out = cmd.OutOrStdout()
			ok, err := policy.Test(cmd.Context(), policyConfig(args), opts)
			if err != nil {
				return err
			}
			if !ok {
				return &exitError{code: 1, msg: "policy tests failed"}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Run, "run", "", "run only the tests whose names match this regular expression")
	cmd.Flags().BoolVarP(&opts.Verbose, "verbose", "v", false, "print every test's result")
	cmd.Flags().BoolVar(&opts.Coverage, "coverage", false, "report coverage per file")
	return cmd
}

func newPolicyCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check [DIR]",
		Short: "Compile the policy against the crm.* built-ins' signatures; errors as file:line:col",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := policy.Check(policyConfig(args)); err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return &exitError{code: 1, msg: "policy check failed"}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return nil
		},
	}
}
