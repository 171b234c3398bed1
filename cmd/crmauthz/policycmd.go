package main

import (
	"fmt"
	"regexp"
	"time"

	"github.com/spf13/cobra"

	"github.com/crmauthz/crmauthz/internal/cliflags"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/policy/authoring"
	"github.com/crmauthz/crmauthz/policies"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Work on Rego policies: test, check, fmt",
	}
	cmd.AddCommand(newPolicyTestCmd(), newPolicyCheckCmd(), newPolicyFmtCmd())
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
	var opts authoring.TestOptions
	cmd := &cobra.Command{
		Use:   "test [DIR]",
		Short: "Run the policy's Rego tests (*_test.rego) with the crm.* built-ins registered",
		Long: "Run the Rego tests of DIR (default: the built-in policies) like `opa test`, with crm.user and\n" +
			"crm.record registered so that tests can mock them with `with crm.user as …`. Exit 1 on failure.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cliflags.Validate(cmd.Flags(), policyTestRules(&opts)); err != nil {
				return err
			}
			opts.Out = cmd.OutOrStdout()
			ok, err := authoring.Test(cmd.Context(), policyConfig(args), opts)
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
	cmd.Flags().BoolVarP(&opts.Coverage, "coverage", "c", false, "report coverage per file")
	cmd.Flags().StringVar(&opts.Format, "format", "pretty", "report format: pretty, or json (OPA's JSON test results, or with --coverage its coverage report)")
	cmd.Flags().Float64Var(&opts.Threshold, "threshold", 0, "fail when the coverage of the policy without its tests is below this percentage (implies --coverage)")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", authoring.DefaultTestTimeout, "deadline of each test (a guard against a test that never ends)")
	return cmd
}

// policyTestRules is the rule of every flag of policy test: a bad value exits 2 naming the flag,
// never 1, which says the tests failed (a --threshold of NaN used to pass every run).
func policyTestRules(o *authoring.TestOptions) map[string]cliflags.Rule {
	none := func() string { return "" } // any value is meaningful
	return map[string]cliflags.Rule{
		"run": func() string {
			if _, err := regexp.Compile(o.Run); err != nil {
				return "want a regular expression (" + err.Error() + ")"
			}
			return ""
		},
		"format": func() string { return cliflags.OneOf(o.Format, "pretty", "json") },
		"threshold": func() string {
			if t := o.Threshold; !(t >= 0 && t <= 100) { // NaN compares false: refused too
				return "want a percentage from 0 to 100"
			}
			return ""
		},
		"timeout":  func() string { return cliflags.DurationIn(o.Timeout, time.Millisecond, 24*time.Hour) },
		"verbose":  none,
		"coverage": none,
	}
}

func newPolicyFmtCmd() *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "fmt [PATH...]",
		Short: "Format Rego files as `opa fmt` does; --check lists the unformatted ones and exits 1",
		Long: "Format every .rego file under each PATH (a directory or a file; default \".\"), tests included,\n" +
			"with OPA's formatter for Rego v1, rewriting them in place and printing their names. With --check,\n" +
			"print the names of the files that are not formatted, change nothing, and exit 1 if there are any\n" +
			"(for CI). A file that does not parse is reported as file:line:col and makes the exit status 1.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"."}
			}
			var unformatted, failed int
			for _, path := range args {
				names, err := authoring.Format(path, authoring.FormatOptions{Write: !check})
				for _, n := range names {
					fmt.Fprintln(cmd.OutOrStdout(), n)
				}
				unformatted += len(names)
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					failed++
				}
			}
			switch {
			case failed > 0:
				return &exitError{code: 1, msg: "policy fmt: some files could not be formatted"}
			case check && unformatted > 0:
				return &exitError{code: 1, msg: fmt.Sprintf("policy fmt: %d file(s) not formatted (run crmauthz policy fmt)", unformatted)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "only list the files that are not formatted, and exit 1 if there are any")
	return cmd
}

func newPolicyCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check [DIR]",
		Short: "Compile the policy against the crm.* built-ins' signatures; errors as file:line:col",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := authoring.Check(policyConfig(args)); err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return &exitError{code: 1, msg: "policy check failed"}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return nil
		},
	}
}
