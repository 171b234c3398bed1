// Package sink is where a connector writes (docs/connectors.md): the replication events of
// docs/reference.md, in order, to either a NATS JetStream stream (the fleet reads it) or one
// crmauthz's replication API. Both connectors (internal/connect/highlevel, internal/connect/postgres)
// write through this one interface; a connector is the only writer of its sink.
package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/crmauthz/crmauthz/internal/natsconn"
	"github.com/crmauthz/crmauthz/internal/natspub"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// Sink is one destination of replication events.
type Sink interface {
	// Head is the seq of the last event durable in the sink: the replica's applied_seq (HTTP), or
	// the stream's last sequence (NATS). 0 for an empty sink.
	Head(ctx context.Context) (uint64, error)
	// Write appends events whose seqs continue Head()+1 consecutively, and returns once they are
	// durable. Events that share a Tx are written so that no reader applies part of them alone.
	// When the sink's head is not where the events continue, the error is a *GapError.
	Write(ctx context.Context, events []replication.Event) error
	// Snapshot replaces the sink's whole state by a snapshot at seq: write produces the NDJSON
	// lines after the header ({"user": …} or {"record": …} per line); it may be called more than
	// once (a retry). Atomic: an interrupted snapshot leaves nothing half-written. seq must be
	// greater than Head(): readers that were at any earlier seq then all load it.
	Snapshot(ctx context.Context, seq uint64, write func(w io.Writer) error) error
	Close() error
}

// GapError says the sink's head is not where the written events continue: another writer, or a
// sink that lost or rewound its state. Head is the sink's head now.
type GapError struct {
	Head uint64
	Msg  string
	Err  error // the replica's answer it was read from, or nil
}

func (e *GapError) Error() string { return e.Msg }
func (e *GapError) Unwrap() error { return e.Err }

// Config configures New. URL picks the sink by its scheme: http:// or https:// (one crmauthz's
// replication API, on its --admin-addr), nats:// or tls:// (a JetStream stream; comma-separated
// URLs for a cluster).
type Config struct {
	URL string
	// TokenFile holds the replication bearer token of the HTTP sink ("" for none: the replica
	// must then be on loopback).
	TokenFile string

	// Stream, Subject, SnapshotBucket, SnapshotName: the NATS sink's stream (created when
	// absent), the subject of its events, and the object store bucket and object name of its
	// snapshots (created when absent).
	Stream, Subject, SnapshotBucket, SnapshotName string
	// Auth: the NATS credentials and TLS files.
	Auth natsconn.Auth
	// Name is the NATS connection name and the HTTP User-Agent; default "crmauthz-connector".
	Name string

	Logger *slog.Logger // default slog.Default()
	// Tracer, if set, makes each batch posted to the HTTP sink, and each Write to the NATS sink,
	// a span whose trace context the request or every message carries (traceparent), so the
	// replica's span of the batch is its child, and each snapshot object the NATS sink stores a
	// span whose trace context the object carries (natspub.PutSnapshot), so a sidecar's load of
	// it is its child (docs/operations.md, "Tracing"); nil: off.
	Tracer *tracing.Tracer
	// HTTPClient for the HTTP sink; default one with timeouts.
	HTTPClient *http.Client
	// MaxBatchEvents and MaxBatchBytes bound one HTTP batch; default 10,000 and 15 MiB (the
	// replica's defaults are 10,000 and 16 MiB).
	MaxBatchEvents, MaxBatchBytes int
	// RetryFor is how long a write is retried (connection errors, 5xx, timeouts) before the
	// error is returned; default 1 minute. MaxBackoff bounds one wait; default 5s.
	RetryFor, MaxBackoff time.Duration
}

// DefaultConfig returns a Config with the defaults filled in, but no URL.
// The names of the log are natspub's (the sidecars' defaults too); a batch holds
// at most the replica's default number of events, and 1 MiB less than its
// default body size (docs/connectors.md).
func DefaultConfig() Config {
	log := natspub.DefaultConfig()
	return Config{
		Stream: log.Stream, Subject: log.Subject, SnapshotBucket: log.SnapshotBucket,
		SnapshotName: log.SnapshotName, Name: "crmauthz-connector",
		MaxBatchEvents: replication.DefaultConfig().MaxEvents, MaxBatchBytes: 15 << 20,
		RetryFor: time.Minute, MaxBackoff: 5 * time.Second,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.Stream == "" {
		c.Stream = d.Stream
	}
	if c.Subject == "" {
		c.Subject = d.Subject
	}
	if c.SnapshotBucket == "" {
		c.SnapshotBucket = d.SnapshotBucket
	}
	if c.SnapshotName == "" {
		c.SnapshotName = d.SnapshotName
	}
	if c.Name == "" {
		c.Name = d.Name
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxBatchEvents <= 0 || c.MaxBatchEvents > d.MaxBatchEvents {
		c.MaxBatchEvents = d.MaxBatchEvents
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = d.MaxBatchBytes
	}
	if c.RetryFor <= 0 {
		c.RetryFor = d.RetryFor
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = d.MaxBackoff
	}
}

// New returns the sink cfg.URL names. It checks the configuration and reads the token file; it
// does not connect yet (the first call does, and every call reconnects when needed).
func New(cfg Config) (Sink, error) {
	cfg.fill()
	u := strings.TrimSpace(cfg.URL)
	switch {
	case u == "":
		return nil, errors.New("sink: no URL (--sink http://HOST:PORT or nats://HOST:PORT)")
	case strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://"):
		return newHTTP(cfg)
	case strings.HasPrefix(u, "nats://") || strings.HasPrefix(u, "tls://"):
		return newNATS(cfg)
	}
	return nil, fmt.Errorf("sink: %q: the scheme must be http://, https://, nats:// or tls://", natsconn.Redact(u))
}

// retry calls f until it succeeds, returns a permanent error, or cfg.RetryFor has passed; it
// waits with exponential backoff and jitter between attempts.
func retry(ctx context.Context, cfg *Config, what string, f func() (permanent bool, err error)) error {
	deadline := time.Now().Add(cfg.RetryFor)
	for attempt := 1; ; attempt++ {
		permanent, err := f()
		if err == nil || permanent || ctx.Err() != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: gave up after %d attempts: %w", what, attempt, err)
		}
		wait := natsconn.Backoff(attempt, 100*time.Millisecond, cfg.MaxBackoff)
		cfg.Logger.Warn("sink: retrying", "what", what, "attempt", attempt, "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// txGroups splits events into runs that share a Tx (an event without one is a run of its own).
func txGroups(events []replication.Event) [][]replication.Event {
	var out [][]replication.Event
	for i := 0; i < len(events); {
		j := i + 1
		if events[i].Tx != "" {
			for j < len(events) && events[j].Tx == events[i].Tx {
				j++
			}
		}
		out = append(out, events[i:j])
		i = j
	}
	return out
}
