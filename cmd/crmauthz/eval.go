package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/crmauthz/crmauthz/internal/cliflags"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/policy/authoring"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/policies"
)

type evalOptions struct {
	dataDir     string
	snapshot    string
	policiesDir string
	lockTimeout time.Duration
	explain     bool
	trace       bool
	in          policy.Input
}

func newEvalCmd() *cobra.Command {
	var o evalOptions
	cmd := &cobra.Command{
		Use:   "eval --subject U --action A --type T --id I [--target U] [--explain]",
		Short: "Make one decision offline, from an index file or a snapshot, and explain it",
		Long: "Make one decision with the policy (built in, or --policies DIR) and the facts of the index in\n" +
			"--data-dir, opened read-only, or of an NDJSON snapshot (--snapshot FILE, \"-\" for stdin). Prints the\n" +
			"decision as JSON; with --explain, also the rule that decided, the rules that held and the facts read;\n" +
			"with --trace, OPA's full evaluation trace.\n\n" +
			"The index file cannot be opened beside a running `crmauthz serve` (bbolt's file lock): against a live\n" +
			"server, evaluate a snapshot of it, e.g.\n" +
			"  curl -s -H \"Authorization: Bearer $TOKEN\" localhost:8282/v1/replication/snapshot |\n" +
			"    crmauthz eval --snapshot - --subject u-2 --action edit --type contact --id c-42 --explain",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cliflags.Validate(cmd.Flags(), evalRules(&o)); err != nil {
				return err
			}
			o.in.HasTarget = cmd.Flags().Changed("target")
			return runEval(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", index.DefaultConfig().Dir, "directory of the index file (index.db), opened read-only")
	f.StringVar(&o.snapshot, "snapshot", "", "NDJSON snapshot (GET /v1/replication/snapshot) to take the facts from instead of --data-dir; \"-\" for stdin")
	f.StringVar(&o.policiesDir, "policies", "", "directory of Rego policies (default: the built-in ones)")
	f.DurationVar(&o.lockTimeout, "index-lock-timeout", evalLockTimeout, "how long to wait for the data directory's lock (<data-dir>/LOCK)")
	f.StringVar(&o.in.Subject, "subject", "", "the user asking (required)")
	f.StringVar(&o.in.Action, "action", "", "view, edit, delete, change_owner, add_follower or remove_follower (required)")
	f.StringVar(&o.in.ResourceType, "type", "", "record type: contact or opportunity (required)")
	f.StringVar(&o.in.ResourceID, "id", "", "record id (required)")
	f.StringVar(&o.in.Target, "target", "", "the follower to add or remove, or the new owner")
	f.BoolVar(&o.explain, "explain", false, "print the rule that decided, the rules that held and the facts read")
	f.BoolVar(&o.trace, "trace", false, "print OPA's evaluation trace (implies --explain)")
	for _, name := range []string{"subject", "action", "type", "id"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// evalRules is the rule of every flag of eval, by name: a bad value exits 2 naming the flag, as
// serve's do. The action and the type are the policy's to judge (an unknown action is a deny).
func evalRules(o *evalOptions) map[string]cliflags.Rule {
	none := func() string { return "" } // any value is meaningful
	return map[string]cliflags.Rule{
		"data-dir":           func() string { return cliflags.NonBlank(o.dataDir, "a directory") },
		"snapshot":           func() string { return cliflags.BlankOrPath(o.snapshot) },
		"policies":           func() string { return cliflags.BlankOrPath(o.policiesDir) },
		"index-lock-timeout": func() string { return cliflags.DurationIn(o.lockTimeout, time.Millisecond, time.Hour) },
		"subject":            func() string { return nonEmpty(o.in.Subject, "a user id") },
		"action":             func() string { return nonEmpty(o.in.Action, "an action, e.g. view") },
		"type":               func() string { return nonEmpty(o.in.ResourceType, "a record type, e.g. contact") },
		"id":                 func() string { return nonEmpty(o.in.ResourceID, "a record id") },
		"target":             none,
		"explain":            none,
		"trace":              none,
	}
}

// nonEmpty: any value but "" (ids are the index's to judge, as the decision API's are).
func nonEmpty(v, what string) string {
	if v == "" {
		return "want " + what + " (not empty)"
	}
	return ""
}

// evalLockTimeout is eval's wait for the data directory's lock: shorter than
// serve's (index.DefaultConfig), since beside a running server it is never
// granted (use --snapshot).
const evalLockTimeout = time.Second

// evalResult is what eval prints: the decision, as the decision API answers.
type evalResult struct {
	Allow          bool   `json:"allow"`
	Reason         string `json:"reason"`
	PolicyRevision string `json:"policy_revision"`
	AppliedSeq     uint64 `json:"applied_seq"`
}

func runEval(cmd *cobra.Command, o evalOptions) error {
	pcfg := policy.Config{FS: policies.FS}
	if o.policiesDir != "" {
		pcfg = policy.Config{Dir: o.policiesDir}
	}
	eng, err := policy.New(pcfg)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	ix, cleanup, err := openEvalIndex(cmd, o)
	if err != nil {
		return err
	}
	defer cleanup()

	var (
		res evalResult
		x   *authoring.Explanation
	)
	err = ix.View(func(tx *index.ReadTx) error {
		res.AppliedSeq = tx.AppliedSeq()
		if o.explain || o.trace {
			var err error
			x, err = authoring.Explain(cmd.Context(), eng, tx, o.in)
			if x != nil {
				res.Allow, res.Reason, res.PolicyRevision = x.Decision.Allow, x.Decision.Reason, x.Revision
			}
			return err
		}
		d, rev, err := eng.Decide(cmd.Context(), tx, o.in)
		res.Allow, res.Reason, res.PolicyRevision = d.Allow, d.Reason, rev
		return err
	})
	out := cmd.OutOrStdout()
	if err == nil {
		b, merr := json.Marshal(res)
		if merr != nil {
			return merr
		}
		fmt.Fprintln(out, string(b))
	}
	if x != nil {
		printExplanation(out, x, o.trace)
	}
	if err != nil {
		return fmt.Errorf("no decision (a deny): %w", err)
	}
	return nil
}

// openEvalIndex opens --data-dir read-only, or loads --snapshot into a
// temporary index.
func openEvalIndex(cmd *cobra.Command, o evalOptions) (*index.Index, func(), error) {
	if o.snapshot == "" {
		ix, err := index.Open(index.Config{Dir: o.dataDir, ReadOnly: true, Timeout: o.lockTimeout})
		if err != nil {
			if _, serr := os.Stat(filepath.Join(o.dataDir, index.FileName)); serr == nil && strings.Contains(err.Error(), "timeout") {
				err = fmt.Errorf("%w\nto evaluate against a running server's facts, take a snapshot of its index: "+
					"curl -s -H 'Authorization: Bearer TOKEN' http://ADMIN_ADDR/v1/replication/snapshot | crmauthz eval --snapshot - …", err)
			}
			return nil, nil, err
		}
		return ix, func() { ix.Close() }, nil
	}
	var in io.Reader = cmd.InOrStdin()
	if o.snapshot != "-" {
		f, err := os.Open(o.snapshot)
		if err != nil {
			return nil, nil, fmt.Errorf("--snapshot: %w", err)
		}
		defer f.Close()
		in = f
	}
	dir, err := os.MkdirTemp("", "crmauthz-eval-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	ix, err := index.Open(index.Config{Dir: dir})
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	cleanup = func() { ix.Close(); os.RemoveAll(dir) }
	repl, err := replication.New(replication.Config{Index: ix})
	if err == nil {
		_, err = repl.LoadSnapshot(in)
	}
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("--snapshot %s: %w", o.snapshot, err)
	}
	return ix, cleanup, nil
}

func printExplanation(w io.Writer, x *authoring.Explanation, trace bool) {
	fmt.Fprintln(w)
	if x.Rule.Path != "" {
		fmt.Fprintf(w, "decided by %s at %s:%d:%d:\n\t%s\n", x.Rule.Path, x.Rule.File, x.Rule.Row, x.Rule.Col, x.Rule.Text)
	} else {
		fmt.Fprintln(w, "no rule of data.crmauthz.decision applied")
	}
	fmt.Fprintln(w, "rules that held, in order:")
	for _, r := range x.Held {
		fmt.Fprintf(w, "\t%s\n", r)
	}
	fmt.Fprintln(w, "facts read:")
	for _, f := range x.Facts {
		switch {
		case f.Err != nil:
			fmt.Fprintf(w, "\t%s: error: %v\n", f.Call, f.Err)
		case f.Value == nil:
			fmt.Fprintf(w, "\t%s: undefined (not in the index)\n", f.Call)
		default:
			fmt.Fprintf(w, "\t%s = %s\n", f.Call, compactJSON(f.Value))
		}
	}
	if trace {
		fmt.Fprintln(w, "trace:")
		for _, l := range x.Trace {
			fmt.Fprintln(w, l)
		}
	}
}

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}
