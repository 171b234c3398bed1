// Package natssource feeds the index from a NATS JetStream stream: the
// replication log of a fleet of sidecars (docs/scaling.md).
//
// Each sidecar reads the stream with its own ordered consumer (ephemeral,
// in-memory on the server, no acks), starting at applied_seq+1. The stream
// sequence of a message IS its replication seq: a message holds one event,
// the JSON of one element of the "events" array, whose own "seq" may be
// left out (the stream sequence is used) and, when present, must equal the
// stream sequence. Events are decoded and applied by internal/replication
// (DecodeEvent, Apply, LoadSnapshot): exactly what the HTTP API accepts, with
// the same atomicity. What is available is applied in batches: up to
// Config.MaxBatch events, collected for at most Config.BatchWait after the
// first, in one bbolt transaction.
//
// The source stops applying, rather than skip anything, when the stream holds
// an invalid event or a gap (a message deleted from the middle of the
// stream). It reports that in Status and NotReady (/health/ready,
// /v1/status) and resumes once the index has applied the bad seq by other
// means: a snapshot whose seq is at least the bad one (PUT
// /v1/replication/snapshot, or an object in Config.SnapshotBucket).
//
// When the stream no longer holds applied_seq+1 (trimmed by its limits or
// purged), the source bootstraps from a snapshot: the newest object of
// Config.SnapshotBucket whose seq is recent enough, or else it waits for a
// PUT /v1/replication/snapshot, not ready, saying so.
package natssource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/natsconn"
	"github.com/crmauthz/crmauthz/internal/natspub"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// Config configures New. URL, Stream, Subject, Index, Replicator and Metrics
// are required.
type Config struct {
	// URL of the NATS servers: nats://host:port or tls://host:port,
	// comma-separated for a cluster.
	URL string
	// Stream is the JetStream stream holding the replication log. It must
	// hold only crmauthz events (see Subject): its sequence numbers are the
	// replication seqs.
	Stream string
	// Subject the events are published to; the consumer's filter. A message
	// of the stream on another subject is a gap (the stream is not dedicated).
	Subject string
	// Auth holds the credentials and TLS files.
	Auth natsconn.Auth
	// SnapshotBucket is a JetStream object store bucket of snapshots
	// (crmauthz snapshot publish); "" for none: a sidecar that needs a
	// snapshot then waits for a PUT /v1/replication/snapshot.
	SnapshotBucket string
	// Name is the NATS connection name.
	Name string

	Index      *index.Index
	Replicator *replication.Replicator
	Metrics    *metrics.Metrics
	Logger     *slog.Logger // default slog.Default()
	// Tracer, if set, exports a span per applied batch and snapshot load
	// (docs/operations.md, "Tracing"); nil: off.
	Tracer *tracing.Tracer

	// MaxBatch is the most events applied in one transaction (at most
	// MaxBatchLimit).
	MaxBatch int
	// BatchWait is how long to wait for more events after the first of a
	// batch.
	BatchWait time.Duration
	// PollInterval is how often the stream's state is read (lag, trimming)
	// and, while waiting for a snapshot, the bucket looked at.
	PollInterval time.Duration
	// MaxBackoff bounds the wait between reconnection attempts (starting at
	// 100ms, doubling, with jitter).
	MaxBackoff time.Duration
}

// MaxBatchLimit is the largest Config.MaxBatch.
const MaxBatchLimit = 10_000

// DefaultConfig returns the defaults, which New fills in for zero fields: the
// stream and subject of natspub.DefaultConfig, no snapshot bucket, batches of
// up to 1000 events gathered for 2ms, the stream's state read every second,
// reconnections at most 10s apart.
func DefaultConfig() Config {
	log := natspub.DefaultConfig()
	return Config{Stream: log.Stream, Subject: log.Subject, Name: "crmauthz",
		MaxBatch: 1000, BatchWait: 2 * time.Millisecond, PollInterval: time.Second, MaxBackoff: 10 * time.Second}
}

// State is what the source is doing.
type State string

