package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/cliflags"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/natsconn"
	"github.com/crmauthz/crmauthz/internal/natspub"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// connectJS connects to NATS for a one-shot command.
func connectJS(url string, a natsAuthOptions) (*nats.Conn, jetstream.JetStream, error) {
	if err := natsconn.CheckURL(url); err != nil {
		return nil, nil, fmt.Errorf("--nats: %w", err)
	}
	opts, err := a.auth().Options()
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, append(opts, nats.Name("crmauthz "+version+" publish"))...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %s: %w", natsconn.Redact(url), err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

type publishOptions struct {
	natsAuthOptions
	url, stream, subject string
	create, dryRun       bool
	maxMsgs              int64
	maxAge               time.Duration
	replicas             int
	tracing              tracingOptions // --otlp-*, --trace-sampling-ratio (tracingflags.go)
}

func newPublishCmd() *cobra.Command {
	var o publishOptions
	cmd := &cobra.Command{
		Use:   "publish --nats URL [--stream S] [--subject X] [--create] FILE",
		Short: "Publish replication events to a NATS JetStream stream (tests, migrations, demos)",
		Long: `Publish the events of FILE (NDJSON, one event per line, or one {"events": [...]}
document; "-" for standard input) to the stream, one message per event, in order.

The stream sequence of each message is the event's seq. An event's "seq", when it
has one, must be the stream's next sequence; an event whose seq the stream holds
already is skipped, so running a file again resumes it. An event without a seq gets
the next sequence. Every publish carries an expected-last-sequence check, so another
publisher writing in between makes it fail rather than shift the seqs. Every event
is validated as the replication API would before it is sent; publishing stops at
the first invalid or refused event: the stream then holds the events before it.

With --create the stream is created when it does not exist, holding only --subject
(a sidecar reads every message of it as an event).

With --otlp-endpoint the publish is a producer span crmauthz.publish whose trace
context every message carries, so each sidecar's span of the batch applying them
is its child (docs/operations.md, "Tracing").`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cliflags.Validate(cmd.Flags(), publishRules(&o)); err != nil {
				return err
			}
			return runPublish(cmd.Context(), cmd.OutOrStdout(), o, args[0])
		},
	}
	f := cmd.Flags()
	d := natspub.DefaultConfig()
	f.StringVar(&o.url, "nats", "", "NATS server URL: nats://HOST:PORT (or tls://)")
	f.StringVar(&o.stream, "stream", d.Stream, "JetStream stream of the replication log")
	f.StringVar(&o.subject, "subject", d.Subject, "subject to publish the events to")
	f.BoolVar(&o.create, "create", false, "create the stream when it does not exist")
	f.Int64Var(&o.maxMsgs, "max-msgs", 0, "with --create: keep at most this many events (older ones are trimmed; sidecars that need them bootstrap from a snapshot); 0 for no limit")
	f.DurationVar(&o.maxAge, "max-age", 0, "with --create: trim events older than this; 0 for no limit")
	f.IntVar(&o.replicas, "replicas", 1, "with --create: stream replicas in a NATS cluster")
	f.BoolVar(&o.dryRun, "dry-run", false, "validate the events and their seqs against the stream; publish nothing")
	addNATSAuthFlags(f, &o.natsAuthOptions)
	addTracingFlags(f, &o.tracing)
	_ = cmd.MarkFlagRequired("nats")
	return cmd
}

func runPublish(ctx context.Context, out io.Writer, o publishOptions, file string) error {
	in := os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	nc, js, err := connectJS(o.url, o.natsAuthOptions)
	if err != nil {
		return err
	}
	defer nc.Close()
	if o.create {
		if err := ensureStream(ctx, js, o); err != nil {
			return err
		}
	}
	tr, log, err := o.tracing.commandTracer(ctx)
	if err != nil {
		return err
	}
	if tr != nil {
		defer shutdownTracer(tr, log)
	}
	var sp trace.Span
	if tr != nil {
		ctx, sp = tr.StartSampled(ctx, tracing.SpanPublish, trace.SpanKindProducer)
	}
	res, err := natspub.Publish(ctx, js, natspub.NewEventReader(in),
		natspub.PublishOptions{Stream: o.stream, Subject: o.subject, DryRun: o.dryRun, Tracer: tr})
	if sp != nil {
		b := tracing.Batch{Source: "nats", Events: res.Published + res.Skipped, Applied: res.Published,
			Skipped: res.Skipped, AppliedSeq: res.LastSeq}
		if err != nil {
			b.Error = "publish_failed"
		}
		tracing.EndBatch(sp, b)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = fmt.Errorf("the stream %q does not exist: create it with --create", o.stream)
	}
	enc := json.NewEncoder(out)
	if encErr := enc.Encode(res); encErr != nil && err == nil {
		err = encErr
	}
	return err
}

