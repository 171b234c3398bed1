package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/crmauthz/crmauthz/internal/cliflags"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/natsconn"
	"github.com/crmauthz/crmauthz/internal/natssource"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/server"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// natsAuthOptions are the credentials and TLS flags of every command that
// talks to NATS.
type natsAuthOptions struct {
	creds, user, passwordFile, tokenFile string
	tlsCA, tlsCert, tlsKey               string
}

func addNATSAuthFlags(f *pflag.FlagSet, o *natsAuthOptions) {
	f.StringVar(&o.creds, "nats-creds", "", "NATS credentials file (user JWT and NKey seed)")
	f.StringVar(&o.user, "nats-user", "", "NATS user name (with --nats-password-file)")
	f.StringVar(&o.passwordFile, "nats-password-file", "", "file holding the NATS user's password")
	f.StringVar(&o.tokenFile, "nats-token-file", "", "file holding a NATS authorization token")
	f.StringVar(&o.tlsCA, "nats-tls-ca", "", "PEM file of the CAs that sign the NATS servers' certificates (default: the system's)")
	f.StringVar(&o.tlsCert, "nats-tls-cert", "", "PEM client certificate for NATS servers that verify clients")
	f.StringVar(&o.tlsKey, "nats-tls-key", "", "PEM key of --nats-tls-cert")
}

// rules are the rules of the flags addNATSAuthFlags adds, shared by every
// command that talks to NATS (serve, the connectors' sinks, publish and
// snapshot publish).
func (o *natsAuthOptions) rules() map[string]cliflags.Rule {
	return map[string]cliflags.Rule{
		"nats-creds":         func() string { return cliflags.BlankOrPath(o.creds) },
		"nats-password-file": func() string { return cliflags.PairedPath(o.passwordFile, o.user, "--nats-user") },
		"nats-token-file":    func() string { return cliflags.BlankOrPath(o.tokenFile) },
		"nats-tls-ca":        func() string { return cliflags.BlankOrPath(o.tlsCA) },
		"nats-tls-cert":      func() string { return cliflags.PairedPath(o.tlsCert, o.tlsKey, "--nats-tls-key") },
		"nats-tls-key":       func() string { return cliflags.PairedPath(o.tlsKey, o.tlsCert, "--nats-tls-cert") },
		"nats-user": func() string {
			if o.user != "" && o.passwordFile == "" {
				return "want it with --nats-password-file"
			}
			return cliflags.Trimmed(o.user)
		},
	}
}

func (o natsAuthOptions) auth() natsconn.Auth {
	return natsconn.Auth{
		CredsFile: o.creds, User: o.user, PasswordFile: o.passwordFile, TokenFile: o.tokenFile,
		TLSCA: o.tlsCA, TLSCert: o.tlsCert, TLSKey: o.tlsKey,
	}
}

// natsServeOptions are serve's flags for reading the replication log from
// NATS JetStream.
type natsServeOptions struct {
	natsAuthOptions
	source, stream, subject, bucket string
	batchMax                        int
	batchWait                       time.Duration
}

func addNATSServeFlags(f *pflag.FlagSet, o *natsServeOptions) {
	d := natssource.DefaultConfig()
	f.StringVar(&o.source, "replication-source", d.URL, "read the replication log from NATS JetStream: nats://HOST:PORT (or tls://, comma-separated for a cluster); \"\" to be fed over the replication API only")
	f.StringVar(&o.stream, "nats-stream", d.Stream, "JetStream stream holding the replication log (its sequence numbers are the seqs)")
	f.StringVar(&o.subject, "nats-subject", d.Subject, "subject of the replication events in the stream")
	f.StringVar(&o.bucket, "nats-snapshot-bucket", d.SnapshotBucket, "JetStream object store bucket of snapshots (crmauthz snapshot publish), loaded when the stream no longer holds applied_seq+1; without it such a sidecar waits for a PUT /v1/replication/snapshot")
	f.IntVar(&o.batchMax, "nats-batch-max", d.MaxBatch, "most events from NATS applied in one index transaction")
	f.DurationVar(&o.batchWait, "nats-batch-wait", d.BatchWait, "how long to wait for more events once one has arrived, before applying a batch")
	addNATSAuthFlags(f, &o.natsAuthOptions)
}

// config is the source's configuration from the flags (without its
// collaborators); the fields without a flag keep their defaults.
func (o natsServeOptions) config() natssource.Config {
	cfg := natssource.DefaultConfig()
	cfg.URL, cfg.Stream, cfg.Subject, cfg.SnapshotBucket = o.source, o.stream, o.subject, o.bucket
	cfg.Auth, cfg.MaxBatch, cfg.BatchWait = o.auth(), o.batchMax, o.batchWait
	return cfg
}

// newSource returns the NATS source, or nil when --replication-source is
// not set. The interface is nil then, never a typed nil.
func (o natsServeOptions) newSource(ix *index.Index, repl *replication.Replicator, m *metrics.Metrics, log *slog.Logger, tr *tracing.Tracer) (*natssource.Source, server.Source, error) {
	if o.source == "" {
		return nil, nil, nil
	}
	cfg := o.config()
	cfg.Name, cfg.Index, cfg.Replicator, cfg.Metrics, cfg.Logger, cfg.Tracer = "crmauthz "+version, ix, repl, m, log, tr
	src, err := natssource.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("--replication-source: %w", err)
	}
	return src, src, nil
}

// unusedFlags names the NATS flags of serve given a value while --replication-source is empty:
// serve reads NATS only for the replication log, so they do nothing then, and serve warns of
// them rather than ignore them silently (a --replication-source forgotten beside them).
func (o natsServeOptions) unusedFlags() []string {
	if o.source != "" {
		return nil
	}
	var out []string
	for _, f := range []struct{ name, v string }{
		{"nats-creds", o.creds}, {"nats-user", o.user}, {"nats-password-file", o.passwordFile},
		{"nats-token-file", o.tokenFile}, {"nats-tls-ca", o.tlsCA}, {"nats-tls-cert", o.tlsCert},
		{"nats-tls-key", o.tlsKey}, {"nats-snapshot-bucket", o.bucket},
	} {
		if f.v != "" {
			out = append(out, "--"+f.name)
		}
	}
	return out
}