// The states of a Source.
const (
	// StateConnecting: connecting to NATS or looking the stream up.
	StateConnecting State = "connecting"
	// StateCatchingUp: reading the stream, not yet level with its head since
	// the start.
	StateCatchingUp State = "catching_up"
	// StateStreaming: reading the stream; it was level with the head at
	// least once since the start (lag_events says how far behind it is now).
	StateStreaming State = "streaming"
	// StateWaitingForSnapshot: the stream no longer holds applied_seq+1.
	StateWaitingForSnapshot State = "waiting_for_snapshot"
	// StateLoadingSnapshot: loading a snapshot object from the bucket.
	StateLoadingSnapshot State = "loading_snapshot"
	// StateStopped: an invalid event or a gap in the stream; nothing more is
	// applied until the index has applied that seq by a snapshot.
	StateStopped State = "stopped"
	// StateAheadOfStream: applied_seq is beyond the stream's last seq (the
	// stream was recreated, or the index comes from another log).
	StateAheadOfStream State = "ahead_of_stream"
	// StateReconnecting: the connection or the stream was lost; retrying.
	StateReconnecting State = "reconnecting"
	// StateNoStream: the server says the stream does not exist (deleted, or
	// never created); retrying. Not ready: the index may miss anything.
	StateNoStream State = "stream_not_found"
)