// ensureStream creates the stream, or checks that the existing one carries
// the subject.
func ensureStream(ctx context.Context, js jetstream.JetStream, o publishOptions) error {
	cfg := jetstream.StreamConfig{
		Name:        o.stream,
		Description: "crmauthz replication log: one event per message, the stream sequence is the seq",
		Subjects:    []string{o.subject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Replicas:    o.replicas,
		MaxMsgs:     o.maxMsgs,
		MaxAge:      o.maxAge,
	}
	if cfg.MaxMsgs == 0 {
		cfg.MaxMsgs = -1
	}
	_, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err := js.Stream(ctx, o.stream)
		if err != nil {
			return err
		}
		if subs := s.CachedInfo().Config.Subjects; !slices.Contains(subs, o.subject) {
			return fmt.Errorf("the stream %q exists with the subjects %v, not %q", o.stream, subs, o.subject)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating the stream %q: %w", o.stream, err)
	}
	return nil
}

type snapshotPublishOptions struct {
	natsAuthOptions
	url, bucket, name  string
	create, noValidate bool
	tracing            tracingOptions // --otlp-*, --trace-sampling-ratio (tracingflags.go)
}

func newSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Snapshots of the index for a fleet of sidecars",
	}
	var o snapshotPublishOptions
	pub := &cobra.Command{
		Use:   "publish --nats URL --bucket B [--name N] [--create] FILE.ndjson",
		Short: "Store a snapshot in a JetStream object store bucket, for sidecars that bootstrap from it",
		Long: `Store FILE (the NDJSON of GET /v1/replication/snapshot: {"seq": N}, then users and
records) as the object --name of --bucket, with its seq in the object's metadata
(crmauthz-seq) and headers (Crmauthz-Seq). A sidecar started with
--nats-snapshot-bucket loads the object with the highest seq when the stream no
longer holds the events it needs (or when it stopped at an invalid event the
snapshot is past).

The file is first loaded into a scratch index, exactly as a sidecar would load
it, so a bad snapshot is refused here with its line number (--no-validate skips
that).

With --otlp-endpoint the put is a producer span crmauthz.snapshot.publish whose
trace context the object's headers carry, so each sidecar's span of its load is
its child (docs/operations.md, "Tracing").`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cliflags.Validate(cmd.Flags(), snapshotPublishRules(&o)); err != nil {
				return err
			}
			return runSnapshotPublish(cmd.Context(), cmd.OutOrStdout(), o, args[0])
		},
	}
	f := pub.Flags()
	f.StringVar(&o.url, "nats", "", "NATS server URL: nats://HOST:PORT (or tls://)")
	f.StringVar(&o.bucket, "bucket", "", "JetStream object store bucket")
	f.StringVar(&o.name, "name", natspub.DefaultConfig().SnapshotName, "object name (the same name replaces the object; sidecars take the highest seq of all objects)")
	f.BoolVar(&o.create, "create", false, "create the bucket when it does not exist")
	f.BoolVar(&o.noValidate, "no-validate", false, "do not load the snapshot into a scratch index first")
	addNATSAuthFlags(f, &o.natsAuthOptions)
	addTracingFlags(f, &o.tracing)
	_ = pub.MarkFlagRequired("nats")
	_ = pub.MarkFlagRequired("bucket")
	cmd.AddCommand(pub)
	return cmd
}

func runSnapshotPublish(ctx context.Context, out io.Writer, o snapshotPublishOptions, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	seq, _, err := natspub.SnapshotSeq(bufio.NewReader(f))
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if !o.noValidate {
		if err := validateSnapshot(f); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	nc, js, err := connectJS(o.url, o.natsAuthOptions)
	if err != nil {
		return err
	}
	defer nc.Close()
	obs, err := js.ObjectStore(ctx, o.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && o.create {
		obs, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: o.bucket,
			Description: "crmauthz snapshots", Storage: jetstream.FileStorage})
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("the bucket %q does not exist: create it with --create", o.bucket)
	}
	if err != nil {
		return fmt.Errorf("the bucket %q: %w", o.bucket, err)
	}
	tr, log, err := o.tracing.commandTracer(ctx)
	if err != nil {
		return err
	}
	if tr != nil {
		defer shutdownTracer(tr, log)
	}
	info, err := natspub.PutSnapshot(ctx, obs, o.name, seq, f, tr)
	if err != nil {
		return fmt.Errorf("storing the snapshot: %w", err)
	}
	return json.NewEncoder(out).Encode(map[string]any{
		"bucket": o.bucket, "name": info.Name, "seq": seq, "size": info.Size, "digest": info.Digest,
	})
}

// validateSnapshot loads the snapshot from its start into a scratch index in
// a temporary directory, with the replication package's LoadSnapshot.
func validateSnapshot(f *os.File) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "crmauthz-snapshot-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ix, err := index.Open(index.Config{Dir: dir})
	if err != nil {
		return err
	}
	defer ix.Close()
	repl, err := replication.New(replication.Config{Index: ix})
	if err != nil {
		return err
	}
	_, err = repl.LoadSnapshot(bufio.NewReaderSize(f, 1<<20))
	return err
}