// Status is the source's state as /v1/status shows it.
type Status struct {
	Source  string `json:"source"` // "nats"
	URL     string `json:"url"`    // without credentials
	Stream  string `json:"stream"`
	Subject string `json:"subject"`
	Bucket  string `json:"snapshot_bucket,omitempty"`
	State   State  `json:"state"`
	// Connected tells whether the NATS connection is up now.
	Connected bool `json:"connected"`
	// Synced: the index was level with the stream's head at least once
	// since the start; until then the sidecar is not ready.
	Synced         bool    `json:"synced"`
	AppliedSeq     uint64  `json:"applied_seq"`
	StreamFirstSeq uint64  `json:"stream_first_seq"`
	StreamLastSeq  uint64  `json:"stream_last_seq"`
	LagEvents      uint64  `json:"lag_events"`
	LagSeconds     float64 `json:"lag_seconds"`
	// StoppedAtSeq is the seq of the invalid event or of the gap (stopped).
	StoppedAtSeq uint64 `json:"stopped_at_seq,omitempty"`
	// Reason says why the source is not streaming, and what fixes it.
	Reason    string `json:"reason,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Batches and EventsApplied count the transactions and events applied
	// from the stream since the start; SnapshotsLoaded the snapshot objects.
	Batches         uint64 `json:"batches"`
	EventsApplied   uint64 `json:"events_applied"`
	SnapshotsLoaded uint64 `json:"snapshots_loaded"`
}

// Source reads the stream into the index. Run it once; Close stops it.
type Source struct {
	cfg  Config
	log  *slog.Logger
	ix   *index.Index
	repl *replication.Replicator
	m    *metrics.Metrics
	opts []nats.Option
	url  string // redacted

	stopCh    chan struct{}
	stopOnce  sync.Once
	done      chan struct{}
	runOnce   sync.Once
	runCalled bool

	mu sync.Mutex
	st Status
	// head is the stream's last seq as last seen (stream info, or a
	// message's sequence plus the consumer's pending count).
	head uint64
	// pending is the publish time of message pendingSeq, the oldest not yet
	// applied when pendingSeq == applied_seq+1; lastTime that of the last
	// applied message.
	pendingSeq  uint64
	pendingTime time.Time
	lastTime    time.Time
	// restart cancels the running consumer, so the session re-reads the
	// stream's state (set while a consumer runs).
	restart context.CancelFunc
	// ahead remembers the applied_seq found beyond the stream's end: the
	// source stays stopped until applied_seq changes.
	ahead uint64
	// readable: the last read of the stream's state succeeded.
	readable bool

	// malformedTrace: messages with a malformed traceparent (trace.go; the
	// consumer's goroutine only, not under mu).
	malformedTrace malformedTraces
}

// New checks cfg and returns a Source. It registers the lag gauges on
// cfg.Metrics.
func New(cfg Config) (*Source, error) {
	switch {
	case cfg.Index == nil || cfg.Replicator == nil || cfg.Metrics == nil:
		return nil, errors.New("natssource: Index, Replicator and Metrics are required")
	case cfg.Stream == "":
		return nil, errors.New("natssource: the stream name is empty")
	case cfg.Subject == "":
		return nil, errors.New("natssource: the subject is empty")
	}
	if err := natsconn.CheckURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("natssource: %w", err)
	}
	opts, err := cfg.Auth.Options()
	if err != nil {
		return nil, fmt.Errorf("natssource: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := DefaultConfig()
	if cfg.Name == "" {
		cfg.Name = d.Name
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = d.MaxBatch
	}
	if cfg.MaxBatch > MaxBatchLimit {
		return nil, fmt.Errorf("natssource: MaxBatch %d is above %d", cfg.MaxBatch, MaxBatchLimit)
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = d.BatchWait
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = d.PollInterval
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = d.MaxBackoff
	}
	s := &Source{
		cfg: cfg, ix: cfg.Index, repl: cfg.Replicator, m: cfg.Metrics,
		url:    natsconn.Redact(cfg.URL),
		stopCh: make(chan struct{}), done: make(chan struct{}),
	}
	s.log = cfg.Logger.With("component", "nats-source", "stream", cfg.Stream)
	s.opts = append(opts, nats.Name(cfg.Name),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("disconnected from NATS", "err", err)
			}
			s.setConnected(false)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			s.setConnected(true)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Warn("NATS error", "err", err)
		}),
	)
	s.st = Status{Source: "nats", URL: s.url, Stream: cfg.Stream, Subject: cfg.Subject,
		Bucket: cfg.SnapshotBucket, State: StateConnecting}
	cfg.Metrics.ReplicationLag(s.lag)
	return s, nil
}

// Close stops Run and waits for it to return. It is idempotent.
func (s *Source) Close() error {
	s.stopOnce.Do(func() { close(s.stopCh) })
	s.mu.Lock()
	running := s.runCalled
	s.mu.Unlock()
	if running {
		<-s.done
	}
	return nil
}

// Status returns the source's state now.
func (s *Source) Status() Status {
	l := s.lag()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.AppliedSeq = s.ix.AppliedSeq()
	st.StreamLastSeq = max(st.StreamLastSeq, s.head)
	st.LagEvents, st.LagSeconds = l.Events, l.Seconds
	return st
}

// Report is Status for /v1/status.
func (s *Source) Report() any { return s.Status() }

// NotReady says why the sidecar must not be ready because of the source, or
// "" when it may be: once the index was level with the stream's head, the
// source keeps it ready while it streams (or reconnects: decisions go on
// from the index as it is, and the lag gauges show how old it is); never
// while it is stopped, waiting for a snapshot, or ahead of the stream.
func (s *Source) NotReady() string {
	st := s.Status()
	switch st.State {
	case StateStopped, StateWaitingForSnapshot, StateAheadOfStream:
		return "replication from NATS: " + st.Reason
	case StateNoStream:
		return "replication from NATS: " + st.LastError
	case StateLoadingSnapshot:
		return "replication from NATS: loading a snapshot from the bucket " + s.cfg.SnapshotBucket
	}
	if st.Synced {
		return ""
	}
	if st.State == StateConnecting || st.State == StateReconnecting {
		msg := "replication from NATS: not connected to " + s.url + " yet"
		if st.LastError != "" {
			msg += " (" + st.LastError + ")"
		}
		return msg
	}
	return fmt.Sprintf("replication from NATS: catching up with the stream %s: applied_seq %d of %d",
		s.cfg.Stream, st.AppliedSeq, st.StreamLastSeq)
}

func (s *Source) setConnected(c bool) {
	s.mu.Lock()
	s.st.Connected = c
	s.mu.Unlock()
}

func (s *Source) setState(st State, reason string) {
	s.mu.Lock()
	s.st.State, s.st.Reason = st, reason
	if st != StateStopped {
		s.st.StoppedAtSeq = 0
	}
	s.mu.Unlock()
}

// noteErr records err for Status, and logs it when it is not the last one
// again (the waits retry every PollInterval).
func (s *Source) noteErr(err error) {
	s.mu.Lock()
	again := s.st.LastError == err.Error()
	s.st.LastError = err.Error()
	s.mu.Unlock()
	if !again {
		s.log.Warn("NATS replication", "err", err)
	}
}
